"""The dashboard shows store text as text, reads only the store it was started on, and makes a
visitor's browser fetch nothing from outside its own server.

On a store written by an attacker (``hostile_store.py``: run names, tags, hosts, code locations,
kernel names, failure messages, job ids and a run id that carry markdown images and links, raw
``<img>``, bare URLs, LaTeX, ``:emoji:`` and ``:red[...]`` codes, bidi overrides and terminal
escapes):

- through Streamlit's ``AppTest``, every string of every page that Streamlit renders as markdown
  (bodies of markdown, titles, captions and alerts, labels, metric values, tooltips) holds the
  hostile text escaped: no image, link, HTML, code, math, emoji or colour syntax, no control or
  format character;
- in headless Chromium (``tests/browser.py``), a view of each page sends no request to any host but
  the dashboard's own 127.0.0.1 server (each one is recorded and refused), and shows no image or
  link to the attacker's host, while the hostile text reads as written.

The store: fixed to the one the dashboard was started on, shown masked; the sidebar box to type
another exists only with ``--allow-store-picker``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest
from browser import CHROMIUM, LOAD_TIMEOUT_MS, missing, screenshot, serve, unavailable
from hostile_store import (
    EARLIER_JOB,
    JOB,
    KERNEL,
    MARKDOWN,
    MESSAGE,
    NAME,
    OUTSIDE,
    RUN_ID_C,
    HostileStore,
    make_hostile_store,
)
from streamlit.testing.v1 import AppTest
from support import ROOT

from dashboard import ui
from sandbox.store import open_store

APP = ROOT / "dashboard" / "app.py"
TIMEOUT_S = 60

# The hostile markup, as written: none of it may reach a renderer unescaped.
RAW = (
    "![x](",
    "[link](",
    "<img",
    "http://",
    "`code`",
    "$x^2$",
    ":red[",
    ":smile:",
    ":material/home:",
    "**bold**",
    "# heading",
)
# Proto fields that Streamlit renders as markdown (bodies, labels, metric values and deltas, tooltips).
MARKDOWN_FIELDS = {"body", "label", "help", "delta", "tooltip"}
# Elements that show their text as text (code blocks, st.text): store text is allowed there as it is.
AS_TEXT = {"code", "text"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileStore:
    return make_hostile_store(tmp_path_factory.mktemp("hostile") / "runs.db")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_STORE", raising=False)
    monkeypatch.setattr(sys, "argv", ["app.py"])  # the dashboard's script arguments: none


def open_page(store: Path | str, page: str | None = None, **params: str) -> AppTest:
    os.environ["SANDBOX_STORE"] = str(store)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.run()
    if page:
        at.query_params = dict(params)
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_strings(at: AppTest) -> list[tuple[str, str]]:
    """``(element type, string)`` for every string of the page that Streamlit renders as markdown."""
    found: list[tuple[str, str]] = []

    def fields(kind: str, message: Any) -> None:
        for field, value in message.ListFields():
            if isinstance(value, str) and field.name in MARKDOWN_FIELDS:
                found.append((kind, value))
            elif hasattr(value, "ListFields"):
                fields(kind, value)

    def walk(node: Any) -> None:
        kind = getattr(node, "type", "")
        proto = getattr(node, "proto", None)
        if proto is not None and kind not in AS_TEXT:
            fields(kind, proto)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def unescaped(markdown: str) -> str:
    """Markdown as it reads: backslash escapes and the invisible joiners that stop autolinks removed."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def assert_text_only(at: AppTest, *expected: str) -> str:
    """No hostile markup unescaped and no control or format character in any markdown string of the
    page or any picker's option; each of ``expected`` (hostile labels) shown, as it reads. Returns all
    of it, as it reads."""
    strings = markdown_strings(at)
    for kind, s in strings:
        live = re.sub(r"\\.", "", s)  # what is left when every escaped character is taken out
        raw = [r for r in RAW if r in live]
        assert not raw, f"{kind} renders {raw} as markdown: {s[:300]!r}"
        bad = {f"U+{ord(c):04X}" for c in s if not (c.isprintable() or c in "\n\u2060")}
        assert not bad, f"{kind} holds control or format characters {bad}: {s[:300]!r}"
    for box in [*at.selectbox, *at.multiselect]:  # options show as plain text: printable, one line
        bad = [o for o in box.options if not o.isprintable()]
        assert not bad, f"picker {box.label!r} offers control or format characters: {bad[:3]!r}"
    reads = "\n".join(unescaped(s) for _, s in strings)
    for label in expected:
        assert label in reads, f"{label!r} is not shown"
    return reads


# -- every page, through AppTest ---------------------------------------------------------------------


def test_runs_page(hostile: HostileStore) -> None:
    at = open_page(hostile.path)
    assert at.title[0].value == "Runs"
    assert_text_only(at, "5 of 5 runs")
    assert NAME in set(at.dataframe[0].value["name"])  # a dataframe shows store text as text: exact


def test_run_page(hostile: HostileStore) -> None:
    at = open_page(hostile.path, "run", run=hostile.runs["b"])
    reads = assert_text_only(at, "Run run-name", "tag", "device", "failure-message", "graph-break-reason")
    # the markup reads as written, one line, control characters as visible escapes
    assert "![x](http://evil.example/img.png) [link](http://evil.example/l)" in reads
    assert "run-name\\x1b[2J" in reads and "\\u202e" in reads
    assert any(e.label.startswith("Details of ") for e in at.expander)


def test_run_page_of_a_hostile_run_id(hostile: HostileStore) -> None:
    at = open_page(hostile.path, "run", run=RUN_ID_C)
    assert_text_only(at, "Run run-name")
    assert at.query_params["run"] == RUN_ID_C


@pytest.mark.parametrize("graph", ["0", "1", "3"])
def test_graph_page(hostile: HostileStore, graph: str) -> None:
    at = open_page(hostile.path, "graph", run=hostile.runs["b"], graph=graph)
    expected = {"0": "kernel", "1": "failure-message", "3": "in-process-reason"}[graph]
    assert_text_only(at, "fn", expected)
    if graph == "0":
        assert at.selectbox(key="graph:kernel").options[0] == ui.visible(KERNEL)  # plain text, escapes shown


def test_compare_page(hostile: HostileStore) -> None:
    at = open_page(hostile.path, "compare", a=hostile.runs["a"], b=hostile.runs["b"])
    reads = assert_text_only(at, "graph break at ", "config", "What changed, in numbers")
    assert "recompiled fn" in reads


def test_job_and_trends_pages(hostile: HostileStore) -> None:
    at = open_page(hostile.path, "job", job=JOB, against=EARLIER_JOB)
    reads = assert_text_only(at, "Against earlier-job")
    assert "graphs differ across ranks" in reads
    at = open_page(hostile.path, "trends")
    assert_text_only(at, "Trends")


def test_text_reads_as_written() -> None:
    for s in (NAME, MESSAGE, MARKDOWN, "a@b.example www.x.example 1_000 *x* _y_ ~z~ |t| > q", "café 中文 …"):
        escaped = ui.text(s)
        assert not any(r in re.sub(r"\\.", "", escaped) for r in RAW)
        assert unescaped(escaped) == ui.plain(s).replace("\u2060", "")
    assert ui.plain("a\nb\tc\u202ed\x1b") == "a b c\\u202ed\\x1b"
    assert ui.plain("see http://x.example and WWW.y.example or me@z.example") == (
        "see http\u2060://x.example and WWW\u2060.y.example or me@\u2060z.example"
    )
    assert ui.link("Run", run="a&b=c d") == "run?run=a%26b%3Dc+d"


# -- the store: fixed, masked ------------------------------------------------------------------------


def test_the_store_is_fixed_and_shown_masked(hostile: HostileStore, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    open_store(str(other)).close()
    at = open_page(hostile.path)
    assert not at.sidebar.text_input  # no box to point the server elsewhere
    assert [t.value for t in at.sidebar.text] == [str(hostile.path)]
    # the session cannot change it either
    at.session_state[ui.STORE_KEY] = str(other)
    at.run()
    assert len(at.dataframe[0].value) == 5


def test_a_password_in_the_location_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://reader:s3cret-pw@127.0.0.1:1/runs?connect_timeout=2"
    at = open_page(url)
    shown = [t.value for t in at.sidebar.text] + [c.value for c in at.code] + [s for _, s in markdown_strings(at)]
    shown += [e.value for e in at.error]
    assert at.title[0].value == "Cannot read the run store"  # an unreachable server: no first-run advice
    assert not [s for s in shown if "s3cret" in s], shown
    assert "postgresql://reader:***@127.0.0.1:1/runs" in at.sidebar.text[0].value
    assert "reader\\:\\*\\*\\*\\@" in at.error[0].value  # named, masked (and escaped: store text is text)

    monkeypatch.setattr(sys, "argv", ["app.py", ui.PICKER_FLAG])
    at = open_page(url)
    assert at.sidebar.text_input[0].value.startswith("postgresql://reader:***@")
    assert not [s for s in [at.sidebar.text_input[0].value, *(e.value for e in at.error)] if "s3cret" in s]


def test_the_store_picker_needs_the_flag(
    hostile: HostileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.db"
    store = open_store(str(other))
    from sandbox.record.report import Run

    store.put_run(Run(name="elsewhere"))
    store.close()
    monkeypatch.setattr(sys, "argv", ["app.py", ui.PICKER_FLAG])
    at = open_page(hostile.path)
    assert at.sidebar.text_input[0].value == str(hostile.path)
    at.sidebar.text_input[0].input(str(other)).run()
    assert not at.exception
    assert list(at.dataframe[0].value["name"]) == ["elsewhere"]
    assert ui.picker_allowed(["--allow-store-picker"]) and not ui.picker_allowed(["--other"])


# -- a real browser: nothing from outside -----------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if missing():
        unavailable(missing())  # type: ignore[arg-type]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(hostile: HostileStore) -> Iterator[str]:
    if missing():
        unavailable(missing())  # type: ignore[arg-type]
    with serve(hostile.path, "dashboard-hostile-server.log") as url:
        yield url


def page_paths(h: HostileStore) -> list[tuple[str, str]]:
    b = h.runs["b"]
    return [
        ("runs", "/"),
        ("run", f"/run?run={b}"),
        ("run-hostile-id", f"/run?run={quote(RUN_ID_C)}"),
        ("graph-kernels", f"/graph?run={b}&graph=0"),
        ("graph-failure", f"/graph?run={b}&graph=1"),
        ("graph-in-process", f"/graph?run={b}&graph=3"),
        ("compare", f"/compare?a={h.runs['a']}&b={b}"),
        ("trends", "/trends"),
        ("job", f"/job?job={quote(JOB)}&against={quote(EARLIER_JOB)}"),
    ]


def _open_picker(page: Any, box: Any, tries: int = 4) -> None:
    """Open a select box's list. A click that lands while the page re-renders the widget leaves
    it closed: the click is tried again, each try waiting a while for the options."""
    for i in range(tries):
        box.click()
        box.press("ArrowDown")
        try:
            page.wait_for_selector('[role="option"]', timeout=LOAD_TIMEOUT_MS // tries)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again, or fail below
            if i == tries - 1:
                raise
            box.press("Escape")


def test_a_page_view_makes_no_outside_request(chromium: Any, server: str, hostile: HostileStore) -> None:
    own = urlparse(server).netloc
    context = chromium.new_context(viewport={"width": 1500, "height": 1000})
    outside: list[str] = []
    seen: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        seen.append(url)
        if urlparse(url).scheme in ("data", "blob") or urlparse(url).netloc == own:
            r.continue_()
        else:
            outside.append(url)
            r.abort()

    context.route("**/*", route)
    context.on("websocket", lambda ws: None if urlparse(ws.url).netloc == own else outside.append(ws.url))
    try:
        for name, path in page_paths(hostile):
            page = context.new_page()
            page.goto(server + path, wait_until="domcontentloaded", timeout=LOAD_TIMEOUT_MS)
            page.wait_for_selector(
                '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=LOAD_TIMEOUT_MS
            )
            page.wait_for_timeout(1500)  # images, charts and grids load after the script ends
            boxes = page.locator('[data-testid="stSelectbox"] input')
            if boxes.count():  # a picker's options (run names, graphs, jobs) render when it opens
                _open_picker(page, boxes.first)
                options = page.locator('[role="option"]').all_inner_texts()
                assert options and all(o.isprintable() for o in options), f"{name}: {options}"
                page.wait_for_timeout(500)
            screenshot(page, f"hostile-{name}")
            assert page.locator('[data-testid="stException"]').count() == 0, name
            assert not outside, f"{name}: requests to other hosts: {sorted(set(outside))}"
            targets = page.evaluate(
                "() => [...document.querySelectorAll('a[href], img, link[href], script[src], source, iframe')]"
                ".map(e => [e.tagName, e.href || e.currentSrc || e.src || ''])"
            )
            to_outside = [(tag, url) for tag, url in targets if urlparse(url).netloc == OUTSIDE]
            assert not to_outside, f"{name}: links or images to {OUTSIDE}: {to_outside}"
            loads = [url for tag, url in targets if tag != "A" and urlparse(url).scheme not in ("", "data", "blob")]
            assert all(urlparse(url).netloc == own for url in loads), f"{name}: {loads}"
            if name == "run":  # the hostile markup reads as written, as text
                body = page.locator('[data-testid="stMain"]').inner_text().replace("\u2060", "")
                assert "![x](http://evil.example/img.png) [link](http://evil.example/l) <img src=" in body
                assert page.locator("h1").first.inner_text().replace("\u2060", "").startswith("Run run-name\\x1b[2J")
            page.close()
    finally:
        context.close()
    assert any(urlparse(u).netloc == own for u in seen)  # the recorder saw the pages' own requests

"""The dashboard in a real browser: ``streamlit run dashboard/app.py`` (as the README says,
from the repository root, so the shipped ``.streamlit/config.toml`` applies) on a free port,
opened by headless Chromium through Playwright. Each page is loaded by its URL (the links
the pages themselves make), waited for, checked for Streamlit's error element, and saved
as a screenshot under ``test-artifacts/dashboard/``.

Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright`` Python
package (no browser download: Chromium is started from ``/usr/bin/chromium``, or from
``SANDBOX_TEST_CHROMIUM``). Without them the tests skip with that hint, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import (
    CHROMIUM,
    LOAD_TIMEOUT_MS,
    listening_addresses,
    load,
    metric_values,
    missing,
    screenshot,
    serve,
    unavailable,
)
from dashboard_stores import RealStore, make_real_store
from support import IN_CI, ROOT

# Locally, skip before the session's compiles are made for nothing; in CI each test fails instead.
if missing() and not IN_CI:
    pytest.skip(missing(), allow_module_level=True)


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> RealStore:
    return make_real_store(tmp_path_factory, probe_seed)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if missing():
        unavailable(missing())  # type: ignore[arg-type]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(real: RealStore) -> Iterator[str]:
    if missing():
        unavailable(missing())  # type: ignore[arg-type]
    with serve(real.path) as url:
        yield url


def test_server_listens_on_loopback_only(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"127.0.0.1"}


def test_runs_page(chromium: Any, server: str) -> None:
    page = load(chromium, f"{server}/", "runs", '[data-testid="stDataFrame"]')
    assert page.locator("h1").first.inner_text() == "Runs"
    assert "3 of 3 runs" in page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
    assert page.locator('[data-testid="stVegaLiteChart"]').count() == 1
    page.close()


def test_run_page(chromium: Any, server: str, real: RealStore) -> None:
    page = load(chromium, f"{server}/run?run={real.run_ids['rerun']}", "run", '[data-testid="stMetricValue"]')
    assert page.locator("h1").first.inner_text() == "Run rerun"
    m = metric_values(page)
    assert m["Graphs"] == "3" and m["Failures"] == "1" and m["Cache hits"] == "2 (67%)"
    assert "injected compile error" in page.locator('[data-testid="stAlertContentError"]').first.inner_text()
    page.wait_for_selector('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')
    # the page's own link opens the comparison with the previous run
    page.get_by_text("Compare with the previous run").click()
    page.wait_for_selector("text=Why B differs from A", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=LOAD_TIMEOUT_MS)
    assert f"a={real.run_ids['simd']}" in page.url and f"b={real.run_ids['rerun']}" in page.url
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()


def test_graph_page(chromium: Any, server: str, real: RealStore) -> None:
    page = load(chromium, f"{server}/graph?run={real.run_ids['baseline']}&graph=1", "graph", '[data-testid="stCode"]')
    assert page.locator("h1").first.inner_text() == "Backward graph 0/0"
    assert metric_values(page)["Outcome"] == "isolated"
    code = page.locator('[data-testid="stCode"]').first.inner_text()
    assert 'extern "C"' in code and "cpp_prefix.h" in code
    # highlighted: the code block is split into tokens
    assert page.locator('[data-testid="stCode"] code span').count() > 20
    page.close()


def test_compare_page(chromium: Any, server: str, real: RealStore) -> None:
    page = load(
        chromium,
        f"{server}/compare?a={real.run_ids['baseline']}&b={real.run_ids['simd']}",
        "compare",
        '[data-testid="stDataFrame"]',
    )
    # the cause first, as it reads (escaped store text shows no backslash), linked to its setting's row
    causes = page.locator('[data-testid="stMarkdownContainer"] ul').first
    assert causes.inner_text().startswith("B compiled 2 graphs of forward at zoo.py:")
    config = page.locator('[data-testid="stMarkdownContainer"] li').filter(
        has_text="B compiles with another Inductor config, cpp.simdlen=1 (A: default)"
    )
    assert config.get_by_role("link").first.get_attribute("href") == "#differences"
    numbers = page.locator('[data-testid="stExpander"]').filter(has_text="What changed, in numbers").inner_text()
    assert "inductor_config.cpp.simdlen None → 1" in numbers
    m = metric_values(page)
    assert m["Graphs matched"] == "2" and int(m["Kernels changed"]) >= 2
    page.get_by_role("tab", name="Unified diff").click()
    diff = page.locator('[data-testid="stCode"]').filter(has_text="--- A/").first.inner_text()
    assert "Vectorized" in diff
    screenshot(page, "compare-unified-diff")
    page.close()


def test_trends_page(chromium: Any, server: str) -> None:
    page = load(chromium, f"{server}/trends", "trends", '[data-testid="stVegaLiteChart"]')
    assert page.locator("h1").first.inner_text() == "Trends"
    assert metric_values(page)["Runs"] == "3"
    assert page.locator('[data-testid="stVegaLiteChart"]').count() == 2
    page.close()


# -- the real GPU store (tests/data/gpu_store.sqlite: default against max-autotune on an H100) ---------

GPU_STORE = ROOT / "tests" / "data" / "gpu_store.sqlite"


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The dashboard on a copy of the GPU store, and what the store holds (runs by name, the diff)."""
    if missing():
        unavailable(missing())  # type: ignore[arg-type]
    from sandbox.analysis.diff import compare_runs
    from sandbox.store import open_store

    path = tmp_path_factory.mktemp("gpu-store") / GPU_STORE.name
    shutil.copy2(GPU_STORE, path)
    store = open_store(str(path), readonly=True)
    try:
        runs = {r["name"]: r for r in store.runs()}
        a, b = runs["gpu-default"], runs["gpu-max-autotune"]
        d = compare_runs(
            a, store.reports(a["run_id"]), b, store.reports(b["run_id"]), load_sources=store.kernel_sources
        )
    finally:
        store.close()
    with serve(path, "dashboard-gpu-server.log") as url:
        yield url, d


def test_compare_page_gpu_store_kernel_table(chromium: Any, gpu_server: tuple[str, Any]) -> None:
    url, d = gpu_server
    shown = [(gc, kc) for gc in d.graph_changes for kc in gc.kernels if kc.status != "unchanged"]
    templates = {kc.name_b for _, kc in shown if kc.status == "added" and kc.kind == "template"}
    assert templates and all(n.startswith("triton_tem_") for n in templates)
    # The app's front page first: a fresh server opened at a deep link runs the page file alone.
    load(chromium, f"{url}/", "gpu-runs", '[data-testid="stDataFrame"]').close()
    page = load(
        chromium, f"{url}/compare?a={d.a['run_id']}&b={d.b['run_id']}", "compare-gpu", '[data-testid="stDataFrame"]'
    )
    # the cause first (the mode), then the comparison in numbers
    cause = page.locator('[data-testid="stMarkdownContainer"] ul').first.inner_text()
    assert cause.startswith("B compiles with another mode, ") and "max_autotune=True (A: default)" in cause
    numbers = page.locator('[data-testid="stExpander"]').filter(has_text="What changed, in numbers").inner_text()
    assert "inductor_config.max_autotune None → True" in numbers
    assert metric_values(page)["Kernels added"] == str(d.kernels["added"])
    # The kernel difference table: its grid's accessible cells (the visible rows and columns).
    table = (
        page.locator('[data-testid="stDataFrame"]')
        .filter(has=page.locator("th", has_text="kernel B"))
        .filter(has=page.locator("th", has_text="status"))
        .first
    )
    grid = table.locator('table[role="grid"]')
    assert grid.get_attribute("aria-rowcount") == str(len(shown) + 1)  # the header row, then one row per kernel
    headers = [h.strip() for h in grid.locator("thead th").all_text_contents()]
    rows = [[c.strip() for c in tr.locator("td").all_text_contents()] for tr in grid.locator("tbody tr").all()]
    found = [dict(zip(headers, r)) for r in rows]
    added = [r for r in found if r.get("status") == "added" and r.get("kernel B", "").startswith("triton_tem_")]
    assert added, found
    assert {r["kernel B"] for r in added} <= templates and all(r["kind"] == "template" for r in added)
    assert page.get_by_role("heading", name="max-autotune choices").count() == 1
    page.close()


# -- links that miss, empty cells ------------------------------------------------------------------------


def test_a_link_to_no_run_keeps_its_url(chromium: Any, server: str) -> None:
    page = load(chromium, f"{server}/run?run=abc", "run-missed-link", '[data-testid="stAlertContentWarning"]')
    assert "No run “abc” in this store." in page.locator('[data-testid="stAlertContentWarning"]').inner_text()
    assert page.url.endswith("/run?run=abc")  # not rewritten to another run
    assert page.locator('[data-testid="stMetricValue"]').count() == 0  # no run's data
    page.close()


def test_the_side_by_side_diff_shows_no_none(chromium: Any, server: str, real: RealStore) -> None:
    page = load(
        chromium,
        f"{server}/compare?a={real.run_ids['baseline']}&b={real.run_ids['simd']}",
        "compare-side-by-side",
        '[data-testid="stDataFrame"]',
    )
    grid = (
        page.locator('[data-testid="stDataFrame"]')
        .filter(has=page.locator("th", has_text="line A"))
        .first.locator('table[role="grid"]')
    )
    headers = [h.strip() for h in grid.locator("thead th").all_text_contents()]
    rows = [[c.strip() for c in tr.locator("td").all_text_contents()] for tr in grid.locator("tbody tr").all()]
    cells = [dict(zip(headers, r)) for r in rows]
    assert cells and any(c.get("line A") == "" for c in cells), cells  # a missing line number: empty
    assert not [c for c in cells if "None" in (c.get("line A"), c.get("line B"))], cells
    page.close()

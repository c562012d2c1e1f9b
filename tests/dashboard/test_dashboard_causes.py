"""The causes the dashboard names first: on the Compare page, why B compiled differently from A
(before anything else of the comparison), each sentence linked to its evidence; on the Run page,
why the run compiled like this. A synthetic store with planted causes (``cause_stores.py``), through
Streamlit's ``AppTest``, and the queries behind them (``dashboard/queries/causes.py``) without it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from apptest_pages import check, frame, open_page, plain, texts
from cause_stores import ADD, make_cause_store
from streamlit.testing.v1 import AppTest

from dashboard.queries import causes as qc
from dashboard.queries.compare import compare
from dashboard.queries.runs import runs_frame
from dashboard.queries.shared import escape_markdown, open_readonly
from sandbox.analysis.causes import Cause


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("cause-store") / "runs.db"
    return path, make_cause_store(path)


def elements(node: Any) -> list[Any]:
    """The page's elements in the order it shows them (containers opened, depth first)."""
    out = []
    for child in getattr(node, "children", {}).values():
        if getattr(child, "children", None):
            out.extend(elements(child))
        else:
            out.append(child)
    return out


def after(at: AppTest, heading: str) -> list[Any]:
    """The elements after the subheader ``heading``."""
    shown = elements(at.main)
    start = next(i for i, e in enumerate(shown) if e.type == "subheader" and e.value == heading)
    return shown[start + 1 :]


def links(markdown: str) -> dict[str, str]:
    """label -> URL of each markdown link."""
    return {plain(label): url for label, url in re.findall(r"\[((?:\\.|[^\]])*)\]\(([^)]*)\)", markdown)}


# -- the Compare page ---------------------------------------------------------------------------------


def test_compare_page_names_the_new_graph_break_first_with_a_link_to_its_graph(
    planted: tuple[Path, dict[str, str]],
) -> None:
    path, ids = planted
    at = open_page(path, "compare", a=ids["A"], b=ids["B"])
    first = after(at, "Why B differs from A")[0]
    assert first.type == "markdown"
    assert plain(first.value).startswith(
        "- B has a new graph break at model.py:32 (call to torch._dynamo.graph_break): 2 more graphs, +2.0 s"
    )
    assert links(first.value) == {"graph #0 of B": f"graph?run={ids['B']}&graph=0"}
    # the comparison's numbers follow the causes, and nothing of the comparison comes before them
    shown = elements(at.main)
    assert [e.type for e in shown[: shown.index(first)]] == ["title", "selectbox", "selectbox", "subheader"]
    numbers = next(m for m in at.markdown if "In all" in m.value)
    assert shown.index(numbers) > shown.index(first)
    assert "Graphs: 2 matched, 2 only in B, 0 only in A" in plain(numbers.value)


def test_compare_page_links_a_kernel_and_a_setting(planted: tuple[Path, dict[str, str]]) -> None:
    path, ids = planted
    at = open_page(path, "compare", a=ids["A"], b=ids["fused"])
    kernel, mode = after(at, "Why B differs from A")[:2]
    assert plain(kernel.value).startswith("- B's forward graph of forward at model.py:20 changed: its generated code")
    url = links(kernel.value)[f"kernel {ADD} (B)"]
    assert url.startswith("compare?") and url.endswith("#kernels")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {"a": ids["A"], "b": ids["fused"], "kernel": ADD, "side": "B", "kernel_graph": "0"}
    assert links(kernel.value)["graph #0 of B"] == f"graph?run={ids['fused']}&graph=0"
    assert plain(mode.value).startswith("- B compiles with another mode, max_autotune=True (A: default)")
    assert links(mode.value) == {"setting inductor_config.max_autotune": "#differences"}
    settings = frame(at, "setting").set_index("setting")
    assert settings.loc["inductor_config.max_autotune", "cause"] == "2"  # the second cause names it

    # without the link the kernel list starts at its top; the link selects the kernel the cause names
    changes = frame(at, "what changed")
    assert list(changes["kernel B"]) == ["triton_poi_fused_mul_0", ADD]
    assert at.selectbox(key="compare:kernel").value == 0
    at = open_page(path, "compare", **query)
    assert at.selectbox(key="compare:kernel").value == 1
    diff = next(c for c in at.code if c.language == "diff")
    assert f"B/{ADD}" in diff.value and "+    # add, relu" in diff.value
    at.selectbox(key="compare:kernel").select(0).run()  # the link picked it once; the user may pick another
    check(at)
    assert at.selectbox(key="compare:kernel").value == 0


def test_compare_page_of_a_run_with_itself_says_nothing_explains_a_difference(
    planted: tuple[Path, dict[str, str]],
) -> None:
    path, ids = planted
    at = open_page(path, "compare", a=ids["B"], b=ids["B"])
    assert after(at, "Why B differs from A")[0].value == qc.NO_CAUSE


# -- the Run page -------------------------------------------------------------------------------------


def test_run_page_says_why_it_compiled_like_this(planted: tuple[Path, dict[str, str]]) -> None:
    path, ids = planted
    at = open_page(path, "run", run=ids["B"])
    caption, *rest = after(at, "Why it compiled like this")
    assert "judged against the earlier run of the same name" in caption.value and ids["A"][:12] in caption.value
    lines = [e for e in rest[:2] if e.type == "markdown"]
    assert plain(lines[0].value).startswith("- 4 graphs missed the FX graph cache")  # largest first: 4.0 s
    assert plain(lines[1].value).startswith("- graph break at model.py:32 (call to torch._dynamo.graph_break)")
    assert links(lines[1].value) == {"graph #0": f"graph?run={ids['B']}&graph=0"}
    assert set(links(lines[0].value).values()) == {f"graph?run={ids['B']}&graph={g}" for g in (0, 1, 2)}

    at = open_page(path, "run", run=ids["A"])  # the first run of its name
    assert "No earlier run of this name" in texts(at)


# -- the queries -------------------------------------------------------------------------------------


def test_store_text_stays_text() -> None:
    nasty = "# [x](javascript:alert) *b* `c` :smile: :red[d] $e$ <i>f</i>\nline"
    escaped = escape_markdown(nasty)
    assert plain(escaped) == nasty.replace("\n", " ")
    assert not re.search(r"(?<!\\)[\[\]()*`:$<#]", escaped)  # every markdown character is escaped
    line = qc.markdown_line("a_b [c]", [("graph #1", "graph?run=r&graph=1")])
    assert line == "- a\\_b \\[c\\]  \n  [graph \\#1](graph?run=r&graph=1)"


def test_earlier_run_of_the_same_name(planted: tuple[Path, dict[str, str]]) -> None:
    path, ids = planted
    store = open_readonly(str(path))
    try:
        runs = runs_frame(store)
        assert qc.earlier_of(runs, ids["B"]) == ids["A"]
        assert qc.earlier_of(runs, ids["A"]) is None and qc.earlier_of(runs, ids["fused"]) is None
        d = compare(store, ids["A"], ids["fused"])
    finally:
        store.close()
    cause = Cause(
        "config_change",
        "x",
        evidence=[{"config": "max_autotune"}, {"config": "torch"}, {"stage": "wait_for_worker"}, {"kernel": "k"}],
    )
    found = qc.compare_links(cause, "ra", "rb", d.environment)
    assert [(x.label, x.page, x.anchor) for x in found] == [
        ("setting inductor_config.max_autotune", None, qc.DIFFERENCES),  # torch is the same in both runs: no row
        ("stage wait_for_worker", None, qc.STAGES),
        ("kernel k (B)", "Compare", qc.KERNELS),
    ]

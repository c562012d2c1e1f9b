"""Links that say when they miss: a link to a run, a graph, a job or a kernel that this store does not
hold shows a warning naming what it asked for (escaped) and a picker set to nothing, never another
run's data, and leaves the URL as it came until the visitor picks (``dashboard.ui.pick``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from apptest_pages import check, open_page, plain, texts
from dashboard_stores import RealStore, make_real_store
from look_stores import JOB, make_look_store
from streamlit.testing.v1 import AppTest


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> RealStore:
    return make_real_store(tmp_path_factory, probe_seed)


@pytest.fixture(scope="module")
def look(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("look-store") / "runs.db"
    return path, make_look_store(path)


def warnings(at: AppTest) -> str:
    return "\n".join(plain(w.value) for w in at.warning)


def shows_nothing_else(at: AppTest) -> None:
    """No run's data: no title, card, table, chart, code or alert but the warning."""
    assert not at.title and not at.metric and not at.dataframe and not at.code
    assert not at.get("vega_lite_chart") and not at.error and not at.success and not at.info


def test_a_link_to_no_run(real: RealStore) -> None:
    at = open_page(real.path, "run", run="abc")
    assert "No run \u201cabc\u201d in this store. Pick one below." in warnings(at)
    assert at.selectbox(key="pick:run").value is None  # not the latest run
    shows_nothing_else(at)
    assert at.query_params["run"] == "abc"  # the URL says what the link said
    at.selectbox(key="pick:run").select(real.run_ids["simd"]).run()
    check(at)
    assert at.title[0].value == "Run simd" and not at.warning
    assert at.query_params["run"] == real.run_ids["simd"]


def test_the_missed_value_is_shown_as_text(real: RealStore) -> None:
    hostile = "![x](http://evil.example/x.png) `code` :red[y] $x^2$ " + "z" * 200
    at = open_page(real.path, "run", run=hostile)
    [warning] = at.warning
    live = re.sub(r"\\.", "", warning.value)  # what is left when every escaped character is taken out
    assert not [m for m in ("![x](", "http://", "`code`", ":red[", "$x^2$") if m in live], warning.value
    assert plain(warning.value).replace("\u2060", "").startswith("No run \u201c![x](http://evil.example/x.png)")
    assert "zzz\u2026\u201d in this store" in warning.value and "z" * 200 not in warning.value  # cut short
    shows_nothing_else(at)


def test_a_link_to_no_graph_of_a_run(real: RealStore) -> None:
    at = open_page(real.path, "graph", run=real.run_ids["baseline"], graph="99")
    assert "No graph \u201c99\u201d in run baseline" in warnings(at)
    assert at.selectbox(key="pick:run").value == real.run_ids["baseline"]
    assert at.selectbox(key="pick:graph").value is None  # not graph 0
    shows_nothing_else(at)
    assert at.query_params["graph"] == "99"
    at.selectbox(key="pick:graph").select(1).run()
    check(at)
    assert plain(at.title[0].value) == "Backward graph 0/0" and not at.warning
    assert at.query_params["graph"] == "1"


def test_a_link_to_no_run_on_the_graph_page(real: RealStore) -> None:
    at = open_page(real.path, "graph", run="nope", graph="0")
    assert "No run \u201cnope\u201d in this store" in warnings(at)
    assert [s.key for s in at.selectbox] == ["pick:run"]  # no graph picker: no run to pick from
    shows_nothing_else(at)


def test_another_run_picked_on_the_graph_page_falls_back_quietly(real: RealStore) -> None:
    """A graph the page itself wrote into the URL that the next run lacks is no missed link."""
    at = open_page(real.path, "graph", run=real.run_ids["simd"], graph="3")
    at.selectbox(key="pick:run").select(real.run_ids["baseline"]).run()  # two graphs only
    check(at)
    assert not at.warning and at.query_params["graph"] == "0" and at.metric


@pytest.mark.parametrize("side", ["a", "b"])
def test_a_link_to_compare_with_no_run(real: RealStore, side: str) -> None:
    other = "b" if side == "a" else "a"
    at = open_page(real.path, "compare", **{side: "zzz", other: real.run_ids["simd"]})
    assert "No run \u201czzz\u201d in this store" in warnings(at)
    assert at.selectbox(key=f"pick:{side}").value is None
    assert at.selectbox(key=f"pick:{other}").value == real.run_ids["simd"]
    assert [t.value for t in at.title] == ["Compare two runs"]
    assert not at.metric and not at.dataframe and "Why B differs" not in texts(at)
    assert at.query_params[side] == "zzz"


def test_a_link_to_no_changed_kernel(real: RealStore) -> None:
    a, b = real.run_ids["baseline"], real.run_ids["simd"]
    at = open_page(real.path, "compare", a=a, b=b, kernel="no_such_kernel", side="B")
    assert "No changed kernel \u201cno_such_kernel\u201d between these two runs. Pick one below." in warnings(at)
    assert at.selectbox(key="compare:kernel").value is None  # not the first kernel's diff
    assert not [c for c in at.code if c.language == "diff"]
    assert all("line B" not in df.value.columns for df in at.dataframe)
    assert at.query_params["kernel"] == "no_such_kernel"
    at.selectbox(key="compare:kernel").select(0).run()
    check(at)
    assert not at.warning and [c for c in at.code if c.language == "diff"]


def test_a_link_to_no_job(look: tuple[Path, dict[str, str]]) -> None:
    path, _ = look
    at = open_page(path, "job", job="zzz")
    assert "No job \u201czzz\u201d in this store" in warnings(at)
    assert at.selectbox(key="pick:job").value is None
    assert not at.metric and not at.dataframe
    at.selectbox(key="pick:job").select(JOB).run()
    check(at)
    assert not at.warning and at.metric and at.query_params["job"] == JOB

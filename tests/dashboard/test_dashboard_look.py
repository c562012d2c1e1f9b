"""How the dashboard reads to a newcomer: counts as whole numbers, empty cells rather than "None",
"new" rather than a percentage in the thousands, one colour per stage on every run and page,
24-hour times, whole names, no green for a run that failed, and a store that cannot be read named
as such rather than offered a first run."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from apptest_pages import numbers, open_page, plain, texts
from dashboard_stores import ROOT, RealStore, make_real_store
from look_stores import JOB, make_look_store
from streamlit.testing.v1 import AppTest

from dashboard import ui
from dashboard.queries import compare as qcompare
from dashboard.queries import shared
from sandbox.record import stages

EMPTY_WORDS = {"None", "nan", "NaN", "<NA>", "NaT"}


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> RealStore:
    return make_real_store(tmp_path_factory, probe_seed)


@pytest.fixture(scope="module")
def look(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("look-store") / "runs.db"
    return path, make_look_store(path)


def table(at: AppTest, containing: str) -> Any:
    for df in at.dataframe:
        if containing in df.value.columns:
            return df
    raise AssertionError(containing)


def shown(df: Any) -> pd.DataFrame:
    """What a styled table shows in each cell (the Styler's display values), as text."""
    return pa.ipc.open_stream(io.BytesIO(df.proto.arrow_data.styler.display_values)).read_pandas()


def columns(df: Any) -> dict[str, Any]:
    return json.loads(df.proto.columns or "{}")


def charts(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


# -- counts, empty cells ----------------------------------------------------------------------------


def test_kernel_counts_are_whole_numbers_with_empty_gaps(real: RealStore) -> None:
    # simd against rerun: the MLP's graphs were cache hits in rerun (kernels not compared: gaps),
    # simd's inplace graphs are gone (counted)
    at = open_page(real.path, "compare", a=real.run_ids["simd"], b=real.run_ids["rerun"])
    graphs = table(at, "kernels ~")
    counts = ["kernels +", "kernels -", "kernels ~", "kernels ="]
    assert all(str(graphs.value[c].dtype) == "Int64" for c in counts)
    assert graphs.value["kernels -"].notna().any() and graphs.value["kernels -"].isna().any()
    cells = shown(graphs)
    for c in counts:
        for value, cell in zip(graphs.value[c], cells[c]):
            assert cell == ("" if pd.isna(value) else str(int(value))), (c, cell)


def test_no_table_writes_none_in_an_empty_cell(real: RealStore, look: tuple[Path, dict[str, str]]) -> None:
    path, ids = look
    pages = [
        (real.path, None, {}),
        (real.path, "run", {"run": real.run_ids["rerun"]}),
        (real.path, "graph", {"run": real.run_ids["baseline"], "graph": "0"}),
        (real.path, "compare", {"a": real.run_ids["baseline"], "b": real.run_ids["simd"]}),
        (real.path, "compare", {}),
        (real.path, "trends", {}),
        (path, "job", {"job": JOB}),
    ]
    for store, page, params in pages:
        at = open_page(store, page, **params)
        assert at.dataframe, page
        for df in at.dataframe:
            assert df.proto.placeholder == "", (page, list(df.value.columns))  # a missing value: an empty cell
            if df.proto.arrow_data.styler.display_values:
                words = set(shown(df).astype(str).to_numpy().ravel())
                assert not words & EMPTY_WORDS, (page, list(df.value.columns))
            for c in df.value.select_dtypes(["object", "str"]):
                assert not set(df.value[c].dropna().astype(str)) & EMPTY_WORDS, (page, c)


def test_the_side_by_side_diff_leaves_missing_line_numbers_empty(real: RealStore) -> None:
    at = open_page(real.path, "compare", a=real.run_ids["baseline"], b=real.run_ids["simd"])
    side = table(at, "line B")
    assert str(side.value["line A"].dtype) == "Int64" and side.value["line A"].isna().any()
    cells = shown(side)
    assert set(cells["line A"][side.value["line A"].isna()]) == {""}
    assert side.proto.placeholder == ""


def test_pages_make_tables_through_ui_table() -> None:
    """``ui.table`` leaves missing values' cells empty; a page calling ``st.dataframe`` would not."""
    for page in (ROOT / "dashboard" / "pages").glob("*.py"):
        assert "st.dataframe(" not in page.read_text(), page.name


# -- changes from next to nothing ----------------------------------------------------------------------


def test_a_change_from_next_to_nothing_reads_new() -> None:
    assert qcompare._pct(1.0, 1.16) == pytest.approx(0.16)
    assert qcompare._pct(0.0, 0.5) == qcompare.NEW and qcompare._pct(0.0009, 0.5) == qcompare.NEW  # under 1 ms
    assert qcompare._pct(0.004, 0.5) == qcompare.NEW  # under 1% of B
    assert qcompare._pct(0.01, 0.5) == pytest.approx(49.0)  # 2% of B: a percentage
    assert qcompare._pct(0.0002, 0.0004) is None  # both next to nothing: no telling
    assert qcompare._pct(0.5, 0.0) == pytest.approx(-1.0) and qcompare._pct(None, 1.0) is None
    assert qcompare._pct(0, 3, floor=0.0, share=0.0) == qcompare.NEW  # a count from none
    assert qcompare._pct(1, 300, floor=0.0, share=0.0) == pytest.approx(299.0)
    texts = [qcompare.change_text(x) for x in (0.16, -0.5, qcompare.NEW, None, float("nan"))]
    assert texts == ["+16%", "-50%", "new", "", ""]


def test_the_compare_page_says_new_where_a_took_next_to_nothing(look: tuple[Path, dict[str, str]]) -> None:
    path, ids = look
    at = open_page(path, "compare", a=ids["P"], b=ids["Q"])
    assert list(shown(table(at, "kernels ~"))["change"]) == ["new"]  # 0.9 ms -> 0.6 s of work
    stage_changes = shown(table(at, "stage")).set_index("stage")["change"]
    assert stage_changes["wait_for_worker"] == "new" and stage_changes["load"] == "new"
    assert shown(table(at, "metric")).set_index("metric").loc["metrics.generated_kernel_count", "change"] == "new"
    for df in at.dataframe:
        if df.proto.arrow_data.styler.display_values and "change" in df.value.columns:
            assert not [c for c in shown(df)["change"] if re.fullmatch(r"[+-]?\d{4,}%", c)]
    verdict = numbers(at)
    assert "compiled in 0.60 s, where A took next to no time (+0.60 s)" in verdict
    assert "B compiled for 0.60 s, A for next to no time" in verdict and not re.search(r"\d{4,}%", verdict)


# -- one colour per stage -------------------------------------------------------------------------------


def test_each_stage_has_one_colour() -> None:
    fixed = [ui.stage_colour(s) for s in (*stages.OWN, stages.SWITCH)]
    assert len(set(fixed)) == len(fixed)  # the sandbox's own stages: each its own colour
    assert ui.stage_colour("failed (crash)") == ui.stage_colour("failed (oom)") == ui.stage_colour("failed")
    assert ui.stage_colour("some.other_stage") in ui.HASHED_COLOURS
    # the same colour for a name in any order of names, and in another process (no salted hash())
    first, second = ui.stage_scale(["load", "x.y", "wait_for_worker"]), ui.stage_scale(["wait_for_worker", "x.y"])
    assert (
        dict(zip(first.domain, first.range))["wait_for_worker"]
        == dict(zip(second.domain, second.range))["wait_for_worker"]
    )
    assert dict(zip(first.domain, first.range))["x.y"] == dict(zip(second.domain, second.range))["x.y"]
    script = "from dashboard import ui; print(ui.stage_colour('x.y'), ui.stage_colour('pass.post_grad_passes.a'))"
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [ui.stage_colour("x.y"), ui.stage_colour("pass.post_grad_passes.a")]


def test_a_stage_keeps_its_colour_across_runs_and_pages(look: tuple[Path, dict[str, str]]) -> None:
    path, ids = look
    scales = []
    for run in ("P", "Q"):  # other stages, recorded in another order
        [spec] = charts(open_page(path, "run", run=ids[run]))
        scales.append(spec["encoding"]["color"]["scale"])
    [spec] = charts(open_page(path, "graph", run=ids["Q"], graph="0"))
    scales.append(spec["encoding"]["color"]["scale"])
    assert scales[0]["domain"] != scales[1]["domain"]  # a colour by position would move
    for scale in scales:
        mapping = dict(zip(scale["domain"], scale["range"]))
        assert mapping["wait_for_worker"] == ui.stage_colour("wait_for_worker") == "#ff7f0e"
        assert all(colour == ui.stage_colour(name) for name, colour in mapping.items())


# -- 24-hour times, whole names ---------------------------------------------------------------------


def test_times_read_on_a_24_hour_clock(real: RealStore, look: tuple[Path, dict[str, str]]) -> None:
    assert "%H" in ui.TIME_AXIS and "%H" in ui.TIME_TOOLTIP and "HH" in ui.DATETIME_COLUMN
    specs = charts(open_page(real.path)) + charts(open_page(real.path, "trends"))
    assert len(specs) == 3
    for spec in specs:
        layers = spec.get("layer") or [spec]
        for layer in layers:
            enc = layer["encoding"]
            assert enc["x"]["axis"]["format"] == ui.TIME_AXIS
            for tip in enc.get("tooltip", []):
                if tip.get("type") == "temporal":
                    assert tip["format"] == ui.TIME_TOOLTIP
        assert "%I" not in json.dumps(spec) and "%p" not in json.dumps(spec)
    at = open_page(real.path)
    assert columns(table(at, "cache_hit_ratio"))["started"]["type_config"]["format"] == ui.DATETIME_COLUMN
    path, _ = look
    at = open_page(path, "job", job=JOB)
    assert columns(table(at, "restarts"))["started"]["type_config"]["format"] == ui.DATETIME_COLUMN


def test_long_names_read_whole(real: RealStore) -> None:
    at = open_page(real.path, "graph", run=real.run_ids["baseline"], graph="0")
    tree = table(at, "own s")
    longest = max(len(s) for s in tree.value["stage"])
    assert longest > 40  # pass.post_grad_passes.decompose_... with its indent
    assert columns(tree)["stage"]["width"] >= min(640, 8 * longest)
    [spec] = [s for s in charts(at) if s["encoding"]["y"]["field"] == "stage"]
    assert spec["encoding"]["y"]["axis"]["labelLimit"] >= 360
    assert {"field": "name", "title": "stage", "type": "nominal"} in spec["encoding"]["tooltip"]  # the whole name
    at = open_page(real.path, "compare", a=real.run_ids["baseline"], b=real.run_ids["simd"])
    stage_table = next(df for df in at.dataframe if "stage" in df.value.columns)
    assert columns(stage_table)["stage"]["width"] >= min(640, 8 * max(len(s) for s in stage_table.value["stage"]))


# -- failed runs, broken stores -------------------------------------------------------------------------


def test_a_run_that_failed_gets_no_green(real: RealStore, look: tuple[Path, dict[str, str]]) -> None:
    path, ids = look
    at = open_page(path, "run", run=ids["B"])
    assert not at.success and at.error[0].value.startswith("Every graph of this run failed to compile")
    at = open_page(real.path, "run", run=real.run_ids["rerun"])
    assert not at.success and "1 of 3 graphs failed to compile" in at.warning[0].value
    at = open_page(real.path, "run", run=real.run_ids["baseline"])  # nothing failed: green is right
    assert "No graph failed to compile." in [s.value for s in at.success] and not at.warning


def test_two_failed_runs_produced_no_kernels(look: tuple[Path, dict[str, str]]) -> None:
    path, ids = look
    at = open_page(path, "compare", a=ids["A"], b=ids["B"])
    assert not at.success
    said = plain("\n".join(w.value for w in at.warning))
    assert "Neither run produced kernels: every graph failed to compile, in both runs." in said
    assert "No kernel changed" not in plain(texts(at))


def test_a_store_that_cannot_be_read_offers_no_first_run(tmp_path: Path) -> None:
    directory = tmp_path / "a-folder"
    directory.mkdir()
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a database at all" * 100)
    for where, problem in ((directory, "is a directory"), (damaged, str(damaged))):
        at = open_page(where)
        assert at.title[0].value == "Cannot read the run store"
        assert problem in plain(at.error[0].value)
        assert not at.code and "first run" not in texts(at) and "sandbox demo" not in texts(at)
    assert damaged.read_bytes() == b"not a database at all" * 100
    assert shared.first_run_possible(str(tmp_path / "new" / "runs.db"))  # a folder a run would make
    assert not shared.first_run_possible(str(directory)) and not shared.first_run_possible(str(damaged))
    assert not shared.first_run_possible("postgresql://reader@127.0.0.1:1/runs")
    assert not shared.first_run_possible("/proc/runs.db")

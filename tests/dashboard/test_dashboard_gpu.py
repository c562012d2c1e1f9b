"""The dashboard on real GPU data: ``tests/data/gpu_store.sqlite``, made on an NVIDIA H100
(torch 2.11, Triton 3.6) by two runs of one transformer block's training step (a forward and
a backward graph each): ``gpu-default``, then ``gpu-max-autotune``
(``mode="max-autotune-no-cudagraphs"``). Its reports carry what only a GPU compile records: per
Triton kernel its launchers (warps, stages, block sizes, registers, spills, shared memory) and
its autotuner's details (candidate configs, benchmark timings, the chosen config, the autotune
cache state), and per graph max-autotune's tuned ops with their candidates and timings; each
graph's call 3 was profiled (``profile_steps``), so its kernels carry their measured device times.

The compare page, the graph page and the run page through Streamlit's ``AppTest``, and the
queries behind them (``dashboard/queries/compare.py`` and ``graph.py``) without Streamlit. Every expected value is read
from the store (``open_store(..., readonly=True)``) and worked out here from the reports
themselves, not through the dashboard's queries; the store is used from a copy in the test's
temporary directory, and the dashboard never changes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from apptest_pages import check, frame, metrics, numbers, open_page, plain, texts
from dashboard_stores import ROOT, copied_store, store_files

from dashboard.queries import compare, graph, shared
from dashboard.queries import runtime as qr
from sandbox.analysis.diff import compare_runs
from sandbox.cli.main import main as cli
from sandbox.record.report import CompileReport

DATA = ROOT / "tests" / "data" / "gpu_store.sqlite"
A, B = "gpu-default", "gpu-max-autotune"
LAUNCH_KEYS = (
    "num_warps",
    "num_stages",
    "n_regs",
    "n_spills",
    "shared",
)  # what a kernel runs with, besides block sizes


@dataclass
class Gpu:
    path: Path
    runs: dict[str, dict[str, Any]]  # run name -> run
    reports: dict[str, list[CompileReport]]  # run name -> its reports, kernel sources included

    def id(self, name: str) -> str:
        return self.runs[name]["run_id"]

    def graph(self, name: str, kind: str) -> CompileReport:
        [report] = [r for r in self.reports[name] if r.graph_kind == kind]
        return report


@pytest.fixture
def gpu(tmp_path: Path) -> Gpu:
    path = tmp_path / "store" / DATA.name
    runs, reports = copied_store(DATA, path)
    return Gpu(path, runs, reports)


# -- what the data says, worked out from the reports ----------------------------------------------


def stem(name: str) -> str:
    """A kernel's name without Inductor's trailing counter (``..._view_3`` -> ``..._view``)."""
    return re.sub(r"_\d+$", "", name)


def first_launcher(k: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(((k or {}).get("launchers") or [{}])[0])


def blocks(*launchers: Mapping[str, Any]) -> list[str]:
    return sorted({key for x in launchers for key in x if key.endswith("BLOCK")})


def arrow(a: Any, b: Any) -> str:
    return "" if a == b else f"{a} \u2192 {b}"


def label(cfg: Mapping[str, Any]) -> str:
    """A config as the dashboard writes it: block sizes, then warps and stages."""
    keys = blocks(cfg) + [k for k in ("num_warps", "num_stages") if k in cfg]
    return ", ".join(f"{k}={cfg[k]}" for k in keys)


@dataclass
class Expected:
    """The kernel changes of one graph pair: pairs (A, B) of the same kind and name stem, in
    order; what is left over in A was removed, in B added."""

    graph_kind: str
    added: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    changed: list[tuple[dict[str, Any], dict[str, Any]]]
    unchanged: list[tuple[dict[str, Any], dict[str, Any]]]


def expected_changes(gpu: Gpu) -> list[Expected]:
    out = []
    for kind in ("forward", "backward"):
        left: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for k in gpu.graph(A, kind).kernels:
            left.setdefault((k["kind"], stem(k["name"])), []).append(k)
        added, changed, unchanged = [], [], []
        for kb in gpu.graph(B, kind).kernels:
            same = left.get((kb["kind"], stem(kb["name"])))
            if not same:
                added.append(kb)
                continue
            ka = same.pop(0)
            differs = any(ka.get(f) != kb.get(f) for f in ("source_hash", "launchers", "calls"))
            (changed if differs else unchanged).append((ka, kb))
        removed = [k for ks in left.values() for k in ks]
        out.append(Expected(kind, added, removed, changed, unchanged))
    return out


def expected_launch_delta(ka: Mapping[str, Any], kb: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    a, b = first_launcher(ka), first_launcher(kb)
    return {key: (a.get(key), b.get(key)) for key in (*LAUNCH_KEYS, *blocks(a, b)) if a.get(key) != b.get(key)}


def chosen_candidate(entry: Mapping[str, Any]) -> dict[str, Any]:
    [c] = [c for c in entry["candidates"] if c["name"] == entry["chosen"]]
    return c


def test_the_store_holds_two_gpu_runs_of_one_training_step(gpu: Gpu) -> None:
    """What the other tests rely on, checked on the data first."""
    assert set(gpu.runs) == {A, B}
    for name in (A, B):
        assert [r.graph_kind for r in gpu.reports[name]] == ["forward", "backward"]
        assert {r.outcome for r in gpu.reports[name]} == {"isolated"}
        assert "H100" in gpu.runs[name]["device"] and gpu.runs[name]["triton"]
        assert all(r.completed_at for r in gpu.reports[name])  # completed after the graph's first run
    assert gpu.runs[B]["inductor_config"].get("max_autotune") and not gpu.runs[A]["inductor_config"].get("max_autotune")
    assert not any(k["kind"] == "template" for r in gpu.reports[A] for k in r.kernels)
    assert not any(r.autotune for r in gpu.reports[A]) and all(r.autotune for r in gpu.reports[B])
    triton = [k for name in (A, B) for r in gpu.reports[name] for k in r.kernels if k["kind"] in ("triton", "template")]
    assert triton and all(k["launchers"] and k["triton"]["first_run"] for k in triton)
    exp = expected_changes(gpu)
    added = [k for e in exp for k in e.added]
    removed = [k for e in exp for k in e.removed]
    # max-autotune replaced ATen's matmuls by Triton templates, and retuned the other kernels
    assert added and all(k["kind"] == "template" and k["name"].startswith("triton_tem_") for k in added)
    assert removed and {k["name"] for k in removed} <= {"extern_kernels.mm", "extern_kernels.addmm"}
    deltas = [expected_launch_delta(ka, kb) for e in exp for ka, kb in e.changed]
    assert any("n_regs" in x for x in deltas) and any("num_warps" in x for x in deltas)
    assert any(key.endswith("BLOCK") for x in deltas for key in x)


# -- the compare page -------------------------------------------------------------------------------


def test_compare_page_shows_the_kernel_differences(gpu: Gpu) -> None:
    before = store_files(gpu.path)
    exp = expected_changes(gpu)
    at = open_page(gpu.path, "compare", a=gpu.id(A), b=gpu.id(B))
    assert at.query_params["a"] == gpu.id(A) and at.query_params["b"] == gpu.id(B)
    m = metrics(at)
    assert m["Kernels added"] == str(sum(len(e.added) for e in exp))
    assert m["Kernels removed"] == str(sum(len(e.removed) for e in exp))
    assert m["Kernels changed"] == str(sum(len(e.changed) for e in exp))
    assert m["Kernels unchanged"] == str(sum(len(e.unchanged) for e in exp))
    assert m["Graphs matched"] == "2" and m["Graphs only in B / A"] == "0 / 0"
    verdict = numbers(at)
    assert "inductor_config.max_autotune None \u2192 True" in verdict
    assert (
        f"Kernels: {m['Kernels added']} added, {m['Kernels removed']} removed, {m['Kernels changed']} changed"
        in verdict
    )
    graphs = frame(at, "kernels ~")
    assert list(graphs["kernels +"]) == [len(e.added) for e in exp]
    assert list(graphs["kernels -"]) == [len(e.removed) for e in exp]

    changes = frame(at, "what changed")
    assert len(changes) == sum(len(e.added) + len(e.removed) + len(e.changed) for e in exp)
    added = changes[changes["status"] == "added"]
    assert sorted(added["kernel B"]) == sorted(k["name"] for e in exp for k in e.added)
    assert set(added["kind"]) == {"template"} and added["kernel B"].str.startswith("triton_tem_").all()
    removed = changes[changes["status"] == "removed"]
    assert sorted(removed["kernel A"]) == sorted(k["name"] for e in exp for k in e.removed)
    assert set(removed["kind"]) == {"extern"}
    changed = changes[changes["status"] == "changed"].set_index(["kernel A", "kernel B"])
    pairs = [(ka, kb) for e in exp for ka, kb in e.changed]
    assert sorted(changed.index) == sorted((ka["name"], kb["name"]) for ka, kb in pairs)
    for ka, kb in pairs:
        row = changed.loc[(ka["name"], kb["name"])]
        a, b = first_launcher(ka), first_launcher(kb)
        assert row["registers"] == arrow(a["n_regs"], b["n_regs"])
        assert row["warps"] == arrow(a["num_warps"], b["num_warps"])
        assert row["shared"] == arrow(a["shared"], b["shared"])
        assert row["block sizes"] == ", ".join(
            f"{k} {arrow(a.get(k), b.get(k))}" for k in blocks(a, b) if a.get(k) != b.get(k)
        )
        what = row["what changed"].split(", ")
        assert ("source" in what) == (ka["source_hash"] != kb["source_hash"])
        assert ("registers" in what) == (a["n_regs"] != b["n_regs"])
        assert ("warps" in what) == (a["num_warps"] != b["num_warps"])
        assert all((k in what) == (a.get(k) != b.get(k)) for k in blocks(a, b))

    # max-autotune's choices: every op B tuned, none in A
    tuned = frame(at, "B chosen")
    entries = [(r, e) for r in gpu.reports[B] for e in r.autotune]
    assert len(tuned) == len(entries) and set(tuned["status"]) == {"only in B"}
    assert list(tuned["op"]) == [e["op"] for _, e in entries]
    assert list(tuned["B chosen"]) == [e["chosen"] for _, e in entries]
    assert list(tuned["B ms"]) == pytest.approx([chosen_candidate(e)["ms"] for _, e in entries])
    assert list(tuned["B kind"]) == [chosen_candidate(e)["kind"] for _, e in entries]
    assert list(tuned["input shapes"]) == [
        ", ".join("x".join(map(str, s)) for s in e["input_shapes"]) for _, e in entries
    ]
    assert store_files(gpu.path) == before


def test_compare_page_kernel_detail_launches_and_autotuning(gpu: Gpu) -> None:
    exp = expected_changes(gpu)
    at = open_page(gpu.path, "compare", a=gpu.id(A), b=gpu.id(B))
    changes = frame(at, "what changed")
    # a changed kernel whose block size changed: its launch config and its autotuning, A and B
    ka, kb = next(
        (ka, kb)
        for e in exp
        for ka, kb in e.changed
        if any(k in expected_launch_delta(ka, kb) for k in blocks(first_launcher(ka), first_launcher(kb)))
    )
    i = next(
        i for i in range(len(changes)) if (changes["kernel A"][i], changes["kernel B"][i]) == (ka["name"], kb["name"])
    )
    at.selectbox(key="compare:kernel").select(i).run()
    check(at)
    a, b = first_launcher(ka), first_launcher(kb)
    launch = frame(at, "launcher").set_index("field")
    for key in blocks(a, b):
        assert launch.loc[key, "A"] == str(a[key]) and launch.loc[key, "B"] == str(b[key])
        assert launch.loc[key, "delta"] == b[key] - a[key]
    assert launch.loc["registers", "delta"] == b["n_regs"] - a["n_regs"]
    assert launch.loc["warps", "A"] == str(a["num_warps"]) and launch.loc["warps", "B"] == str(b["num_warps"])
    tuning = triton_table(at)
    ta, tb = ka["triton"], kb["triton"]
    assert tuning.loc["chosen config", "A"] == label(ta["chosen"]) and tuning.loc["chosen config", "B"] == label(
        tb["chosen"]
    )
    assert (
        tuning.loc["autotune cache", "A"] == ta["autotune_cache"]
        and tuning.loc["autotune cache", "B"] == tb["autotune_cache"]
    )
    assert tuning.loc["benchmarked configs", "A"] == str(len(ta["autotune_timings"]))
    assert tuning.loc["benchmarked configs", "B"] == str(len(tb["autotune_timings"]))
    assert tuning.loc["candidate configs", "B"] == str(len(tb["configs"]))
    assert float(tuning.loc["best ms", "B"]) == pytest.approx(min(t["ms"] for t in tb["autotune_timings"]), rel=1e-5)
    assert float(tuning.loc["compile s", "B"]) == pytest.approx(tb["compile_time_s"], rel=1e-5)
    assert tuning.loc["coordinate descent", "B"] == str(bool(tb.get("coordinate_descent")))

    # an added template: its source alone, its launch config and its autotuning in B only
    template = next(k for e in exp for k in e.added)
    i = next(i for i in range(len(changes)) if changes["kernel B"][i] == template["name"])
    at.selectbox(key="compare:kernel").select(i).run()
    check(at)
    assert "Only in B:" in texts(at)
    assert at.code[0].language == "python" and at.code[0].value == template["source"].strip()
    launch = frame(at, "launcher").set_index("field")
    assert (
        launch.loc["registers", "B"] == str(first_launcher(template)["n_regs"]) and launch.loc["registers", "A"] == ""
    )
    tuning = triton_table(at)
    assert tuning.loc["autotune cache", "B"] == template["triton"]["autotune_cache"]
    assert tuning.loc["autotune cache", "A"] == "" and tuning.loc["chosen config", "B"] == label(
        template["triton"]["chosen"]
    )


def triton_table(at: Any) -> pd.DataFrame:
    """The compare page's Triton autotuning table of the chosen kernel, by field."""
    [df] = [d.value for d in at.dataframe if list(d.value.columns) == ["field", "A", "B", "changed"]]
    return df.set_index("field")


# -- the graph and run pages --------------------------------------------------------------------------


def test_graph_page_shows_triton_autotuning_and_max_autotune_choices(gpu: Gpu) -> None:
    report = gpu.graph(B, "backward")
    at = open_page(gpu.path, "graph", run=gpu.id(B), graph=str(report.graph_index))
    assert plain(at.title[0].value) == f"Backward graph {report.compile_id}"
    assert metrics(at)["Kernels"] == str(len(report.kernels))
    kernels = frame(at, "launch").set_index("kernel")
    for k in report.kernels:
        first = first_launcher(k)
        if first:
            assert kernels.loc[k["name"], "launch"].startswith(
                f"{first['num_warps']} warps, {first['num_stages']} stages, "
                f"{first['n_regs']} regs, {first['n_spills']} spills"
            )
        else:
            assert kernels.loc[k["name"], "launch"] == ""

    tuning = frame(at, "autotune cache").set_index("kernel")
    triton = [k for k in report.kernels if k.get("triton")]
    assert list(tuning.index) == [k["name"] for k in triton]
    for k in triton:
        t, row = k["triton"], tuning.loc[k["name"]]
        assert row["autotune cache"] == t["autotune_cache"] and row["chosen"] == label(t["chosen"])
        assert row["configs"] == len(t["configs"]) and row["benchmarked"] == len(t["autotune_timings"])
        assert row["registers"] == t["chosen"]["n_regs"] and row["spills"] == t["chosen"]["n_spills"]
        assert row["compile s"] == pytest.approx(t["compile_time_s"])
        assert bool(row["coordinate descent"]) == bool(t.get("coordinate_descent")) and bool(row["after first run"])
        if t["autotune_timings"]:
            assert row["best ms"] == pytest.approx(min(x["ms"] for x in t["autotune_timings"]))

    # max-autotune: every tuned op, its choice and the fastest extern candidate
    choices = frame(at, "chosen kind")
    assert list(choices["op"]) == [e["op"] for e in report.autotune]
    assert list(choices["chosen"]) == [e["chosen"] for e in report.autotune]
    assert list(choices["candidates"]) == [len(e["candidates"]) for e in report.autotune]
    for e, (_, row) in zip(report.autotune, choices.iterrows()):
        chosen = chosen_candidate(e)
        extern = min((c for c in e["candidates"] if c["kind"] == "extern"), key=lambda c: c["ms"])
        assert row["chosen kind"] == chosen["kind"] and row["chosen ms"] == pytest.approx(chosen["ms"])
        assert row["fastest extern"] == extern["name"] and row["extern ms"] == pytest.approx(extern["ms"])
        assert row["speed-up"] == pytest.approx(extern["ms"] / chosen["ms"])
    candidates = frame(at, "candidate")
    first = report.autotune[0]
    assert sorted(candidates["candidate"]) == sorted(c["name"] for c in first["candidates"])
    assert list(candidates[candidates["chosen"]]["candidate"]) == [first["chosen"]]
    assert list(candidates["ms"]) == sorted(c["ms"] for c in first["candidates"])
    last = len(report.autotune) - 1
    at.selectbox(key="graph:autotune").select(last).run()
    check(at)
    assert list(frame(at, "candidate")[lambda df: df["chosen"]]["candidate"]) == [report.autotune[last]["chosen"]]

    # the code viewer: a kernel autotuned over several configs, with its benchmark timings
    kernel = max(triton, key=lambda k: len(k["triton"]["autotune_timings"]))
    at.selectbox(key="graph:kernel").select(kernel["name"]).run()
    check(at)
    assert at.code[0].value == kernel["source"].strip()
    timings = frame(at, "x best")
    t = kernel["triton"]
    assert len(timings) == len(t["autotune_timings"])
    assert sorted(timings["config"]) == sorted(label(x["config"]) for x in t["autotune_timings"])
    assert list(timings["ms"]) == pytest.approx(sorted(x["ms"] for x in t["autotune_timings"]))
    assert set(timings[timings["chosen"]]["config"]) == {label(t["chosen"])}
    assert timings["x best"].min() == pytest.approx(1.0)
    compiled = {label(c): c for c in t["configs"]}
    for _, row in timings.iterrows():
        if row["config"] in compiled:
            assert row["registers"] == compiled[row["config"]]["n_regs"]
    assert f"autotune cache: {t['autotune_cache']}" in texts(at)


def test_graph_page_of_the_default_run_has_no_max_autotune_choices(gpu: Gpu) -> None:
    report = gpu.graph(A, "forward")
    at = open_page(gpu.path, "graph", run=gpu.id(A), graph=str(report.graph_index))
    assert not any(s.value.startswith("max-autotune") for s in at.subheader)
    tuning = frame(at, "autotune cache").set_index("kernel")
    assert list(tuning.index) == [k["name"] for k in report.kernels if k.get("triton")]
    assert not tuning["coordinate descent"].any()  # only the max-autotune run tuned by coordinate descent
    assert set(tuning["kind"]) == {"triton"}


def test_run_page_on_the_gpu_store(gpu: Gpu) -> None:
    reports = gpu.reports[B]
    at = open_page(gpu.path, "run", run=gpu.id(B))
    assert plain(at.title[0].value) == f"Run {B}"
    m = metrics(at)
    assert m["Graphs"] == str(len(reports)) and m["Kernels"] == str(sum(len(r.kernels) for r in reports))
    graphs = frame(at, "isolation")
    assert list(graphs["kind"]) == [r.graph_kind for r in reports]
    assert list(graphs["kernels"]) == [len(r.kernels) for r in reports]


# -- the queries, without Streamlit ------------------------------------------------------------------


def test_queries_on_the_gpu_store(gpu: Gpu) -> None:
    exp = expected_changes(gpu)
    store = shared.open_readonly(str(gpu.path))
    try:
        d = compare.compare(store, gpu.id(A), gpu.id(B))
        plain = compare_runs(gpu.runs[A], gpu.reports[A], gpu.runs[B], gpu.reports[B])
        assert (
            d.kernels
            == plain.kernels
            == {
                "added": sum(len(e.added) for e in exp),
                "removed": sum(len(e.removed) for e in exp),
                "changed": sum(len(e.changed) for e in exp),
                "unchanged": sum(len(e.unchanged) for e in exp),
            }
        )
        assert d.environment["inductor_config.max_autotune"] == (None, True)
        for gc, e in zip(d.graph_changes, exp):
            assert gc.status == "matched" and gc.graph_kind == e.graph_kind
            expected = {(ka["name"], kb["name"]): (ka, kb) for ka, kb in e.changed}
            found = [kc for kc in gc.kernels if kc.status == "changed"]
            assert sorted((kc.name_a, kc.name_b) for kc in found) == sorted(expected)
            for kc in found:
                assert compare.launch_delta_summary(kc) == expected_launch_delta(*expected[(kc.name_a, kc.name_b)])
            assert sorted(kc.name_b for kc in gc.kernels if kc.status == "added") == sorted(k["name"] for k in e.added)
            assert sorted(kc.name_a for kc in gc.kernels if kc.status == "removed") == sorted(
                k["name"] for k in e.removed
            )
            assert all(compare.launch_delta_summary(kc) == {} for kc in gc.kernels if kc.status in ("added", "removed"))

        rows = compare.kernel_change_rows(d)
        assert set(rows[rows["status"] == "added"]["kind"]) == {"template"}
        assert (rows[rows["status"] == "removed"]["kernel A"].str.startswith("extern_kernels.")).all()
        assert len(compare.kernel_change_rows(d, include_unchanged=True)) == sum(d.kernels.values())
        grown = [
            kc
            for gc in d.graph_changes
            for kc in gc.kernels
            if (compare.launch_delta_summary(kc).get("n_spills") or (0, 0))[1]
            > (compare.launch_delta_summary(kc).get("n_spills") or (0, 0))[0]
        ]
        assert ("Register spills grew" in " ".join(compare.verdict(d))) == bool(grown)

        # one changed pair: both sides' entries, with launchers and autotuning
        row = rows[rows["status"] == "changed"].iloc[0]
        ka, kb = compare.kernel_pair(store, d, int(row["g"]), int(row["k"]))
        raw_a, raw_b = next(
            (a, b) for e in exp for a, b in e.changed if (a["name"], b["name"]) == (ka["name"], kb["name"])
        )
        assert ka["triton"] == raw_a["triton"] and kb["launchers"] == raw_b["launchers"]
        assert ka["source"] == raw_a["source"] and kb["source"] == raw_b["source"]
        detail = compare.triton_detail_rows(ka, kb).set_index("field")
        assert detail.loc["chosen config", "B"] == label(raw_b["triton"]["chosen"])
        assert bool(detail.loc["chosen config", "changed"]) == (
            label(raw_a["triton"]["chosen"]) != label(raw_b["triton"]["chosen"])
        )
        assert compare.triton_detail_rows(None, None).empty
        assert compare.triton_detail_rows(
            {"name": "cpp_fused_0", "kind": "cpp"}, {"name": "cpp_fused_0", "kind": "cpp"}
        ).empty

        tuned = compare.autotune_change_rows(d, gpu.reports[A], gpu.reports[B])
        assert len(tuned) == sum(len(r.autotune) for r in gpu.reports[B])
        assert set(tuned["status"]) == {"only in B"} and set(tuned["A chosen"]) == {""}
        same = compare.autotune_change_rows(
            compare.compare(store, gpu.id(B), gpu.id(B)), gpu.reports[B], gpu.reports[B]
        )
        assert set(same["status"]) == {"same choice"} and list(same["A chosen"]) == list(same["B chosen"])
        assert len(same) == len(tuned)
    finally:
        store.close()


def test_autotune_queries_on_the_gpu_reports(gpu: Gpu) -> None:
    for name in (A, B):
        for report in gpu.reports[name]:
            triton = [k for k in report.kernels if k.get("triton")]
            rows = graph.triton_kernel_rows(report.kernels)
            assert list(rows["kernel"]) == [k["name"] for k in triton]
            assert list(rows["autotune cache"]) == [k["triton"]["autotune_cache"] for k in triton]
            assert list(rows["chosen"]) == [label(k["triton"]["chosen"]) for k in triton]
            assert list(rows["shared"]) == [k["triton"]["chosen"]["shared"] for k in triton]
            for k in triton:
                t = k["triton"]
                timings = graph.autotune_timing_rows(k)
                n = len(t["autotune_timings"]) or len(t["configs"])
                assert len(timings) == n and timings["chosen"].any()
                if not t["autotune_timings"]:  # one config, nothing benchmarked: the compiled config
                    assert list(timings["config"]) == [label(c) for c in t["configs"]]
                    assert list(timings["registers"]) == [c["n_regs"] for c in t["configs"]]
            choices = graph.autotune_choice_rows(report.autotune)
            assert list(choices["chosen"]) == [e["chosen"] for e in report.autotune]
            for e in report.autotune:
                cands = graph.autotune_candidate_rows(e)
                assert len(cands) == len(e["candidates"]) and cands["chosen"].sum() == 1
                assert cands["ms"].is_monotonic_increasing
    assert graph.triton_kernel_rows([{"name": "cpp_fused_0", "kind": "cpp"}]).empty
    assert graph.autotune_choice_rows([]).empty


def test_the_gpu_store_holds_measured_kernel_runtimes(gpu: Gpu, capsys: pytest.CaptureFixture[str]) -> None:
    """Both runs profiled their graphs' call 3 on the GPU (``profile_steps``): every kernel of every
    graph has a runtime, launched at least once and never more often than the generated code's
    call sites, their sum is the profiled call's device time to within 10% (what is left: memsets
    and copies no kernel accounts for), and the Graph page's table and ``sandbox show`` give those
    measured figures, largest first."""
    for name in (A, B):
        for r in gpu.reports[name]:
            rt = r.runtime or {}
            assert rt.get("device") == "cuda" and rt.get("profiled_calls") == [3], (name, r.graph_kind, rt)
            for k in r.kernels:
                measured = k.get("runtime") or {}
                assert measured.get("per_call_us", 0) > 0, (name, k["name"], measured)
                # Launched at least once, never more often than the wrapper's call sites (this store's
                # static counts predate the fix that stopped counting a Triton source's own ``def``).
                assert 1 <= measured["calls"] <= k["calls"], (name, k["name"], measured, k["calls"])
            total = sum(k["runtime"]["total_us"] for k in r.kernels)
            assert 0.9 * rt["graph_us"] <= total <= rt["graph_us"] * 1.001, (name, r.graph_kind, total, rt)
            rows = qr.kernel_runtime_rows(r)
            kernels = rows[~rows["kernel"].str.startswith("(other")]
            top = max(r.kernels, key=lambda k: k["runtime"]["total_us"])
            assert kernels.iloc[0]["kernel"] == top["name"], (kernels.head(3), top["name"])
    assert cli(["--store", str(gpu.path), "show", gpu.id(B)]) == 0
    shown = capsys.readouterr().out
    forward = gpu.graph(B, "forward")
    top = max(forward.kernels, key=lambda k: k["runtime"]["total_us"])
    assert "kernel runtime (profiled calls" in shown and top["name"][:40] in shown, shown[-3000:]

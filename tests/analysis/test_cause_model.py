"""The cause model (``sandbox/analysis/causes.py``) on reports built by hand: each kind of cause
is named first when it is the one difference, and the ranking keeps the environment last.

Real runs with planted causes are in ``test_planted_causes.py``; these pin the rules down."""

from __future__ import annotations

from typing import Any

from sandbox.analysis.causes import explain, wait_s, work_s
from sandbox.analysis.run_causes import explain_run
from sandbox.record.report import CompileReport, Failure, Run, Stage

T0 = 1_700_000_000.0


def _run(**fields: Any) -> dict[str, Any]:
    return Run(**fields).to_dict()


def _report(
    run: dict[str, Any],
    index: int,
    *,
    kind: str = "forward",
    co_name: str = "forward",
    line: int = 10,
    duration: float = 1.0,
    wait: float = 0.0,
    graph_hash: str = "g1",
    fx: str = "miss",
    components: dict[str, str] | None = None,
    kernels: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> CompileReport:
    stages = [Stage("wait_for_worker", T0, T0 + wait, "parent", "fx_codegen_and_compile")] if wait else []
    return CompileReport(
        run_id=run["run_id"],
        compile_id=f"{index}/0",
        graph_kind=kind,
        outcome=fields.pop("outcome", "isolated"),
        graph_index=index,
        co_name=co_name,
        filename="/src/model.py",
        line=line,
        started_at=T0 + index,
        duration_s=duration + wait,
        stages=stages,
        graph={"hash": graph_hash},
        caches={"fx_graph": {"state": fx}},
        cache_keys={"fx_graph": {"key": "k", "state": fx, "components": components or {"gm": "h1"}}},
        kernels=kernels
        if kernels is not None
        else [{"name": "cpp_fused_add_relu_0", "kind": "cpp", "ops": ["add", "relu"]}],
        **fields,
    )


BREAK = {
    "graph_break": True,
    "reason": "Call to `torch._dynamo.graph_break()` Explanation: User-inserted graph break.",
    "frames": [{"file": "/src/model.py", "line": 32, "function": "forward"}],
}


def test_wait_is_kept_apart_from_work() -> None:
    r = _report(_run(), 0, duration=2.0, wait=5.0)
    assert wait_s(r) == 5.0 and work_s(r) == 2.0


def test_a_new_graph_break_is_named_first_with_its_line_even_behind_a_long_wait() -> None:
    a, b = _run(), _run()
    ra = [_report(a, 0), _report(a, 1, kind="backward")]
    rb = [
        _report(b, 0, compile_reason=BREAK, wait=30.0),  # B also waited long for its worker
        _report(b, 1, kind="backward", compile_reason=BREAK),
        _report(b, 2, co_name="torch_dynamo_resume_in_forward_at_32", line=32, graph_hash="g2", duration=0.7),
        _report(b, 3, kind="backward", co_name="torch_dynamo_resume_in_forward_at_32", line=32, graph_hash="g2"),
    ]
    causes = explain(a, ra, b, rb)
    first = causes[0]
    assert first.cause == "graph_break_added"
    assert first.text.startswith(
        "B has a new graph break at model.py:32 (call to torch._dynamo.graph_break): 2 more graphs"
    )
    assert abs(first.seconds - 1.7) < 1e-6  # the two resume graphs' work; the wait is not in it
    assert [c.cause for c in causes][-1] == "environment"  # the 30 s wait, named, but last


def test_a_removed_graph_break() -> None:
    a, b = _run(), _run()
    ra = [_report(a, 0, compile_reason=BREAK), _report(a, 1, co_name="torch_dynamo_resume_in_forward_at_32", line=32)]
    rb = [_report(b, 0)]
    assert explain(a, ra, b, rb)[0].text.startswith("B no longer breaks the graph at model.py:32")


def test_a_recompile_names_the_failed_guard() -> None:
    a, b = _run(), _run()
    ra = [_report(a, 0)]
    reason = "0/0: tensor 'x' size mismatch at index 0. expected 8, actual 16"
    rb = [_report(b, 0), _report(b, 1, recompile={"frame": 0, "count": 1, "reason": reason})]
    first = explain(a, ra, b, rb)[0]
    assert first.cause == "recompile"
    assert first.text.startswith("B recompiled forward at model.py:10 (1 more compile): tensor 'x' size mismatch")


def test_a_shape_change() -> None:
    a, b = _run(), _run()
    x8 = {"kind": "tensor", "shape": [8, 64], "stride": [64, 1], "dtype": "float32", "device": "cpu", "dynamic": []}
    x16 = dict(x8, shape=[16, 64])
    ra = [_report(a, 0, inputs=[x8])]
    rb = [_report(b, 0, inputs=[x16], graph_hash="g2")]
    first = explain(a, ra, b, rb)[0]
    assert first.cause == "shape_change" and "input 0 [8, 64] float32 \u2192 [16, 64] float32" in first.text


def test_a_kernel_change_names_the_ops_even_when_another_graph_got_faster_from_a_cache() -> None:
    a, b = _run(), _run()
    gelu = [{"name": "cpp_fused_add_gelu_0", "kind": "cpp", "ops": ["add", "gelu"]}]
    ra = [_report(a, 0, duration=1.0), _report(a, 1, kind="backward", graph_hash="b1", duration=5.0)]
    rb = [
        _report(b, 0, graph_hash="g2", kernels=gelu, duration=1.1),
        _report(b, 1, kind="backward", graph_hash="b1", duration=0.05, fx="hit", outcome="cache_hit"),
    ]
    causes = explain(a, ra, b, rb)
    assert causes[0].cause == "kernel_change"
    assert "fuses gelu where A fused relu (cpp_fused_add_gelu_0 replaces cpp_fused_add_relu_0)" in causes[0].text
    assert causes[1].cause == "cache_miss" and "B found in the compile caches" in causes[1].text


def test_a_config_change_explains_the_cache_misses() -> None:
    a, b = _run(), _run(inductor_config={"max_fusion_size": 32})
    ra = [_report(a, 0, fx="hit", outcome="cache_hit", duration=0.1, components={"gm": "h", "inductor_config": "c1"})]
    rb = [_report(b, 0, fx="miss", duration=3.0, wait=20.0, components={"gm": "h", "inductor_config": "c2"})]
    causes = explain(a, ra, b, rb)
    assert causes[0].cause == "config_change"
    assert causes[0].text.startswith("B compiles with another Inductor config, max_fusion_size=32 (A: default)")
    assert "the FX graph cache missed in B for 1 graph A found there" in causes[0].text
    assert causes[-1].cause == "environment"


def test_a_mode_change() -> None:
    a, b = _run(), _run(inductor_config={"max_autotune": True, "coordinate_descent_tuning": True})
    ra = [_report(a, 0, fx="hit", outcome="cache_hit", components={"inductor_config": "c1"})]
    rb = [_report(b, 0, components={"inductor_config": "c2"})]
    assert explain(a, ra, b, rb)[0].cause == "mode_change"


def test_a_version_change() -> None:
    a, b = _run(torch="2.12.1"), _run(torch="2.13.0")
    ra = [_report(a, 0, fx="hit", outcome="cache_hit", components={"torch_version": "v1"})]
    rb = [_report(b, 0, components={"torch_version": "v2"})]
    first = explain(a, ra, b, rb)[0]
    assert first.cause == "version_change" and first.text.startswith("B runs torch 2.13.0 (A: 2.12.1)")


def test_a_compile_failure() -> None:
    a, b = _run(), _run()
    failure = Failure("crash", "worker 12 was killed by SIGSEGV", worker_pid=12)
    ra = [_report(a, 0)]
    rb = [_report(b, 0, outcome="failed", failure=failure, fallback="eager", kernels=[])]
    first = explain(a, ra, b, rb)[0]
    assert first.cause == "compile_failure" and "failed to compile (crash" in first.text and "ran eagerly" in first.text


def test_a_compile_failure_leads_the_graphs_its_code_change_made_compile_beside_it() -> None:
    """The planted failure's backward graph compiles anew beside it (the same code change); however
    long that compile takes on a loaded machine, the failure is named first."""
    a, b = _run(), _run()
    failure = Failure("crash", "worker 12 was killed by SIGSEGV", worker_pid=12)
    gelu = [{"name": "cpp_fused_add_gelu_0", "kind": "cpp", "ops": ["add", "gelu"]}]
    ra = [_report(a, 0, duration=0.1), _report(a, 1, kind="backward", duration=0.1)]
    rb = [
        _report(b, 0, outcome="failed", failure=failure, fallback="eager", kernels=[], duration=0.2),
        _report(b, 1, kind="backward", graph_hash="g2", kernels=gelu, duration=6.0, wait=7.8),
    ]
    causes = explain(a, ra, b, rb)
    assert [c.cause for c in causes[:2]] == ["compile_failure", "kernel_change"], [c.text for c in causes]
    assert causes[1].seconds > causes[0].seconds


def test_only_the_machine_differs() -> None:
    a, b = _run(), _run()
    ra = [_report(a, 0, duration=1.0), _report(a, 1, kind="backward", duration=1.0)]
    rb = [_report(b, 0, duration=1.5, wait=2.0), _report(b, 1, kind="backward", duration=1.6)]
    causes = explain(a, ra, b, rb)
    assert {c.cause for c in causes} == {"environment"}
    assert any("the machine" in c.text for c in causes)


def test_a_recorded_wait_leads_the_unexplained_rest() -> None:
    # B waited 1 s for a worker, yet compiled 3 s faster overall (A ran on a busier machine): the wait,
    # an event the report recorded, is named first; "the machine or noise" is what is left.
    a, b = _run(), _run()
    ra = [_report(a, 0, duration=4.0), _report(a, 1, kind="backward", duration=4.0)]
    rb = [_report(b, 0, duration=2.5, wait=1.0), _report(b, 1, kind="backward", duration=2.5)]
    causes = explain(a, ra, b, rb)
    assert causes[0].text.startswith("B waited 1.0 s longer for a worker"), [c.text for c in causes]
    assert "the machine" in causes[-1].text


def test_the_same_runs_have_no_cause() -> None:
    a, b = _run(), _run()
    assert explain(a, [_report(a, 0)], b, [_report(b, 0)]) == []


def test_one_run_alone() -> None:
    run = _run()
    earlier = [_report(_run(), 0, fx="hit", outcome="cache_hit", components={"gm": "h1", "inductor_config": "c1"})]
    reports = [
        _report(run, 0, compile_reason=BREAK, components={"gm": "h1", "inductor_config": "c2"}),
        _report(run, 1, co_name="torch_dynamo_resume_in_forward_at_32", line=32, graph_hash="g2", duration=2.0),
        _report(run, 2, recompile={"frame": 0, "count": 1, "reason": "0/0: tensor 'x' size mismatch"}),
    ]
    texts = [c.text for c in explain_run(run, reports, earlier)]
    assert any(
        t.startswith("graph break at model.py:32 (call to torch._dynamo.graph_break): 1 graph after it") for t in texts
    )
    assert any(
        t.startswith("recompiled forward at model.py:10 (1 more compile): tensor 'x' size mismatch") for t in texts
    )
    assert any("differs from an earlier hit in inductor_config" in t for t in texts)

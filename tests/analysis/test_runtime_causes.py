"""Runtime causes (``sandbox/analysis/causes.py``'s ``runtime_change`` / ``runtime_noise``, from
``sandbox/analysis/runtime.py``) on synthetic reports: what is named, in which words, in which place."""

from __future__ import annotations

from typing import Any

from sandbox.analysis import causes, runtime
from sandbox.analysis.run_causes import explain_run
from sandbox.record.report import CompileReport


def kernel(name: str, per_call: float, calls: int = 1, graph_us: float = 1000.0, **build: Any) -> dict[str, Any]:
    total = per_call * calls
    entry = {"name": name, "kind": build.pop("kind", "triton"), "source_hash": build.pop("hash", "h-" + name)}
    entry.update(build)
    entry["runtime"] = {"calls": calls, "total_us": total, "per_call_us": per_call, "share": total / graph_us}
    return entry


def report(run: str, kernels: list[dict[str, Any]], index: int = 0, **fields: Any) -> CompileReport:
    steps = [{"call": 3, "graph_us": 1000.0, "wall_us": 1100.0}]
    values = dict(run_id=run, compile_id="0/0", graph_kind="forward", outcome="isolated", graph_index=index)
    values.update(co_name="forward", filename="/x/model.py", line=10, duration_s=1.0, kernels=kernels)
    values.update(runtime={"device": "cuda", "steps": steps, "graph_us": 1000.0, "kernels_us": 900.0})
    values.update(fields)
    return CompileReport(**values)


def launcher(xblock: int, regs: int) -> dict[str, Any]:
    return {"XBLOCK": xblock, "num_warps": 4, "num_stages": 1, "n_regs": regs, "n_spills": 0, "shared": 0}


LN = "triton_per_fused_native_layer_norm_0"


def pair() -> tuple[CompileReport, CompileReport]:
    a = report(
        "A",
        [
            kernel(LN, 41.0, graph_us=1000.0, launchers=[launcher(32, 56)], hash="ln-a"),
            kernel("triton_poi_fused_gelu_1", 100.0),
            kernel("extern_kernels.mm", 300.0, calls=2, kind="extern"),
            kernel("triton_poi_fused_add_2", 3.0),
        ],
    )
    b = report(
        "B",
        [
            kernel(LN, 74.0, launchers=[launcher(16, 44)], hash="ln-b"),
            kernel("triton_poi_fused_gelu_1", 150.0),  # 1.5x slower, the same build: noise
            kernel("extern_kernels.mm", 310.0, calls=2, kind="extern"),  # within the ratio
            kernel("triton_poi_fused_add_2", 9.0),  # 3x slower, but under a 5 µs change and 5% share
        ],
    )
    return a, b


def test_deltas_and_the_sentence() -> None:
    a, b = pair()
    rows = {d["kernel_b"]: d for d in runtime.deltas(a, b)}
    ln = rows[LN]
    assert ln["ratio"] == round(74 / 41, 3) and ln["step_delta_us"] == 33.0
    assert ln["build"] == ["XBLOCK 32 \u2192 16", "registers 56 \u2192 44", "source changed"]
    assert runtime.significant(ln) and runtime.significant(rows["triton_poi_fused_gelu_1"])
    assert not runtime.significant(rows["extern_kernels.mm"]) and not runtime.significant(
        rows["triton_poi_fused_add_2"]
    )
    assert runtime.sentence(ln) == (
        f"B's {LN} runs 1.8x slower (41 \u2192 74 µs/call): XBLOCK 32 \u2192 16, registers 56 \u2192 44, source changed"
    )
    faster = dict(ln, ratio=0.5, a_per_call_us=2000.0, b_per_call_us=1000.0, build=[])
    assert runtime.sentence(faster) == f"B's {LN} runs 2.0x faster (2.00 \u2192 1.00 ms/call)"


def test_the_verdict_names_the_runtime_change_first_and_noise_last() -> None:
    a, b = pair()
    run_a = {"run_id": "A", "inductor_config": {}}
    run_b = {"run_id": "B", "inductor_config": {"coordinate_descent_tuning": True}}
    found = causes.explain(run_a, [a], run_b, [b])
    assert found[0].cause == "runtime_change"
    assert found[0].text.startswith(f"B's {LN} runs 1.8x slower (41 \u2192 74 µs/call): XBLOCK 32 \u2192 16")
    assert found[0].text.endswith("coordinate_descent_tuning=True (A: default)")
    assert found[0].evidence[0]["kernel"] == LN and found[0].evidence[0]["runtime"]["ratio"] > 1.7
    assert found[-1].cause == "runtime_noise" and "triton_poi_fused_gelu_1" in found[-1].text
    assert found[-1].text.endswith("with the same build: the machine (its load) or noise")
    assert not [c for c in found if "triton_poi_fused_add_2" in c.text or "extern_kernels.mm" in c.text]


def test_no_runtimes_no_runtime_causes_and_explain_against_the_earlier_run() -> None:
    a, b = pair()
    bare = report("B", b.kernels, runtime=None)
    assert runtime.deltas(a, bare) == [] and not causes.runtime_causes([a], [bare])
    found = explain_run({"run_id": "B"}, [b], earlier=[a])
    assert found[0].cause == "runtime_change"
    assert found[0].text.startswith(f"{LN} runs 1.8x slower than in the earlier run (41 \u2192 74 µs/call)")

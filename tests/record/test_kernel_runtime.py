"""Attributing one profiled call to the report's kernels (``sandbox/record/kernel_runtime.py``): the
ops as ``torch_adapter.profiling.profiled_call`` gives them, on the CPU and as a CUDA call gives
them (device kernels linked to the op that launched them), without torch."""

from __future__ import annotations

from sandbox.record import kernel_runtime

KERNELS = [
    {"name": "cpp_fused_gelu_0", "kind": "cpp"},
    {"name": "triton_per_fused_native_layer_norm_0", "kind": "triton"},
    {"name": "extern_kernels.mm", "kind": "extern"},
    {"name": "torch.ops.aten.convolution_backward.default", "kind": "extern"},
    {"name": "never_ran_0", "kind": "cpp"},
]


def op(name: str, parent: int = -1, cpu_us: float = 0.0, kernels: list | None = None) -> dict:
    return {"name": name, "parent": parent, "cpu_us": cpu_us, "kernels": kernels or []}


def test_profiler_names() -> None:
    names = [kernel_runtime.profiler_name(k) for k in KERNELS]
    assert names[:4] == ["cpp_fused_gelu_0", "triton_per_fused_native_layer_norm_0", "aten::mm"] + [
        "aten::convolution_backward"
    ]
    assert kernel_runtime.profiler_name({"name": "torch.ops.mylib.op.default", "kind": "extern"}) == "mylib::op"


def test_cpu_call_attributed_by_name_topmost_op_only() -> None:
    ops = [
        op("aten::mm", cpu_us=400.0),
        op("aten::mm", parent=0, cpu_us=350.0),  # inside the extern call: not a call of its own
        op("cpp_fused_gelu_0", cpu_us=60.0),
        op("aten::mm", cpu_us=300.0),
        op("aten::empty_strided", cpu_us=5.0),
    ]
    found = kernel_runtime.attribute(KERNELS, ops, device=False)
    assert found["kernels"]["extern_kernels.mm"]["calls"] == 2
    assert found["kernels"]["extern_kernels.mm"]["cpu_us"] == 700.0
    assert found["kernels"]["cpp_fused_gelu_0"]["calls"] == 1
    assert found["cpu_us"] == 765.0 and found["device_us"] == 0.0
    assert found["other"] == {"aten::empty_strided": [1, 5.0]}
    kernels, runtime = kernel_runtime.merge(KERNELS, None, found, 3, 1000.0, "cpu", 1.0)
    by = {k["name"]: k["runtime"] for k in kernels}
    assert by["extern_kernels.mm"] == {
        "calls": 2,
        "total_us": 700.0,
        "per_call_us": 350.0,
        "share": 0.7,
        "cpu_us": 700.0,
        "device_us": None,
    }
    assert by["never_ran_0"]["calls"] == 0 and by["never_ran_0"]["per_call_us"] is None
    assert runtime["profiled_calls"] == [3] and runtime["graph_us"] == 1000.0
    assert runtime["kernels_us"] == 760.0 and runtime["other_us"] == 240.0
    assert "runtime" not in KERNELS[0]  # new entries, the old ones untouched


def test_cuda_call_device_time_and_merge_of_two_calls() -> None:
    ops = [
        op("triton_per_fused_native_layer_norm_0", cpu_us=20.0),
        op("cuLaunchKernel", parent=0, cpu_us=8.0, kernels=[["triton_per_fused_native_layer_norm_0", 41.0]]),
        op("aten::mm", cpu_us=30.0),
        op("cudaLaunchKernel", parent=2, cpu_us=6.0, kernels=[["sm90_xmma_gemm_f32", 100.0]]),
        # A CUDA graph replay: its kernels are linked to the launch, outside any kernel's op.
        op("cudaGraphLaunch", cpu_us=10.0, kernels=[["triton_per_fused_native_layer_norm_0", 40.0], ["memset", 2.0]]),
    ]
    found = kernel_runtime.attribute(KERNELS, ops, device=True)
    ln = found["kernels"]["triton_per_fused_native_layer_norm_0"]
    assert ln["calls"] == 2 and ln["device_us"] == 81.0
    mm = found["kernels"]["extern_kernels.mm"]
    assert mm["device_us"] == 100.0 and mm["device_kernels"] == {"sm90_xmma_gemm_f32": 100.0}
    assert found["device_us"] == 183.0 and found["other"] == {"memset": [1, 2.0]}
    kernels, runtime = kernel_runtime.merge(KERNELS, None, found, 3, 500.0, "cuda", 1.0)
    kernels, runtime = kernel_runtime.merge(kernels, runtime, found, 10, 400.0, "cuda", 2.0)
    by = {k["name"]: k["runtime"] for k in kernels}
    assert by["triton_per_fused_native_layer_norm_0"]["calls"] == 4
    assert by["triton_per_fused_native_layer_norm_0"]["per_call_us"] == 40.5
    assert by["extern_kernels.mm"]["device_kernels"] == {"sm90_xmma_gemm_f32": 200.0}
    assert runtime["profiled_calls"] == [3, 10] and runtime["graph_us"] == 366.0  # device time, not wall
    assert runtime["kernels_us"] == 362.0 and runtime["other_by_name"] == {"memset": [2, 4.0]}
    shares = sum(k["runtime"]["share"] for k in kernels)
    assert 0.98 < shares <= 1.0

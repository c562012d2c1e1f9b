"""A GPU-shaped store with kernel runtimes, for the runtime columns of the Graph and Compare pages and
of ``sandbox diff`` (``test_dashboard_runtime.py``): the two runs of ``tests/data/gpu_store.sqlite``
(a transformer block's training step, default and max-autotune, made on an H100) with one profiled
call each, attributed by ``sandbox.record.kernel_runtime`` from CUDA-shaped ops (a Triton kernel's
launcher region with its device kernel, an extern op with a cuBLAS kernel). The device times are
planted: every kernel takes the same time in both runs except ``PLANTED``, which runs
``A_US`` -> ``B_US`` per call in B; its build differs (max-autotune chose XBLOCK 32 -> 4, registers
56 -> 24). The store's own runtimes, measured on the GPU, are set aside for the planted ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox.record import kernel_runtime
from sandbox.store import open_store

DATA = Path(__file__).resolve().parents[1] / "data" / "gpu_store.sqlite"
A, B = "gpu-default", "gpu-max-autotune"
PLANTED = "triton_per_fused_native_layer_norm_0"
A_US, B_US = 41.0, 74.0


def device_us(name: str, run: str) -> float:
    if name == PLANTED:
        return A_US if run == A else B_US
    return 89.0 if "." in name else 50.0  # an extern op, a Triton kernel: alike in both runs


def ops(kernels: list[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    """One CUDA call's ops: each kernel's calls, as its launcher region (Triton) or ATen op (extern)."""
    out: list[dict[str, Any]] = []
    for k in kernels:
        name = kernel_runtime.profiler_name(k)
        device = k["name"] if k["kind"] != "extern" else f"sm90_xmma_gemm_{len(out)}"
        for _ in range(max(int(k.get("calls") or 1), 1)):
            out.append({"name": name, "parent": -1, "cpu_us": 6.0, "kernels": []})
            launch = {"name": "cudaLaunchKernel", "parent": len(out) - 1, "cpu_us": 3.0}
            out.append({**launch, "kernels": [[device, device_us(k["name"], run)]]})
    out.append({"name": "cudaMemsetAsync", "parent": -1, "cpu_us": 2.0, "kernels": [["memset", 1.5]]})
    return out


def planted_store(dest: Path) -> Path:
    """``dest``: a new store holding both GPU runs, each report with its profiled call 3."""
    source = open_store(str(DATA), readonly=True)
    try:
        runs = source.runs()
        reports = {r["run_id"]: source.reports(r["run_id"], with_sources=True) for r in runs}
    finally:
        source.close()
    store = open_store(str(dest))
    try:
        for run in runs:
            timed = []
            for r in reports[run["run_id"]]:
                if r.kernels:
                    # Planted times only: a store that already holds runtimes (profiled on the GPU) starts over.
                    r.kernels = [{k: v for k, v in entry.items() if k != "runtime"} for entry in r.kernels]
                    found = kernel_runtime.attribute(r.kernels, ops(r.kernels, run["name"]), device=True)
                    graph_us = found["device_us"]
                    r.kernels, r.runtime = kernel_runtime.merge(
                        r.kernels, None, found, 3, graph_us * 1.3, "cuda", run["started_at"] + 60
                    )
                timed.append(r)
            store.put_run(run)
            store.put_reports(timed)
    finally:
        store.close()
    return dest

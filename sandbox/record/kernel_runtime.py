"""What a graph's kernels cost at run time: one profiled call's ops, attributed to the report's kernels.

Pure: the profiled call arrives as plain values (``torch_adapter.profiling.profiled_call``: the
ops under the call's region, depth first, each with its parent, its CPU time and the device
kernels linked to it) and leaves as plain values on the report (``kernels[i]["runtime"]`` and
``report.runtime``, docs/REPORT.md). An op is a report kernel's call when its name is the
kernel's profiler name (:func:`profiler_name`) and no op around it already is: a Triton or
template kernel by its own name (its launcher's region, and CUPTI's name for its device kernel),
a C++ kernel by its own name (the region the profiled call wraps it in), an extern kernel by its
ATen op (``extern_kernels.mm`` is ``aten::mm``, whose cuBLAS kernels are linked to it). Device
kernels that no matched op launched are attributed by name (a Triton kernel replayed in a CUDA
graph); what is left is the graph's ``other`` time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The graph's ops and device kernels no report kernel accounts for: the largest ones are kept.
MAX_OTHER = 8
# The device kernels an extern kernel launched (cuBLAS, cuDNN), by name: the largest ones are kept.
MAX_DEVICE_KERNELS = 3


def profiler_name(kernel: Mapping[str, Any]) -> str:
    """The name a kernel's calls carry in ``torch.profiler``: ``extern_kernels.addmm`` ->
    ``aten::addmm``, ``torch.ops.aten.convolution_backward.default`` -> ``aten::convolution_backward``,
    ``torch.ops.mylib.op.default`` -> ``mylib::op``; any other kernel: its own name."""
    name = str(kernel.get("name") or "")
    if kernel.get("kind") != "extern":
        return name
    if name.startswith("extern_kernels."):
        return f"aten::{name.split('.', 1)[1]}"
    parts = name.split(".")
    if len(parts) >= 4 and parts[0] == "torch" and parts[1] == "ops":
        return f"{parts[2]}::{parts[3]}"
    return name


def attribute(kernels: Sequence[Mapping[str, Any]], ops: Sequence[Mapping[str, Any]], device: bool) -> dict[str, Any]:
    """One profiled call's ops, attributed: ``{"kernels": {name: {"calls", "cpu_us", "device_us",
    "device_kernels": {name: us}}}, "cpu_us", "device_us", "other": {name: [calls, us]}}``;
    ``cpu_us`` is the time of the region's top-level ops, ``device_us`` every device kernel's
    (``device``: the graph ran on a GPU, so its time is device time)."""
    by_profiler: dict[str, str] = {}
    for k in kernels:
        by_profiler.setdefault(profiler_name(k), str(k.get("name")))
    own: dict[str, dict[str, Any]] = {}
    owner: list[str | None] = []  # per op: the report kernel whose call it is, or is inside
    other: dict[str, list[float]] = {}
    cpu_us = device_us = 0.0
    for op in ops:
        parent = int(op.get("parent", -1))
        inherited = owner[parent] if 0 <= parent < len(owner) else None
        mine = inherited
        if inherited is None and op.get("name") in by_profiler:
            mine = by_profiler[str(op["name"])]
            entry = own.setdefault(mine, {"calls": 0, "cpu_us": 0.0, "device_us": 0.0, "device_kernels": {}})
            entry["calls"] += 1
            entry["cpu_us"] += float(op.get("cpu_us") or 0.0)
        owner.append(mine)
        if parent < 0:
            cpu_us += float(op.get("cpu_us") or 0.0)
            if mine is None and not device:
                slot = other.setdefault(str(op.get("name")), [0, 0.0])
                slot[0] += 1
                slot[1] += float(op.get("cpu_us") or 0.0)
        for kname, us in op.get("kernels") or []:
            us = float(us or 0.0)
            device_us += us
            target = mine if mine is not None else by_profiler.get(str(kname))
            if target is None:
                slot = other.setdefault(str(kname), [0, 0.0])
                slot[0] += 1
                slot[1] += us
                continue
            entry = own.setdefault(target, {"calls": 0, "cpu_us": 0.0, "device_us": 0.0, "device_kernels": {}})
            if mine is None:
                entry["calls"] += 1  # launched outside any op of its own: one device kernel, one call
            entry["device_us"] += us
            if kname != target:
                entry["device_kernels"][kname] = entry["device_kernels"].get(kname, 0.0) + us
    return {"kernels": own, "cpu_us": cpu_us, "device_us": device_us, "other": other}


def _round(x: float) -> float:
    return round(x, 3)


def merge(
    report_kernels: Sequence[Mapping[str, Any]],
    previous: Mapping[str, Any] | None,
    found: Mapping[str, Any],
    call: int,
    wall_us: float,
    device: str,
    at: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The report's kernel entries and ``runtime`` with one more profiled call (``found``, from
    :func:`attribute`) added to what earlier profiled calls gave (``previous``, the report's
    ``runtime``). New entries and a new dict: the store's writer may be serialising the old ones."""
    gpu = device != "cpu"
    steps = [dict(s) for s in (previous or {}).get("steps") or []]
    graph_us = found["device_us"] if gpu else wall_us
    steps.append(
        {
            "call": call,
            "at": at,
            "wall_us": _round(wall_us),
            "device_us": _round(found["device_us"]) if gpu else None,
            "graph_us": _round(graph_us),
        }
    )
    total_graph = sum(s["graph_us"] for s in steps)
    per_kernel = found["kernels"]
    kernels: list[dict[str, Any]] = []
    attributed = 0.0
    for k in report_kernels:
        k = dict(k)
        before = dict(k.get("runtime") or {})
        now = per_kernel.get(k.get("name"), {})
        calls = int(before.get("calls", 0)) + int(now.get("calls", 0))
        cpu = float(before.get("cpu_us", 0.0)) + float(now.get("cpu_us", 0.0))
        dev = float(before.get("device_us") or 0.0) + float(now.get("device_us", 0.0))
        total = dev if gpu else cpu
        attributed += float(now.get("device_us", 0.0)) if gpu else float(now.get("cpu_us", 0.0))
        names = dict(before.get("device_kernels") or {})
        for n, us in (now.get("device_kernels") or {}).items():
            names[n] = names.get(n, 0.0) + us
        entry: dict[str, Any] = {
            "calls": calls,
            "total_us": _round(total),
            "per_call_us": _round(total / calls) if calls else None,
            "share": round(total / total_graph, 4) if total_graph > 0 else None,
            "cpu_us": _round(cpu),
            "device_us": _round(dev) if gpu else None,
        }
        if names:
            top = sorted(names.items(), key=lambda kv: -kv[1])[:MAX_DEVICE_KERNELS]
            entry["device_kernels"] = {n: _round(us) for n, us in top}
        k["runtime"] = entry
        kernels.append(k)
    other = {n: list(v) for n, v in ((previous or {}).get("other_by_name") or {}).items()}
    for n, (calls, us) in found["other"].items():
        slot = other.setdefault(n, [0, 0.0])
        slot[0] += calls
        slot[1] += us
    top_other = sorted(other.items(), key=lambda kv: -kv[1][1])[:MAX_OTHER]
    kernels_us = float((previous or {}).get("kernels_us") or 0.0) + attributed
    runtime = {
        "device": device,
        "steps": steps,
        "profiled_calls": [s["call"] for s in steps],
        "graph_us": _round(total_graph),
        "wall_us": _round(sum(s["wall_us"] for s in steps)),
        "kernels_us": _round(kernels_us),
        "other_us": _round(max(total_graph - kernels_us, 0.0)),
        "other_by_name": {n: [int(c), _round(us)] for n, (c, us) in top_other},
    }
    if (previous or {}).get("skipped"):
        runtime["skipped"] = list(previous["skipped"])  # type: ignore[index]
    return kernels, runtime

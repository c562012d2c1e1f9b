"""What makes a graph differ between the ranks of a job, so that its FX graph cache key, and
so its compile, cannot be shared between them.

Private symbols touched here: the ``torch.ops._c10d_functional`` namespace (functional
collectives: their last argument names the process group) and torch.distributed.config
.compile_on_one_rank (torch 2.13: collectives and device-mesh coordinates traced as runtime
values, ``TORCH_DISTRIBUTED_COMPILE_ON_ONE_RANK=1``). The same names on torch 2.11, which has
no ``compile_on_one_rank``.
"""

from __future__ import annotations

from typing import Any

_COLLECTIVES = ("_c10d_functional", "c10d_functional", "_dtensor")


def compile_on_one_rank() -> bool | None:
    """torch.distributed.config.compile_on_one_rank; None where this torch has no such setting."""
    try:
        from torch.distributed import config
    except ImportError:
        return None
    value = getattr(config, "compile_on_one_rank", None)
    return None if value is None else bool(value)


def rank_dependence(gm: Any, example_inputs: Any) -> str | None:
    """Why this graph may differ by rank, or None: inputs on an indexed GPU (each rank its own
    device: the index is part of the key), or collectives that name a process group."""
    devices = set()
    for x in example_inputs or ():
        device = getattr(x, "device", None)
        if getattr(device, "type", None) not in (None, "cpu", "meta") and getattr(device, "index", None) is not None:
            devices.add(str(device))
    groups = set()
    try:
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            namespace = getattr(node.target, "namespace", None) or ""
            if namespace in _COLLECTIVES:
                names = [a for a in node.args if isinstance(a, str)]
                groups.add(f"{node.target}" + (f" (group {names[-1]})" if names else ""))
    except Exception:  # noqa: BLE001 - a report detail never fails a compile
        pass
    reasons = []
    if devices:
        reasons.append(f"inputs on {', '.join(sorted(devices))}: the device index is part of the cache key")
    if groups:
        hint = "" if compile_on_one_rank() else " (TORCH_DISTRIBUTED_COMPILE_ON_ONE_RANK=1 traces them rank-agnostic)"
        reasons.append(f"collectives {', '.join(sorted(groups)[:3])} name their process group{hint}")
    return "; ".join(reasons) or None

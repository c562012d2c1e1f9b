"""Who is compiling: the caller's trace context and the job's rank.

The OpenTelemetry API is read only if the application already imported it: a
process that does not use OpenTelemetry pays nothing here.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def caller_span() -> dict[str, Any]:
    """W3C identity of the caller's current span, or {} when there is none."""
    if "opentelemetry.trace" not in sys.modules:
        return {}
    try:
        from opentelemetry import trace  # optional: read only where the application imported it

        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return {}
        return {
            "trace_id": format(ctx.trace_id, "032x"),
            "parent_span_id": format(ctx.span_id, "016x"),
            "trace_flags": int(ctx.trace_flags),
        }
    except Exception:
        return {}


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def distributed() -> dict[str, Any]:
    """rank, local_rank, world_size from torch.distributed, else torchrun's environment."""
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if "torch.distributed" in sys.modules:
        try:
            import torch.distributed as dist  # already imported: checked just above

            if dist.is_available() and dist.is_initialized():
                rank, world = dist.get_rank(), dist.get_world_size()
        except Exception:
            pass
    return {"rank": rank, "local_rank": _env_int("LOCAL_RANK"), "world_size": world}

"""Shared by the scenario scripts in this folder (each runs as ``__main__`` in a fresh
process started by a test). Importing this module does not import ``sandbox``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

MARK = "@@SANDBOX-TEST-RESULT@@"


def emit(obj: Any) -> None:
    """Hand ``obj`` to the test (the last such line of stdout wins)."""
    sys.stdout.write(MARK + json.dumps(obj, default=repr) + "\n")
    sys.stdout.flush()


def reports() -> list[dict[str, Any]]:
    import sandbox

    return [r.to_dict() for r in sandbox.reports()]


def worker_pids() -> list[int]:
    import sandbox

    return [w["pid"] for w in sandbox.workers()]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (e.g. Inductor's compile pool in a worker)."""
    from sandbox.isolation.processes import descendants

    return [pid, *descendants(pid)]


def worker_trees() -> list[int]:
    """Every live process of the pool: the workers and their descendants."""
    return sorted({p for pid in worker_pids() for p in process_tree(pid)})


def cache_files(root: str | None = None) -> list[str]:
    """Relative paths of the files under the Inductor cache dir."""
    root = root or os.environ["TORCHINDUCTOR_CACHE_DIR"]
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def chain(e: BaseException) -> list[BaseException]:
    """The exception, then its causes/contexts."""
    out, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def exception_info(e: BaseException) -> dict[str, Any]:
    """The exception and its chain as type names and messages."""
    return {
        "type": type(e).__name__,
        "message": str(e),
        "chain": [{"type": type(c).__name__, "module": type(c).__module__, "message": str(c)} for c in chain(e)],
    }


def close(a: Any, b: Any, rtol: float = 1e-4, atol: float = 1e-4) -> bool:
    import torch

    try:
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
        return True
    except AssertionError:
        return False

"""The ``PYTHONPATH`` a bench gives its children: this checkout first, so a child imports this
checkout's ``sandbox`` (and the bench's own modules) even on a host where the project is not
installed, or where another copy of it is."""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkout_first(pythonpath: str | None, *after: str) -> str:
    """``pythonpath`` with the repository, then ``after``, in front; the caller's other entries
    keep their order after them, and none is listed twice."""
    front = [REPO, *after]
    rest = [p for p in (pythonpath or "").split(os.pathsep) if p and p not in front]
    return os.pathsep.join([*front, *rest])

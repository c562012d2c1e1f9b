"""The stage tree of a report: which stage encloses which, and each stage's own time.

Every consumer (OpenTelemetry spans, the diff's stage totals, the dashboard's stage
table) reads the nesting from here. A stage's parent is the smallest stage that encloses
its interval and carries the name the stage gives as ``parent`` (names repeat across the
user's process and the worker, so the interval decides which one); a stage whose named
parent is not there hangs under the smallest stage that encloses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sandbox.record.report import Stage

__all__ = ["OWN", "SWITCH", "from_events", "parents", "self_times", "walk"]

# The sandbox's own stages, in the order a compile goes through them (a graph that cannot
# cross compiles in the user's process instead).
OWN = (
    "cache_lookup",
    "serialize",
    "wait_for_worker",
    "send",
    "compile_in_worker",
    "transfer",
    "load",
    "compile_in_process",
)
# The moment a graph compiled in the background takes over from its eager stand-in (async mode).
SWITCH = "switch"

# Timestamps of the user's process and of the worker come from one clock but are
# rounded differently: a child may start a microsecond before its parent.
_EPS = 1e-6


def from_events(events: Iterable[dict[str, Any]], origin: str, root: str | None) -> list[Stage]:
    """Pair chromium begin/end events into stages (``root`` is the parent of the outermost)."""
    out: list[Stage] = []
    open_stages: list[tuple[str, float]] = []
    for e in events:
        ts = (e.get("ts") or 0) / 1e6
        if e.get("ph") == "B":
            open_stages.append((e["name"], ts))
        elif e.get("ph") == "E":
            for i in range(len(open_stages) - 1, -1, -1):
                if open_stages[i][0] == e["name"]:
                    name, start = open_stages.pop(i)
                    enclosing = open_stages[i - 1][0] if i > 0 else root
                    out.append(Stage(name, start, ts, origin, enclosing))
                    break
    return out


def _encloses(outer: Stage, inner: Stage) -> bool:
    return outer.start - _EPS <= inner.start and inner.end <= outer.end + _EPS


def parents(stages: Sequence[Stage]) -> list[int | None]:
    """Each stage's parent, as an index into ``stages`` (None for a root)."""
    out: list[int | None] = []
    for i, s in enumerate(stages):
        named: int | None = None
        enclosing: int | None = None
        for j, t in enumerate(stages):
            if j == i or not _encloses(t, s) or (_encloses(s, t) and j > i):
                continue  # of two equal intervals, the earlier one is the outer
            if t.name == s.parent and (named is None or stages[named].duration_s > t.duration_s):
                named = j
            if enclosing is None or stages[enclosing].duration_s > t.duration_s:
                enclosing = j
        out.append(named if named is not None else enclosing if s.parent is not None else None)
    return out


def self_times(stages: Sequence[Stage]) -> list[tuple[Stage, float]]:
    """Each stage with its own time: its duration less the stages directly inside it."""
    inner = [0.0] * len(stages)
    for i, p in enumerate(parents(stages)):
        if p is not None:
            inner[p] += stages[i].duration_s
    return [(s, max(s.duration_s - inner[i], 0.0)) for i, s in enumerate(stages)]


def walk(stages: Sequence[Stage]) -> list[tuple[int, int, int | None]]:
    """``(index, depth, parent index)`` depth first, siblings by start: parents come before children."""
    children: dict[int | None, list[int]] = {}
    for i, p in enumerate(parents(stages)):
        children.setdefault(p, []).append(i)
    for kids in children.values():
        kids.sort(key=lambda i: (stages[i].start, -stages[i].end))
    out: list[tuple[int, int, int | None]] = []
    todo: list[tuple[int, int, int | None]] = [(i, 0, None) for i in reversed(children.get(None, []))]
    while todo:
        i, depth, parent = todo.pop()
        out.append((i, depth, parent))
        todo.extend((k, depth + 1, i) for k in reversed(children.get(i, [])))
    return out

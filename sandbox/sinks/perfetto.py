"""A Chrome/Perfetto trace (JSON) of reports: the parent and every worker appear as
their own processes, with their real pids, on one clock.

Stages of one process are laid on lanes (threads) so that every lane is properly
nested: each begin has its end, and timestamps never go backwards within a lane.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from sandbox.record.report import CompileReport, Stage


def _lanes(stages: list[Stage]) -> list[list[Stage]]:
    """Greedy: a stage joins the first lane where it nests inside (or follows) what is open."""
    lanes: list[list[Stage]] = []
    stacks: list[list[Stage]] = []
    for s in sorted(stages, key=lambda s: (s.start, -s.end)):
        for lane, stack in zip(lanes, stacks):
            while stack and stack[-1].end <= s.start:
                stack.pop()
            if not stack or (stack[-1].start <= s.start and s.end <= stack[-1].end):
                lane.append(s)
                stack.append(s)
                break
        else:
            lanes.append([s])
            stacks.append([s])
    return lanes


def _emit(lane: list[Stage], pid: int, tid: int, args_of: Any) -> list[dict[str, Any]]:
    """Begin/end events of a properly nested lane, in time order."""
    events: list[dict[str, Any]] = []
    stack: list[Stage] = []

    def close_until(t: float | None) -> None:
        while stack and (t is None or stack[-1].end <= t):
            done = stack.pop()
            events.append({"name": done.name, "ph": "E", "ts": done.end * 1e6, "pid": pid, "tid": tid})

    for s in lane:
        close_until(s.start)
        events.append(
            {
                "name": s.name,
                "ph": "B",
                "ts": s.start * 1e6,
                "pid": pid,
                "tid": tid,
                "cat": "sandbox",
                "args": args_of(s),
            }
        )
        stack.append(s)
    close_until(None)
    return events


def _args_of(report_of: dict[int, CompileReport]) -> Any:
    """The event arguments of a stage: which graph's it is."""

    def args_of(s: Stage) -> dict[str, Any]:
        r = report_of[id(s)]
        return {"compile_id": r.compile_id, "graph_kind": r.graph_kind, "origin": s.origin}

    return args_of


def chrome_trace(reports: Iterable[CompileReport], parent_pid: int | None = None) -> dict[str, Any]:
    parent_pid = parent_pid or os.getpid()
    by_pid: dict[int, list[tuple[Stage, CompileReport]]] = {}
    names: dict[int, str] = {parent_pid: "training process"}
    for r in reports:
        graph = Stage(f"{r.graph_kind} graph {r.compile_id} ({r.outcome})", r.started_at, r.started_at + r.duration_s)
        by_pid.setdefault(parent_pid, []).append((graph, r))
        for s in r.stages:
            pid = r.worker_pid if s.origin == "worker" and r.worker_pid else parent_pid
            if pid != parent_pid:
                names[pid] = f"sandbox worker {pid}"
            by_pid.setdefault(pid, []).append((s, r))
    events: list[dict[str, Any]] = []
    for pid, name in names.items():
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}})
    for pid, items in by_pid.items():
        args_of = _args_of({id(s): r for s, r in items})
        for tid, lane in enumerate(_lanes([s for s, _ in items])):
            events.extend(_emit(lane, pid, tid, args_of))
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(path: str, reports: Iterable[CompileReport], parent_pid: int | None = None) -> str:
    with open(path, "w") as f:
        json.dump(chrome_trace(reports, parent_pid), f)
    return path

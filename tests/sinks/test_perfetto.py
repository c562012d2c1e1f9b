"""The Chrome/Perfetto trace of a run (issue 3, point 8).

One fresh process trains the zoo MLP one step through the sandbox on an empty cache
dir (forward and backward compiled in a worker) and calls
``sandbox.export_trace(path)``. The file must load in Perfetto / chrome://tracing:
valid JSON, the parent and the worker as processes of their own under their real pids
(named by ``process_name`` metadata), and every thread lane properly nested: each
begin has its end, in order, and timestamps never go backwards.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from support import HELPERS, fresh_cache_dir, run_script

CHILD = r"""
import os, sys
import common
import sandbox
from sandbox import zoo

zoo.run("mlp", backend="sandbox", steps=1)
path = sandbox.export_trace(sys.argv[1])
common.emit({
    "pid": os.getpid(),
    "path": path,
    "reports": common.reports(),
    "workers": sandbox.workers(),
})
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    base = tmp_path_factory.mktemp("perfetto")
    script = base / "perfetto_child.py"
    script.write_text(CHILD)
    trace_path = base / "trace.json"
    pythonpath = os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH", "")) if p)
    result = run_script(
        str(script),
        str(trace_path),
        cache_dir=fresh_cache_dir(base / "cache", probe_seed),
        env={"PYTHONPATH": pythonpath, "SANDBOX_STORE": str(base / "runs.db")},  # not the user's store
    )
    assert result["path"] == str(trace_path)
    with open(trace_path) as f:
        trace = json.load(f)  # valid JSON, or this fails
    return result, trace


def test_parent_and_worker_are_processes_with_real_pids(exported) -> None:
    result, trace = exported
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    reports = result["reports"]
    assert sorted(r["graph_kind"] for r in reports) == ["backward", "forward"]
    assert all(r["outcome"] == "isolated" for r in reports)
    worker_pids = {r["worker_pid"] for r in reports}
    assert worker_pids <= {w["pid"] for w in result["workers"]}, "the report's worker pid is a live worker's"
    parent_pid = result["pid"]
    assert parent_pid not in worker_pids
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    assert set(names) == {parent_pid} | worker_pids, names
    for pid in worker_pids:
        assert str(pid) in names[pid] or "worker" in names[pid], names
    # Every stage sits in the process that ran it: the worker's Inductor stages under the
    # worker's pid, the sandbox's own parent-side stages under the parent's.
    begun = defaultdict(set)
    for e in events:
        if e.get("ph") == "B":
            begun[e["pid"]].add(e["name"])
    for pid in worker_pids:
        assert {"compile_in_worker", "GraphLowering.run", "Scheduler.codegen"} <= begun[pid], sorted(begun[pid])
        assert "serialize" not in begun[pid]
    assert {"inductor_compile", "serialize", "wait_for_worker", "send", "transfer", "load"} <= begun[parent_pid]
    assert "GraphLowering.run" not in begun[parent_pid]
    assert sum(1 for e in events if e.get("ph") == "B") == sum(len(r["stages"]) + 1 for r in reports)


def test_begin_end_balanced_and_monotonic_per_thread(exported) -> None:
    _, trace = exported
    lanes: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in trace["traceEvents"]:
        assert e.get("ph") in ("B", "E", "M"), e
        if e["ph"] == "M":
            continue
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert isinstance(e["ts"], (int, float)) and e["name"]
        lanes[(e["pid"], e["tid"])].append(e)
    assert lanes
    for lane, events in lanes.items():
        stack: list[str] = []
        last = float("-inf")
        for e in events:  # file order is the order a viewer reads them in
            assert e["ts"] >= last, f"lane {lane}: {e['name']} {e['ph']} at {e['ts']} after {last}"
            last = e["ts"]
            if e["ph"] == "B":
                stack.append(e["name"])
            else:
                assert stack, f"lane {lane}: end of {e['name']} without a begin"
                assert stack[-1] == e["name"], f"lane {lane}: end of {e['name']} while {stack[-1]} is open"
                stack.pop()
        assert not stack, f"lane {lane}: never ended: {stack}"

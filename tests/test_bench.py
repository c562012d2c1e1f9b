"""The compile-overhead bench runs, and a sandbox process leaves nothing behind.

`bench/compile_overhead.py --quick` (one cold process each of in-process Inductor and
the sandbox) is run as a user would. Beyond running, it checks what the bench measures
for every child: processes of the child's session still running after it exited. A
sandbox process must leave none (its worker, and anything the worker started, are gone
before it exits), or every later process on the machine would share the CPU (and, on a
GPU machine, the driver) with their teardown. The timings themselves are not judged here.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import TESTS


def test_compile_overhead_quick_runs_and_no_child_leaves_a_process(tmp_path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(TESTS.parent / "bench" / "compile_overhead.py"), "--quick", "--variants", "inductor,sandbox",
         "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    data = json.loads(out.read_text())
    children = data["children"]
    assert sorted(c["variant"] for c in children) == ["inductor", "sandbox"], [c["variant"] for c in children]
    for c in children:
        assert c["ok"], c.get("stderr_tail")
        assert c["left_at_exit"] == 0 and c["lingering_pids"] == [], c
    sandbox_child = next(c for c in children if c["variant"] == "sandbox")
    # It did start a worker, and the graphs were compiled in it: the check above covers a real pool.
    assert sandbox_child["result"]["workers"] and {r["outcome"] for r in sandbox_child["result"]["reports"]} == {"isolated"}
    assert "| sandbox | cold |" in proc.stdout  # the breakdown table, with its left-after-exit column

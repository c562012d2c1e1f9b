"""``sandbox demo``, run as a user runs it: the console script, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("sandbox")


class Demo:
    """One ``sandbox demo`` process: its pid, exit code and output."""

    def __init__(self, args: list[str], cache_dir: Path) -> None:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache_dir))
        for name in [k for k in env if k.startswith("SANDBOX_")]:
            del env[name]
        proc = subprocess.Popen(
            [str(SCRIPT), "demo", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = proc.pid
        try:
            self.stdout, self.stderr = proc.communicate(timeout=600)
        finally:
            proc.kill()
        self.returncode = proc.returncode


def _rows(stdout: str, model: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines() if line.startswith(model + " ")]


@pytest.mark.slow
def test_demo_compiles_in_a_worker_then_hits_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "inductor-cache"
    first = Demo(["--models", "mlp"], cache)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout

    # One row per graph: the training step's forward and backward, both compiled
    # in a worker - a process that is not the demo's own.
    rows = _rows(out, "mlp")
    assert [r[1].split()[0] for r in rows] == ["forward", "backward"], out
    for row in rows:
        assert row[2] == "isolated", out
        assert row[3].isdigit() and int(row[3]) != first.pid and float(row[4]) > 0, out
    assert "2 graphs from 1 models" in out and "2 isolated, 0 cache hits, 0 in-process, 0 failed" in out, out
    assert "all 1 models match eager" in out, out
    assert re.search(r"To see every compile in the dashboard, then: \S*sandbox dashboard$", out, re.M), out
    assert re.search(r"1/1 mlp: matches eager, 2 graph\(s\)", first.stderr), first.stderr

    # Same cache directory, new process: both graphs come from the compile caches.
    second = Demo(["--models", "mlp"], cache)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = _rows(second.stdout, "mlp")
    assert rows and all(r[2] == "cache hit" for r in rows), second.stdout
    assert "0 isolated" in second.stdout and "0 failed" in second.stdout, second.stdout


def test_demo_rejects_unknown_model(tmp_path: Path) -> None:
    proc = Demo(["--models", "no_such_model"], tmp_path)
    assert proc.returncode == 2
    assert "unknown model(s) no_such_model" in proc.stderr and "mlp" in proc.stderr

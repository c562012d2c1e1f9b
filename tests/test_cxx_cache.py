"""The suite's C++ build cache (``helpers/cxx_cache.py``) must never hand a build the output of
another source or other flags, nor keep a failed build: a stale kernel would hide a real bug."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import HELPERS, missing

PROGRAM = '#include <cstdio>\nint main() { std::puts("%s"); return 0; }\n'


@pytest.fixture
def build(tmp_path: Path):
    real = shutil.which("g++")
    if real is None:
        missing("g++ is not installed: apt-get install g++")
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "TEST_CXX_REAL": real, "TEST_CXX_CACHE": str(cache)}

    def run(folder: str, text: str, *flags: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        where = tmp_path / folder
        where.mkdir(exist_ok=True)
        (where / "main.cpp").write_text(text)
        out = where / "main"
        cmd = [sys.executable, "-S", str(HELPERS / "cxx_cache.py"), str(where / "main.cpp"), *flags, "-o", str(out)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120), out

    run.log = cache / "log"  # type: ignore[attr-defined]
    return run


def _runs(program: Path) -> str:
    return subprocess.run([str(program)], capture_output=True, text=True, timeout=30).stdout.strip()


def test_same_source_elsewhere_is_a_hit_and_a_changed_source_or_flag_compiles(build) -> None:
    first, out = build("a", PROGRAM % "one", "-O1")
    assert first.returncode == 0, first.stderr
    again, out_b = build("b", PROGRAM % "one", "-O1")  # same text, another folder and output path
    assert again.returncode == 0 and _runs(out_b) == "one"
    changed, out_c = build("c", PROGRAM % "two", "-O1")
    assert changed.returncode == 0 and _runs(out_c) == "two"
    flagged, out_d = build("d", PROGRAM % "one", "-O2")
    assert flagged.returncode == 0 and _runs(out_d) == "one"
    kinds = [line.split()[0] for line in build.log.read_text().splitlines()]
    assert kinds == ["miss", "hit", "miss", "miss"], kinds
    assert _runs(out) == "one"


def test_a_failed_build_is_reported_and_not_kept(build) -> None:
    broken, out = build("a", "int main( {", "-O1")
    assert broken.returncode != 0 and "error" in broken.stderr and not out.exists()
    again, _ = build("b", "int main( {", "-O1")
    assert again.returncode != 0 and "error" in again.stderr
    assert not build.log.exists(), build.log.read_text()


def test_the_suite_compiles_through_the_cache() -> None:
    """conftest.py set it up for this run: Inductor's ``cpp.cxx`` is the shim, and it builds."""
    if shutil.which("g++") is None and not os.environ.get("TEST_CXX_REAL"):
        missing("g++ is not installed: apt-get install g++")
    shim = os.environ.get("CXX", "")
    assert shim.endswith("/g++") and os.environ.get("TEST_CXX_CACHE"), shim
    assert subprocess.run([shim, "--version"], capture_output=True, timeout=60).returncode == 0

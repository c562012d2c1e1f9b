"""The suite never touches the developer's own run store or home (conftest.py gives it its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import support

from sandbox.store import default_location


def test_the_suite_has_a_home_of_its_own() -> None:
    home = support.SUITE_HOME
    assert Path(os.environ["HOME"]) == home and Path(os.environ["XDG_CACHE_HOME"]).is_relative_to(home)
    assert Path(default_location()).is_relative_to(home)
    assert not [n for n in os.environ if n.startswith("SANDBOX_") and n not in support.TEST_SETTINGS]


def test_a_command_without_a_store_writes_into_the_suites_home() -> None:
    # What the suite's commands and scripts inherit: the default store resolves inside the suite's home.
    out = subprocess.run(
        [sys.executable, "-c", "from sandbox.store import default_location; print(default_location())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert Path(out).is_relative_to(support.SUITE_HOME), out
    assert support.REAL_CACHE is not None and not Path(out).is_relative_to(support.REAL_CACHE)


def test_the_real_default_store_is_watched(tmp_path: Path) -> None:
    # The check at the end of the session compares these files with what they were before it started.
    watched = support.UserFiles(tmp_path)
    assert {Path(p).name for p in watched.before} == {"runs.db", "runs.db-wal", "demo-spans.jsonl"}
    assert watched.changed() == []
    (tmp_path / "runs.db").write_bytes(b"a run")  # what a test writing into the user's store would do
    assert watched.changed() == [str(tmp_path / "runs.db")]

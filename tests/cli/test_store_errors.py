"""A store location that cannot work is named with its real problem, by the CLI and by a training
process: a directory, a folder that does not exist, a folder the user cannot write, a virtual file
system. Nothing tells the user to "make a first run" where no run could be stored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, SCRIPT_TIMEOUT_S, as_user, other_user, script_env

SCRIPT = ROOT / ".venv" / "bin" / "sandbox"


def sandbox_cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    command = [str(SCRIPT) if SCRIPT.exists() else shutil.which("sandbox") or "sandbox", *args]
    return subprocess.run(as_user(user, command), env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def nobody_folder() -> Iterator[tuple[Path, int | None]]:
    """A folder its reader cannot write, and the reader: nobody when the tests run as root."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-store-errors-"))
    folder = base / "shared"
    folder.mkdir()
    base.chmod(0o755)
    folder.chmod(0o555)
    user = other_user()
    try:
        yield folder, user
    finally:
        folder.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "runs.db"
    folder.mkdir()
    proc = sandbox_cli("--store", str(folder), "runs")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"sandbox runs: store {folder} is a directory, not a store file: point --store or SANDBOX_STORE at a file, "
        f"e.g. {folder / 'runs.db'}"
    )


def test_a_missing_folder(tmp_path: Path) -> None:
    where = tmp_path / "no" / "such" / "runs.db"
    proc = sandbox_cli("--store", str(where), "runs")
    assert proc.returncode == 1
    assert f"its folder {where.parent} does not exist" in proc.stderr, proc.stderr
    assert not (tmp_path / "no").exists()  # reading made no folder


def test_a_folder_the_user_cannot_write(nobody_folder: tuple[Path, int | None]) -> None:
    folder, user = nobody_folder
    proc = sandbox_cli("--store", str(folder / "runs.db"), "runs", user=user)
    assert proc.returncode == 1
    assert f"its folder {folder} is not writable by this user" in proc.stderr, proc.stderr
    assert "sandbox demo" not in proc.stderr


def test_a_virtual_file_system() -> None:
    proc = sandbox_cli("--store", "/proc/runs.db", "runs")
    assert proc.returncode == 1
    assert "/proc is on a virtual file system (proc) that holds no files" in proc.stderr, proc.stderr
    assert "sandbox demo" not in proc.stderr


TRAIN = """
import torch, sandbox
f = torch.compile(lambda x: x * 2 + 1, backend="sandbox")
assert torch.allclose(f(torch.ones(3)), torch.full((3,), 3.0))
sandbox.flush()
"""


@pytest.mark.parametrize("case", ["directory", "proc"])
def test_a_training_process_names_the_problem_once(tmp_path: Path, module_cache_dir: Path, case: str) -> None:
    where = tmp_path / "runs.db" if case == "directory" else Path("/proc/runs.db")
    if case == "directory":
        where.mkdir()
    expected = "is a directory, not a store file" if case == "directory" else "virtual file system (proc)"
    env = script_env(module_cache_dir) | {"SANDBOX_STORE": str(where), "SANDBOX_SPOOL": str(tmp_path / "spool")}
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # the job itself runs on
    assert proc.stderr.count(expected) == 1, proc.stderr[-3000:]

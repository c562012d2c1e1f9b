"""A run's code revision: read from the working directory's repository, started safely beside compiles."""

from __future__ import annotations

import os
import subprocess
import sys

from sandbox.record.environment import git_revision

_starts: list[tuple] | None = None


def _record_starts(event: str, args: tuple) -> None:
    if event == "subprocess.Popen" and _starts is not None:
        _starts.append(args)


sys.addaudithook(_record_starts)  # audit hooks cannot be removed; this one records only inside a test


def _git(cwd, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def test_git_revision_names_the_working_directorys_commit(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "f").write_text("x")
    _git(tmp_path, "add", "f")
    _git(tmp_path, "commit", "-q", "-m", "one")
    assert git_revision(str(tmp_path)) == _git(tmp_path, "rev-parse", "HEAD").strip()
    outside = tmp_path / "plain"
    outside.mkdir()
    os.environ["GIT_CEILING_DIRECTORIES"] = str(tmp_path)
    try:
        assert git_revision(str(outside)) is None
    finally:
        del os.environ["GIT_CEILING_DIRECTORIES"]


def test_git_revision_starts_git_with_its_own_copy_of_the_environment(tmp_path):
    # With no env, CPython starts git from the C environment array, which Inductor's first kernel
    # load on another thread moves and frees: a start in that moment fails with EFAULT.
    global _starts
    _starts = []
    try:
        git_revision(str(tmp_path))
    finally:
        starts, _starts = _starts, None
    assert len(starts) == 1
    executable, argv, cwd, env = starts[0]
    assert list(argv) == ["git", "rev-parse", "HEAD"]
    assert env is not None, "git was started from the process's C environment array"
    decoded = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in dict(env).items()
    }
    assert decoded == dict(os.environ)

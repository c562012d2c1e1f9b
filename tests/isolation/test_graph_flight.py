"""The graph's gate (``sandbox/isolation/graph_flight.py``): the lock that lets one process of a
host compile a graph while the others wait and load it from AOTAutograd's cache.

The whole path (two ranks of a torchrun job, one compiling, the other waiting and loading) is
proven in ``test_service.py::test_torchrun_job_compiles_each_graph_once``; here the lock's own
promises, with real processes holding real locks: a holder that dies frees its waiters at once,
a holder that never finishes frees them at the timeout, and what the lock file says about its
holder is untrusted text.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from sandbox.isolation import graph_flight

ME = {"pid": os.getpid(), "rank": 1, "local_rank": 1, "host": "here"}

HOLD = """
import os, sys, time
from sandbox.isolation import graph_flight
with graph_flight.gate(sys.argv[1], {"pid": os.getpid(), "rank": 0, "local_rank": 0, "host": "there"}, 60) as f:
    print(f.role, flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    return tmp_path / "inductor"


def _holder(key: str, hold_s: float, cache_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, key, str(hold_s)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_waiter_goes_on_when_its_holder_dies(cache_dir: Path) -> None:
    key = "a" * 64
    holder = _holder(key, 300, cache_dir)
    try:
        killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(1.5); os.kill({holder.pid}, 9)"])
        t0 = time.time()
        with graph_flight.gate(key, ME, 60) as flight:
            waited = time.time() - t0
        killer.wait(10)
    finally:
        holder.kill()
        holder.wait(10)
    assert holder.returncode == -signal.SIGKILL
    # The kernel dropped the dead holder's lock: the wait ended with it, not at the timeout.
    assert flight.role == "waited" and 1.0 < waited < 5.0, (flight, waited)
    assert flight.holder == {"pid": holder.pid, "rank": 0, "local_rank": 0, "host": "there"}
    entry = graph_flight.single_flight_entry(flight, first=True)
    assert entry is not None
    assert (entry["role"], entry["via"], entry["key"], entry["compiled_by"]["pid"]) == (
        "waited",
        "cache_dir",
        key,
        holder.pid,
    )
    assert graph_flight.single_flight_entry(flight, first=False)["waited_s"] == 0.0  # the pair waited once


def test_a_holder_that_never_finishes_frees_its_waiters_at_the_timeout(cache_dir: Path) -> None:
    key = "b" * 64
    holder = _holder(key, 300, cache_dir)
    try:
        with graph_flight.gate(key, ME, 1.0) as flight:
            pass
    finally:
        holder.kill()
        holder.wait(10)
    assert flight.role == "off" and "compiled here" in (flight.reason or "") and flight.waited_s >= 1.0, flight
    assert graph_flight.single_flight_entry(flight, first=True) is None


def test_the_first_process_holds_and_says_who_it_is(cache_dir: Path) -> None:
    key = "c" * 64
    with graph_flight.gate(key, ME, 5) as flight:
        assert flight.role == "held"
        written = json.loads((cache_dir / "sandbox" / graph_flight.FOLDER / key[:40]).read_text())
        assert written == ME
    with graph_flight.gate(key, ME, 5) as again:  # released: the next compile holds it again
        assert again.role == "held"
    with graph_flight.gate(None, ME, 5) as none:
        assert none.role == "off" and none.reason == "no key for the graph"


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"not json at all \x1b[31m", False),
        (b'["a", "list"]', False),
        (json.dumps({"pid": "1; rm -rf /", "rank": "0", "host": 7}).encode(), False),
        (json.dumps({"pid": 42, "rank": [1], "host": "h" * 1000, "token": "secret"}).encode(), True),
    ],
    ids=["not-json", "a-list", "wrong-types", "long-host-and-a-secret"],
)
def test_what_the_lock_file_says_is_untrusted(cache_dir: Path, content: bytes, named: bool) -> None:
    """A file someone else wrote: only fields of the right type survive, and nothing else is kept."""
    key = "d" * 64
    folder = cache_dir / "sandbox" / graph_flight.FOLDER
    folder.mkdir(parents=True)
    holder = _holder(key, 300, cache_dir)
    try:
        (folder / key[:40]).write_bytes(content)  # after the holder wrote its own
        with graph_flight.gate(key, ME, 0.5) as flight:
            pass
    finally:
        holder.kill()
        holder.wait(10)
    who = flight.holder
    assert (who is not None) is named, who
    if named:
        assert set(who) == {"pid", "rank", "local_rank", "host"} and who["pid"] == 42  # no "token"
        assert who["rank"] is None and who["host"] == "h" * 255


def test_the_key_follows_the_graph_and_its_inputs() -> None:
    def traced(fn: object, *inputs: torch.Tensor) -> object:
        return torch.fx.symbolic_trace(fn)  # type: ignore[arg-type]

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2

    def g(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 3

    x = torch.randn(4, 8, requires_grad=True)
    key = graph_flight.graph_key(traced(f), [x], {})
    assert key == graph_flight.graph_key(traced(f), [torch.randn(4, 8, requires_grad=True)], {})
    assert key != graph_flight.graph_key(traced(g), [x], {})
    assert key != graph_flight.graph_key(traced(f), [torch.randn(4, 9, requires_grad=True)], {})
    assert key != graph_flight.graph_key(traced(f), [x.detach()], {})
    assert key != graph_flight.graph_key(traced(f), [x], {"max_autotune": True})
    with torch.no_grad():
        assert key != graph_flight.graph_key(traced(f), [x], {})


def test_the_gate_stands_only_where_it_helps() -> None:
    assert graph_flight.wanted(True, False, (), True)
    assert not graph_flight.wanted(False, False, (), True)  # one process: nobody to wait for
    assert not graph_flight.wanted(True, True, (), True)  # async / side by side: compile_fx does not wait
    assert not graph_flight.wanted(True, False, (3,), True)  # profile_steps passes AOTAutograd's cache by
    assert not graph_flight.wanted(True, False, (), False)  # no AOTAutograd cache to load the pair from


def test_a_second_thread_of_the_holder_does_not_wait(cache_dir: Path) -> None:
    """Dynamo lets its compile lock go while a worker compiles (two workers): a second thread of the
    same process at the same graph must not wait for a thread that may wait for it."""
    key = "e" * 64
    seen: list[graph_flight.Flight] = []
    with graph_flight.gate(key, ME, 30) as first:
        t = threading.Thread(target=lambda: seen.append(graph_flight.gate(key, ME, 30).__enter__()))
        t.start()
        t.join(5)
    assert first.role == "held" and not t.is_alive()
    assert seen[0].role == "off" and "another thread" in (seen[0].reason or "")
    with graph_flight.gate(key, ME, 30) as later:  # the first let go: the key is free again
        assert later.role == "held"

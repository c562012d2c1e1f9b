"""The composition root (``sandbox/runtime.py``): every sink gets every report through one
interface, ``sandbox.flush()`` flushes them all, and a sink that fails breaks nothing.

Each test builds its own ``Runtime`` (not this process's), with sinks that record what
they are handed: the interface is the thing under test, so they implement it for real.
"""

from __future__ import annotations

import os

from sandbox.options import Options
from sandbox.record.report import CompileReport
from sandbox.runtime import Runtime
from sandbox.sinks.base import Sink


class Recording(Sink):
    def __init__(self, name: str, flushed: bool = True) -> None:
        self.name = name
        self.consumed: list[str] = []
        self.updated: list[str] = []
        self.flushes: list[float | None] = []
        self.shut = 0
        self._flushed = flushed

    def consume(self, report: CompileReport) -> None:
        self.consumed.append(report.report_id)

    def update(self, report: CompileReport) -> None:
        self.updated.append(report.report_id)

    def flush(self, timeout_s: float | None = None) -> bool:
        self.flushes.append(timeout_s)
        return self._flushed

    def shutdown(self) -> None:
        self.shut += 1


class Broken(Sink):
    name = "broken"

    def consume(self, report: CompileReport) -> None:
        raise RuntimeError("this sink is broken")


def _report(rt: Runtime, i: int) -> CompileReport:
    return CompileReport(run_id=rt.run().run_id, compile_id=f"{i}/0", graph_kind="forward", outcome="isolated")


def test_every_sink_and_listener_gets_every_report_once_in_order() -> None:
    rt = Runtime()
    a, b = rt.add_sink(Recording("a")), rt.add_sink(Recording("b"))
    heard: list[str] = []
    rt.on_report(lambda r: heard.append(r.report_id))
    reports = [_report(rt, i) for i in range(3)]
    for r in reports:
        rt.publish(r)
    ids = [r.report_id for r in reports]
    assert a.consumed == b.consumed == heard == ids  # type: ignore[attr-defined]
    assert [r.graph_index for r in rt.reports()] == [0, 1, 2]
    assert rt.add_sink(Recording("a")) is a  # one sink per name


def test_a_failing_sink_breaks_neither_the_job_nor_the_other_sinks(caplog) -> None:
    rt = Runtime()
    rt.add_sink(Broken())
    after = rt.add_sink(Recording("after"))
    r = _report(rt, 0)
    rt.publish(r)  # no exception reaches the caller
    assert after.consumed == [r.report_id]  # type: ignore[attr-defined]
    assert "report consumer broken failed" in caplog.text


def test_a_sink_added_late_can_replay_the_reports_so_far() -> None:
    rt = Runtime()
    early = [_report(rt, i) for i in range(2)]
    for r in early:
        rt.publish(r)
    late = rt.add_sink(Recording("late"), replay=True)
    later = _report(rt, 2)
    rt.publish(later)
    assert late.consumed == [r.report_id for r in [*early, later]]  # type: ignore[attr-defined]


def test_republish_updates_the_sinks_and_flush_asks_them_all() -> None:
    rt = Runtime()
    ok, slow = rt.add_sink(Recording("ok")), rt.add_sink(Recording("slow", flushed=False))
    r = _report(rt, 0)
    rt.publish(r)
    rt.republish(r)
    assert ok.updated == slow.updated == [r.report_id]  # type: ignore[attr-defined]
    assert rt.flush(2.5) is False  # one sink did not get everything out in time
    assert ok.flushes == slow.flushes == [2.5]  # type: ignore[attr-defined]
    rt.shutdown()
    assert ok.shut == slow.shut == 1  # type: ignore[attr-defined]


def test_configure_wires_the_sinks_the_options_ask_for(tmp_path) -> None:
    """The store and torch's trace by default; no store with store off; metrics on a registry."""
    from prometheus_client import CollectorRegistry

    rt = Runtime()
    rt.configure(Options.resolve(options={"store": str(tmp_path / "runs.db")}, env={}))
    assert {"store", "torch_trace"} <= set(rt._sinks)
    rt.publish(_report(rt, 0))
    assert rt.flush(30)
    rt.shutdown()

    off = Runtime()
    off.configure(Options.resolve(options={"store": False}, env={}))
    assert "store" not in off._sinks

    reg = CollectorRegistry()
    off.publish(_report(off, 0))  # before metrics are on: counted once they are
    off.enable_metrics(Options.resolve(env={}), registry=reg)
    assert reg.get_sample_value("sandbox_compile_duration_seconds_count", _labels()) == 1


def _labels() -> dict[str, str]:
    return {"graph_kind": "forward", "outcome": "isolated", "device_type": "cpu"}


def test_a_forked_child_drops_the_parents_store_writer(tmp_path) -> None:
    rt = Runtime()
    rt.configure(Options.resolve(options={"store": str(tmp_path / "runs.db")}, env={}))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what it kept, then leaves at once
        rt.after_fork_in_child()
        os.write(write, (",".join(sorted(rt._sinks)) or "-").encode())
        os._exit(0)
    os.close(write)
    kept = os.read(read, 1000).decode()
    os.waitpid(pid, 0)
    rt.shutdown()
    assert kept == "torch_trace"


def test_the_runtime_loads_without_dynamo_or_inductor() -> None:
    """The runtime is imported at ``import torch`` when the workers are pre-started: it must not
    pull in dynamo or Inductor there (a second of the user's start-up on two cores)."""
    import subprocess
    import sys

    code = (
        "import sys, torch; import sandbox.runtime; "
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor.compile_fx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"

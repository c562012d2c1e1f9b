"""The one interface every consumer of reports implements.

The composition root (``sandbox/runtime.py``) makes the sinks the resolved options ask
for and hands each published report to every one of them; a sink knows nothing of the
runtime, the pool or any other sink. A sink that raises is logged and skipped: telemetry
never breaks the user's job.
"""

from __future__ import annotations

from sandbox.record.report import CompileReport

__all__ = ["Sink"]


class Sink:
    """A consumer of reports: ``consume`` each one; ``flush`` and ``shutdown`` at the end."""

    name = "sink"

    def consume(self, report: CompileReport) -> None:
        raise NotImplementedError

    def update(self, report: CompileReport) -> None:
        """A report consumed before was completed later (a GPU graph's kernel details after
        its first run); sinks that keep reports take the whole of it again."""

    def flush(self, timeout_s: float | None = None) -> bool:
        """Block until what was consumed so far is out; False if ``timeout_s`` passed first."""
        return True

    def shutdown(self) -> None:
        """At exit (or when the runtime lets go of the sink): flush and release what it holds."""

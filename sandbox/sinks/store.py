"""Writes reports to the run store off the user's thread.

A background writer commits whatever has queued up, in one transaction per batch.
``flush()`` returns once every report published so far is committed: after it,
a SIGKILL loses nothing. A store that cannot be opened or written costs one
warning; the reports stay available in memory (``sandbox.reports()``).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import warnings
from typing import Any

from sandbox.telemetry.report import CompileReport, Run

log = logging.getLogger("sandbox")


class StoreSink:
    def __init__(self, location: str | None, run: Run) -> None:
        self.location = location
        self.run = run
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending = 0
        self._done = threading.Condition()
        self._failed = False
        self.store: Any = None
        self.written = 0
        self.owner_pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name="sandbox-store-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def __call__(self, report: CompileReport) -> None:
        if os.getpid() != self.owner_pid:
            return  # a forked child (DataLoader worker): the parent's writer is not ours
        with self._done:
            self._pending += 1
        self._queue.put(report)

    def _open(self) -> bool:
        if self.store is not None:
            return True
        if self._failed:
            return False
        from sandbox.store import open_store

        try:
            self.store = open_store(self.location)
            self.store.put_run(self.run)
            return True
        except Exception as e:  # noqa: BLE001 - the training job must go on
            self._failed = True
            warnings.warn(
                f"sandbox: reports are not stored ({e}); they stay available in this process "
                f"(sandbox.reports()). Set SANDBOX_STORE to a writable path, or store=False to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
            return False

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                if self._open():
                    self.written += self.store.put_reports(batch)
            except Exception as e:  # noqa: BLE001
                if not self._failed:
                    self._failed = True
                    warnings.warn(f"sandbox: could not write reports to the store ({e})", RuntimeWarning, stacklevel=2)
                log.debug("sandbox: store write failed", exc_info=True)
            finally:
                with self._done:
                    self._pending -= len(batch)
                    self._done.notify_all()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Block until every report published so far is committed (or failed)."""
        if os.getpid() != self.owner_pid:
            return True
        with self._done:
            return self._done.wait_for(lambda: self._pending <= 0, timeout)

    def close(self) -> None:
        if os.getpid() != self.owner_pid:
            return  # never wait on (or tear down) the parent's writer from a forked child
        self.flush(timeout=30.0)
        self._queue.put(None)
        self._thread.join(timeout=5)
        if self.store is not None:
            try:
                self.store.close()
            except Exception:
                pass

"""Writes reports to the run store off the user's thread; loses none when the store is down.

A background writer commits whatever has queued up, in one transaction per batch.
When the store cannot be opened or written (a PostgreSQL server that is down or
unreachable), the batch goes to this process's spool file instead
(``sandbox/store/spool.py``: on disk, fsynced), and the writer tries the store again
after 1 s, 2 s, 4 s ... at most ``RETRY_MAX_S`` apart, also while no new report
arrives. Once the store answers, the writer uploads the spool - this process's file
and any left by earlier processes for the same store - and writes directly again.
At exit it tries the store once more; what is still spooled then waits for the next
process that writes to this store, or ``sandbox spool --upload``.

``flush()`` returns once every report published so far is committed or spooled: after
it, a SIGKILL loses nothing. Only when the spool itself cannot be written (say, a
read-only cache directory) do reports stay in memory alone (``sandbox.reports()``),
with one warning.

Nothing here waits on the store for long. The writer's own waits are bounded by the store
(``store/postgres.py``: connecting ``CONNECT_TIMEOUT_S``, each statement
``WRITER_STATEMENT_TIMEOUT_S`` here). ``flush()`` waits for the writer while it commits
reports; once it has gone ``FLUSH_WAIT_S`` without committing any (it waits on a store that
does not answer), flush spools copies of what it holds from the calling thread and returns.
At exit the writer gets ``EXIT_WAIT_S`` without a commit, then the exiting thread spools what
it still holds and lets the process end; the last try to reach the store is abandoned the
same way. A report spooled twice, or spooled and committed, is harmless: an upload skips what
the store has. A store that is down or silent costs one warning in all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
import warnings
from typing import Any

from sandbox.record.report import CompileReport, Run
from sandbox.sinks.base import Sink
from sandbox.store import default_location, open_store
from sandbox.store.location import masked, redact
from sandbox.store.spool import Spool, SpoolError, spool_dir, upload

log = logging.getLogger("sandbox")

RETRY_MIN_S = 1.0
RETRY_MAX_S = 15.0
# The writer's statements are small inserts: a server that takes longer is in trouble.
WRITER_STATEMENT_TIMEOUT_S = 5.0
FLUSH_WAIT_S = 5.0  # flush() waits this long for the writer before spooling what it holds
EXIT_WAIT_S = 2.0  # at exit, the writer may go this long without progress before the process ends


class StoreSink(Sink):
    """The run store's writer: a background thread, the spool while the store is down."""

    name = "store"

    def __init__(self, location: str | None, run: Run) -> None:
        self.location = location
        self.resolved = location or default_location()
        self.run = run
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending = 0
        self._done = threading.Condition()
        self.store: Any = None
        self.written = 0
        self.spooled = 0  # reports that went to the spool (uploaded later or not)
        self.uploaded = 0  # spooled reports (of any process) this writer uploaded
        self.spool = Spool(self.resolved)
        self._retry_at = 0.0
        self._backoff = RETRY_MIN_S
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()
        self._inflight: list[CompileReport] = []  # the batch the writer is handling (under _done)
        self._rescued: set[str] = set()  # digests of reports flush() or exit spooled for a stuck writer
        self._unsent = False  # reports of this process are in the spool, not yet uploaded
        self._reason = "cannot be written"  # why the last batch could not go to the store
        self.owner_pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name="sandbox-store-writer", daemon=True)
        self._thread.start()

    def consume(self, report: CompileReport) -> None:
        if os.getpid() != self.owner_pid:
            return  # a forked child (DataLoader worker): the parent's writer is not ours
        with self._done:
            self._pending += 1
        self._queue.put(report)

    # -- the store ----------------------------------------------------------------------
    def _warn(self, key: str, message: str) -> None:
        with self._warn_lock:  # the writer, flush() and exit may warn at once: each warning once
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=2)

    def _error(self, e: BaseException) -> str:
        """An exception on one line, with no piece of the location's password."""
        return redact(_one_line(e), self.resolved)

    def _connect(self, now: float | None = None) -> bool:
        """The store, opened (and the spool uploaded) if it answers; False while it does not."""
        if self.store is not None:
            return True
        now = time.monotonic() if now is None else now
        if now < self._retry_at:
            return False
        try:
            self.store = open_store(self.location, statement_timeout_s=WRITER_STATEMENT_TIMEOUT_S)
            self.store.put_run(self.run)
        except Exception as e:  # noqa: BLE001 - the training job must go on
            self._disconnect()
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, RETRY_MAX_S)
            self._reason = f"cannot be written ({self._error(e)})"
            log.debug("sandbox: store unavailable", exc_info=True)
            return False
        self._backoff = RETRY_MIN_S
        self.spool.close()  # our own file too: the upload takes it
        try:
            done = upload(self.store, self.resolved)
            self.uploaded += done.reports
            self._unsent = False
            for message in done.corrupt:
                self._warn("corrupt", f"sandbox: {message}")
        except Exception as e:  # noqa: BLE001 - the spool stays for the next try; the store is up
            # Not retried while idle: a lost connection shows at the next write, which reconnects
            # and uploads again; anything else waits for the next process or the CLI.
            self._unsent = False
            log.debug("sandbox: uploading the spool failed", exc_info=True)
            self._warn(
                "upload",
                f"sandbox: could not upload the spool {spool_dir(self.resolved)} into "
                f"{masked(self.resolved)} ({self._error(e)}); it stays for the next process or "
                f"`sandbox spool --upload`",
            )
        return True

    def _disconnect(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except Exception:
                pass
            self.store = None

    def _write(self, batch: list[CompileReport]) -> None:
        if self._connect():
            try:
                self.written += self.store.put_reports(batch)
                return
            except Exception as e:  # noqa: BLE001 - a lost connection, a server that went away
                log.debug("sandbox: store write failed", exc_info=True)
                self._disconnect()
                self._retry_at = time.monotonic()  # one immediate retry with the next batch
                self._reason = f"failed while writing ({self._error(e)})"
        self._to_spool(batch)

    def _to_spool(self, batch: list[CompileReport]) -> None:
        try:
            self.spool.append(self.run.to_dict(), [r.to_dict() for r in batch])
            self.spooled += len(batch)
            self._unsent = True
            self._warn_down()
        except SpoolError as e:
            self._warn_no_spool(e)

    def _warn_down(self) -> None:
        self._warn(
            "down",
            f"sandbox: the run store {masked(self.resolved)} {self._reason}; reports are kept in the spool "
            f"{spool_dir(self.resolved)} and uploaded when the store is back (by this process, the next one that "
            f"writes to it, or `sandbox spool --upload`)",
        )

    def _warn_no_spool(self, e: SpoolError) -> None:
        self._warn(
            "spool",
            f"sandbox: reports are not stored: the run store {masked(self.resolved)} "
            f"{self._reason}, and {e}; they stay available in this process "
            f"(sandbox.reports()). Set SANDBOX_STORE to a writable store, or store=False to silence this.",
        )

    def _held(self) -> list[tuple[str, dict[str, Any]]]:
        """What the writer holds (its batch, then the queue) and no rescue spooled yet, each
        with its digest: a report published again with more in it is new."""
        with self._done:
            held = list(self._inflight)
        with self._queue.mutex:
            held += [r for r in self._queue.queue if r is not None]
        out = []
        for report in held:
            d = report.to_dict()
            digest = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()
            if digest not in self._rescued:
                out.append((digest, d))
        return out

    def _rescue(self, waited_s: float) -> bool:
        """The writer is stuck on the store: spool copies of what it holds, from this thread.
        True once everything published so far is on disk."""
        held = self._held()
        if not held:
            return True
        self._reason = f"did not answer within {waited_s:g} s"
        try:
            self.spool.append(self.run.to_dict(), [d for _, d in held])
        except SpoolError as e:
            self._warn_no_spool(e)
            return False
        self._rescued.update(digest for digest, _ in held)
        self._unsent = True
        self._warn_down()
        return True

    # -- the writer thread ---------------------------------------------------------------
    def _waiting(self) -> bool:
        """Reports of this process sit in the spool: keep trying the store while idle."""
        return self._unsent

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(
                    timeout=max(self._retry_at - time.monotonic(), 0.05) if self._waiting() else None
                )
            except queue.Empty:
                try:
                    self._connect()
                except Exception:  # noqa: BLE001
                    log.debug("sandbox: retrying the store failed", exc_info=True)
                continue
            if item is None:
                if self._unsent:
                    self._retry_at = 0.0  # one last try, whatever the back-off says
                    try:
                        self._connect()
                    except Exception:  # noqa: BLE001
                        log.debug("sandbox: the last try of the store failed", exc_info=True)
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
            with self._done:
                self._inflight = batch
            try:
                self._write(batch)
            except Exception:  # noqa: BLE001 - never let the writer thread die
                log.warning("sandbox: storing reports failed", exc_info=True)
            finally:
                with self._done:
                    self._pending -= len(batch)
                    self._inflight = []
                    if self._pending <= 0:
                        self._rescued.clear()  # the writer caught up: nothing it holds was rescued
                    self._done.notify_all()

    def update(self, report: CompileReport) -> None:
        """The whole report again: the store upserts it by report id."""
        self.consume(report)

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Block until every report published so far is committed or spooled. While the writer
        commits reports this waits up to ``timeout_s`` (False when it passes); once it has gone
        ``FLUSH_WAIT_S`` without committing any (it waits on a store that does not answer), what
        it holds is spooled from here instead."""
        if os.getpid() != self.owner_pid:
            return True
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._done:
                if self._pending <= 0:
                    return True
                written = self.written
            if self._rescued and not self._held():
                return True  # the writer is still stuck, and all it holds was spooled already
            chunk = FLUSH_WAIT_S if end is None else min(FLUSH_WAIT_S, end - time.monotonic())
            with self._done:
                if chunk > 0 and self._done.wait_for(lambda: self._pending <= 0, chunk):
                    return True
                progressed = self.written != written
            if not progressed and chunk >= FLUSH_WAIT_S:
                return self._rescue(FLUSH_WAIT_S)
            if end is not None and time.monotonic() >= end:
                return False

    def shutdown(self) -> None:
        """At exit: the writer commits or spools what is queued and tries the store once more,
        for as long as it commits reports; ``EXIT_WAIT_S`` without committing any, and what it
        still holds is spooled from here and the process may end (the writer is a daemon thread)."""
        if os.getpid() != self.owner_pid:
            return  # never wait on (or tear down) the parent's writer from a forked child
        self._queue.put(None)
        while True:
            written = self.written
            self._thread.join(timeout=EXIT_WAIT_S)
            if not self._thread.is_alive() or self.written == written:
                break  # done, or no report committed for EXIT_WAIT_S: stuck on the store
        if self._thread.is_alive():
            # The writer still uses the spool and the connection: they end with the process.
            self._rescue(EXIT_WAIT_S)
            return
        self.spool.close()
        self._disconnect()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())

"""The local spool: reports that could not reach the run store yet, kept on disk.

When the store cannot be opened or written (a PostgreSQL server that is down or
unreachable), the store writer appends each batch to this process's spool file and
uploads the spool once the store is back: from the same process, or from any later
process that writes to the same store, or with ``sandbox spool --upload``.

Layout: ``$SANDBOX_SPOOL``, else ``~/.cache/torch-compile-sandbox/spool`` (under
``$XDG_CACHE_HOME`` when set), then one directory per store location (the first 16
hex digits of the location's SHA-256; ``location.txt`` inside names it with any
password masked - the spool never holds credentials), then one file per process:
``<run id>-<pid>-<random>.jsonl``. Each line is one JSON object: the first
``{"run": {...}}``, then ``{"report": {...}}`` per report. A batch is appended with
one ``write`` and ``fsync``ed, so it survives the process's exit and a crash of the
machine alike.

Concurrency: the writing process holds an exclusive ``flock`` on its file for as long
as it has it open (it creates the file under a temporary name, locks it, then renames
it into place, so no other process ever sees it unlocked while it is in use). An
uploader takes each file's lock without waiting, skips the files it cannot lock (their
writer is alive and uploads them itself), uploads, and deletes the file. Uploads are
upserts by run id and report id: a file uploaded twice (an upload cut off after its
commit) is harmless.

A file with a line that is not JSON, or not a run or a report the store can take, is corrupt: its
readable lines are uploaded,
the file is kept as ``<name>.corrupt`` for inspection, and the uploader reports it;
no other file is affected.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox import env
from sandbox.store.location import masked

# What the store needs of a run and of a report; a line without them is corrupt.
RUN_KEYS = ("run_id", "started_at")
REPORT_KEYS = ("report_id", "run_id", "graph_kind", "outcome", "started_at")

SUFFIX = ".jsonl"
CORRUPT = ".corrupt"
BATCH = 200  # reports per upload transaction


def spool_root(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if env.get("SANDBOX_SPOOL", environ):
        return env.get("SANDBOX_SPOOL", environ)
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "torch-compile-sandbox", "spool")


def spool_dir(location: str, root: str | None = None) -> str:
    key = hashlib.sha256(location.encode()).hexdigest()[:16]
    return os.path.join(root or spool_root(), key)


class SpoolError(RuntimeError):
    """The spool cannot be written (e.g. its directory is read-only)."""


class Spool:
    """This process's spool file for one store location."""

    def __init__(self, location: str, root: str | None = None) -> None:
        self.location = location
        self.dir = spool_dir(location, root)
        self.path: str | None = None
        self._fd: int | None = None
        self.reports = 0  # reports appended since the file was opened
        _open_spools.add(self)

    def append(self, run: dict[str, Any], reports: Iterable[dict[str, Any]]) -> None:
        lines = [json.dumps({"report": r}, sort_keys=True) for r in reports]
        try:
            if self._fd is None:
                self._create(run)
            assert self._fd is not None
            data = ("\n".join(lines) + "\n").encode() if lines else b""
            if data:
                os.write(self._fd, data)
                os.fsync(self._fd)
        except OSError as e:
            raise SpoolError(
                f"cannot write the spool {self.dir}: {e.strerror or e}; set SANDBOX_SPOOL to a writable directory"
            ) from e
        self.reports += len(lines)

    def _create(self, run: dict[str, Any]) -> None:
        os.makedirs(self.dir, exist_ok=True)
        label = os.path.join(self.dir, "location.txt")
        if not os.path.exists(label):
            with open(label, "w") as f:
                f.write(masked(self.location) + "\n")
        name = f"{run.get('run_id', 'run')}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (json.dumps({"run": run}, sort_keys=True) + "\n").encode())
        os.fsync(fd)
        self.path = os.path.join(self.dir, name)
        os.rename(tmp, self.path)
        self._fd = fd

    def close(self) -> None:
        """Release the file: from now on any uploader may take it."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
                self.path = None
                self.reports = 0

    @property
    def open(self) -> bool:
        return self._fd is not None


# A forked child (a DataLoader worker) must not keep the parent's spool file open: its
# copy of the descriptor would hold the file's lock after the parent lets go, and no
# uploader could take the file until the child exits.
_open_spools: weakref.WeakSet[Spool] = weakref.WeakSet()


def _forget_in_child() -> None:
    for spool in list(_open_spools):
        if spool._fd is not None:
            try:
                os.close(spool._fd)
            except OSError:
                pass
            spool._fd = None
            spool.path = None


os.register_at_fork(after_in_child=_forget_in_child)


@dataclass
class Upload:
    files: int = 0  # spool files uploaded and deleted
    runs: int = 0
    reports: int = 0
    busy: int = 0  # files skipped: their writer still holds them
    corrupt: list[str] = field(default_factory=list)  # one message per corrupt file

    def add(self, other: Upload) -> None:
        self.files += other.files
        self.runs += other.runs
        self.reports += other.reports
        self.busy += other.busy
        self.corrupt += other.corrupt


def _valid(entry: Any, keys: tuple[str, ...]) -> bool:
    return isinstance(entry, dict) and all(entry.get(k) is not None for k in keys) and isinstance(entry["run_id"], str)


def pending(location: str, root: str | None = None) -> list[dict[str, Any]]:
    """The spool files waiting for ``location``: path, bytes, reports (lines less the run line)."""
    d = spool_dir(location, root)
    out = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if not (name.endswith(SUFFIX) or name.endswith(SUFFIX + CORRUPT)) or name.startswith("."):
            continue
        path = os.path.join(d, name)
        try:
            with open(path, "rb") as f:
                lines = f.read().count(b"\n")
            out.append(
                {
                    "path": path,
                    "bytes": os.path.getsize(path),
                    "reports": max(lines - 1, 0),
                    "corrupt": name.endswith(CORRUPT),
                }
            )
        except OSError:
            continue  # uploaded and deleted meanwhile
    return out


def locations(root: str | None = None) -> list[tuple[str, str]]:
    """Every spooled store location: (spool directory, masked location)."""
    root = root or spool_root()
    out = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        label = os.path.join(root, name, "location.txt")
        if os.path.isfile(label):
            with open(label) as f:
                out.append((os.path.join(root, name), f.read().strip()))
    return out


def upload(store: Any, location: str, root: str | None = None) -> Upload:
    """Upload every spool file for ``location`` that no live process holds into ``store``
    (an open, writable ``Store``), deleting each once it is committed. A store error
    propagates and leaves the file in place for the next try."""
    d = spool_dir(location, root)
    result = Upload()
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if name.endswith(SUFFIX) and not name.startswith("."):
            result.add(_upload_file(store, os.path.join(d, name)))
    return result


def _upload_file(store: Any, path: str) -> Upload:
    result = Upload()
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return result  # another uploader took it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            result.busy = 1
            return result
        if os.fstat(fd).st_nlink == 0:
            return result  # uploaded and deleted by another process before we locked it
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        runs, reports, bad = [], [], []
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if isinstance(entry, dict) and _valid(entry.get("run"), RUN_KEYS):
                    runs.append(entry["run"])
                elif isinstance(entry, dict) and _valid(entry.get("report"), REPORT_KEYS):
                    reports.append(entry["report"])
                else:
                    raise ValueError("neither a run nor a report")
            except ValueError as e:
                bad.append(f"line {number}: {e}")
        for run in runs:
            store.put_run(run)
        for i in range(0, len(reports), BATCH):
            store.put_reports(reports[i : i + BATCH])
        result.runs, result.reports = len(runs), len(reports)
        if bad:
            kept = path + CORRUPT
            os.rename(path, kept)
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            result.corrupt.append(
                f"spool file {path} is corrupt ({bad[0]}{more}); its {len(reports)} readable reports were uploaded "
                f"and it was kept as {kept}: inspect it, then delete it"
            )
        else:
            os.unlink(path)
            result.files = 1
        return result
    finally:
        os.close(fd)

"""The local spool: reports that could not reach the run store yet, kept on disk.

When the store cannot be opened or written (a PostgreSQL server that is down or
unreachable), the store writer appends each batch to this process's spool file and
uploads the spool once the store is back: from the same process, or from any later
process that writes to the same store, or with ``sandbox spool --upload``.

Layout: ``$SANDBOX_SPOOL``, else ``~/.cache/torch-compile-sandbox/spool`` (under
``$XDG_CACHE_HOME`` when set), then one directory per store location (the first 16
hex digits of the SHA-256 of the location with its password masked, so neither the name
nor ``location.txt`` inside, which names the masked location, depends on a credential),
then one file per process: ``<run id>-<pid>-<random>.jsonl``. Directories are made
0700 and files 0600: reports are the user's code and data. Each line is one JSON object: the first
``{"run": {...}}``, then ``{"report": {...}}`` per report. A batch is appended with
one ``write`` and ``fsync``ed, so it survives the process's exit and a crash of the
machine alike.

Concurrency: the writing process holds an exclusive ``flock`` on its file for as long
as it has it open (it creates the file under a temporary name, locks it, then renames
it into place, so no other process ever sees it unlocked while it is in use). An
uploader takes each file's lock without waiting, skips the files it cannot lock (their
writer is alive and uploads them itself), uploads, and deletes the file. Uploads are
upserts by run id and report id: a file uploaded twice (an upload cut off after its
commit) is harmless. An upload never replaces what the store has: a run or report whose
id is there already is skipped (a spool file is older than the store, or not to be trusted
over it).

Trust: only regular files (no symbolic links, FIFOs or devices) owned by the current user
are listed or uploaded; a spool directory of another user is never written into.

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
import stat
import threading
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
    key = hashlib.sha256(masked(location).encode()).hexdigest()[:16]
    return os.path.join(root or spool_root(), key)


def _spool_dirs(location: str, root: str | None = None) -> list[str]:
    """The location's spool directory, and the one earlier versions named after the unmasked
    location (a hash of its password), while it still exists: what is in it is uploaded too."""
    legacy = os.path.join(root or spool_root(), hashlib.sha256(location.encode()).hexdigest()[:16])
    current = spool_dir(location, root)
    return [current] + ([legacy] if legacy != current and os.path.isdir(legacy) else [])


def _trusted(st: os.stat_result) -> bool:
    """A regular file (not a link, FIFO or device) of this user: another user's file is never
    read into the store, nor a link to something else."""
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()


def _own_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def _read_small(path: str, limit: int = 64 * 1024) -> str | None:
    """A trusted file's text (``location.txt``), never through a link; None if not trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not _trusted(os.fstat(fd)):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


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
        # The store writer and, when the writer is stuck on the store, flush() and exit append.
        self._lock = threading.Lock()
        _open_spools.add(self)

    def append(self, run: dict[str, Any], reports: Iterable[dict[str, Any]]) -> None:
        lines = [json.dumps({"report": r}, sort_keys=True) for r in reports]
        with self._lock:
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

    def _make_dir(self) -> None:
        """The spool directory, 0700 and this user's: one made by someone else (in a shared
        SANDBOX_SPOOL) could be read by them, so it is refused."""
        root = os.path.dirname(self.dir)
        if not os.path.isdir(root):
            os.makedirs(root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.dir, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(self.dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise OSError(f"{self.dir} is not a directory of this user")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(self.dir, 0o700)  # made by an earlier version, open to others

    def _label(self) -> None:
        """``location.txt``: the masked location, 0600, replaced whole when it says anything else
        (an earlier version's, which may show a password that version could not mask)."""
        label = os.path.join(self.dir, "location.txt")
        text = masked(self.location) + "\n"
        if _read_small(label) == text:
            return
        tmp = os.path.join(self.dir, f".location.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.replace(tmp, label)

    def _create(self, run: dict[str, Any]) -> None:
        self._make_dir()
        self._label()
        name = f"{run.get('run_id', 'run')}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (json.dumps({"run": run}, sort_keys=True) + "\n").encode())
        os.fsync(fd)
        self.path = os.path.join(self.dir, name)
        os.rename(tmp, self.path)
        self._fd = fd

    def close(self) -> None:
        """Release the file: from now on any uploader may take it."""
        with self._lock:
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
        spool._lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_forget_in_child)


@dataclass
class Upload:
    files: int = 0  # spool files uploaded and deleted
    runs: int = 0  # runs written into the store
    reports: int = 0  # reports written into the store
    skipped: int = 0  # runs and reports the store had already (never replaced)
    busy: int = 0  # files skipped: their writer still holds them
    corrupt: list[str] = field(default_factory=list)  # one message per corrupt file

    def add(self, other: Upload) -> None:
        self.files += other.files
        self.runs += other.runs
        self.reports += other.reports
        self.skipped += other.skipped
        self.busy += other.busy
        self.corrupt += other.corrupt


def _valid(entry: Any, keys: tuple[str, ...]) -> bool:
    return (
        isinstance(entry, dict)
        and all(entry.get(k) is not None for k in keys)
        and all(isinstance(entry[k], str) for k in keys if k.endswith("_id"))
    )


def _spool_files(d: str, suffixes: tuple[str, ...]) -> list[tuple[str, os.stat_result]]:
    """The trusted files of one spool directory ending in ``suffixes``, with their stat."""
    if not _own_dir(d):
        return []
    out = []
    for name in sorted(os.listdir(d)):
        if name.startswith(".") or not name.endswith(suffixes):
            continue
        path = os.path.join(d, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue  # uploaded and deleted meanwhile
        if _trusted(st):
            out.append((path, st))
    return out


def pending(location: str, root: str | None = None) -> list[dict[str, Any]]:
    """The spool files waiting for ``location``: path, bytes, reports (lines less the run line)."""
    out = []
    for d in _spool_dirs(location, root):
        for path, st in _spool_files(d, (SUFFIX, SUFFIX + CORRUPT)):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # uploaded and deleted meanwhile
            try:
                if not _trusted(os.fstat(fd)):
                    continue
                with os.fdopen(os.dup(fd), "rb") as f:
                    lines = f.read().count(b"\n")
            finally:
                os.close(fd)
            out.append(
                {
                    "path": path,
                    "bytes": st.st_size,
                    "reports": max(lines - 1, 0),
                    "corrupt": path.endswith(CORRUPT),
                }
            )
    return out


def locations(root: str | None = None) -> list[tuple[str, str]]:
    """Every spooled store location: (spool directory, masked location). Masked again on the
    way out: a label an earlier version wrote may show a password."""
    root = root or spool_root()
    out = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        d = os.path.join(root, name)
        text = _read_small(os.path.join(d, "location.txt")) if _own_dir(d) else None
        if text is not None:
            out.append((d, masked(text.strip())))
    return out


def upload(store: Any, location: str, root: str | None = None) -> Upload:
    """Upload every spool file for ``location`` that no live process holds into ``store``
    (an open, writable ``Store``), deleting each once it is committed. A store error
    propagates and leaves the file in place for the next try."""
    result = Upload()
    for d in _spool_dirs(location, root):
        for path, _ in _spool_files(d, (SUFFIX,)):
            result.add(_upload_file(store, path))
    return result


def waiting(location: str, root: str | None = None) -> bool:
    """Whether any spool file (not a corrupt one) waits for ``location``."""
    return any(not f["corrupt"] for f in pending(location, root))


def upload_location(location: str, root: str | None = None) -> Upload:
    """``sandbox spool --upload``: upload what waits for ``location``. With nothing waiting the
    store is only opened read-only: it is checked (a foreign or missing one is refused) and
    nothing is created, so a mistyped location makes no store (nor its folder)."""
    from sandbox.store import open_store  # the package's entry point; it does not import this module

    if not waiting(location, root):
        open_store(location, readonly=True).close()
        return Upload()
    store = open_store(location)
    try:
        return upload(store, location, root)
    finally:
        store.close()


def _existing(store: Any, table: str, key: str, ids: list[str]) -> set[str]:
    """The ids of ``ids`` that ``table`` has already."""
    found: set[str] = set()
    unique = sorted(set(ids))
    for i in range(0, len(unique), 500):
        chunk = unique[i : i + 500]
        marks = ",".join("?" * len(chunk))
        found.update(r[0] for r in store._query(f"SELECT {key} FROM {table} WHERE {key} IN ({marks})", chunk))
    return found


def _upload_file(store: Any, path: str) -> Upload:
    result = Upload()
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return result  # another uploader took it
    except OSError:
        return result  # a link put in its place: never followed
    try:
        st = os.fstat(fd)
        if not _trusted(st):
            return result
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            result.busy = 1
            return result
        if os.fstat(fd).st_nlink == 0:
            return result  # uploaded and deleted by another process before we locked it
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        runs: dict[str, dict[str, Any]] = {}
        reports: dict[str, dict[str, Any]] = {}  # by id: a later line is a later version of the same report
        bad = []
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if isinstance(entry, dict) and _valid(entry.get("run"), RUN_KEYS):
                    runs[entry["run"]["run_id"]] = entry["run"]
                elif isinstance(entry, dict) and _valid(entry.get("report"), REPORT_KEYS):
                    reports[entry["report"]["report_id"]] = entry["report"]
                else:
                    raise ValueError("neither a run nor a report")
            except ValueError as e:
                bad.append(f"line {number}: {e}")
        # Never replace what the store has: check what exists, write only the rest.
        known_runs = _existing(store, "runs", "run_id", list(runs))
        known_reports = _existing(store, "reports", "report_id", list(reports))
        new_runs = [r for run_id, r in runs.items() if run_id not in known_runs]
        new_reports = [r for report_id, r in reports.items() if report_id not in known_reports]
        for run in new_runs:
            store.put_run(run)
        for i in range(0, len(new_reports), BATCH):
            store.put_reports(new_reports[i : i + BATCH])
        result.runs, result.reports = len(new_runs), len(new_reports)
        result.skipped = len(runs) - len(new_runs) + len(reports) - len(new_reports)
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

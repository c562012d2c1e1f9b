"""The embedded default store: one SQLite file in WAL mode.

Several processes may write at once (WAL, a busy timeout, short transactions).
A new store is private (mode 0600, and SQLite gives its ``-wal`` and ``-shm`` files
the mode of the store; a folder it creates is 0700): it holds argv, working
directories and generated code.

Nothing is written before :meth:`Store.admit` has read the file, on a connection
that cannot write, and found a run store (or an empty database) in it: a corrupt
file or another program's database is reported, never replaced or converted.

Reading writes nothing, not even a ``-wal`` or ``-shm`` file, and works from a folder
the reader cannot write: SQLite's read-only mode (``mode=ro``) when a writer's
``-wal`` file is there (SQLite reads it, and its ``-shm``, without writing them),
else ``immutable=1`` (a read-only ``mode=ro`` connection to a WAL store would
create both files, or fail in a read-only folder). An immutable connection assumes
the file does not change: before and after each read the store checks that no
writer came meanwhile (a ``-wal`` file, a changed file), and reads again on a
fresh connection if one did, so a long-lived reader (the dashboard) sees new runs.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from sandbox.store.base import Store, StoreError

_READ_ATTEMPTS = 5


# File systems that hold no user files: a store path there is a typo, whatever os.access says (root
# may "write" /proc, and creating a file there still fails).
_VIRTUAL_FS = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "securityfs",
        "tracefs",
        "configfs",
        "pstore",
        "bpf",
        "mqueue",
        "hugetlbfs",
        "fusectl",
        "binfmt_misc",
        "autofs",
    }
)


def _file_system(path: str) -> str | None:
    """The type of the file system ``path`` lives on, from /proc/self/mounts (None where unknown)."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) > 2]
    except OSError:
        return None
    best, kind = "", None
    for point, fs in mounts:
        point = point.replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fs
    return kind


def folder_problem(path: str) -> str | None:
    """Why the folder of ``path`` cannot hold a store, in words; None when it can (or may be created)."""
    folder = os.path.dirname(path)
    existing = folder
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing)
    fs = _file_system(existing or "/")
    if fs in _VIRTUAL_FS:
        return f"{existing} is on a virtual file system ({fs}) that holds no files"
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"its folder {folder} does not exist and {existing} is not writable by this user"
        return None
    if not os.path.isdir(folder):
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable by this user"
    return None


class SQLiteStore(Store):
    placeholder = "?"

    def __init__(self, path: str, readonly: bool = False) -> None:
        super().__init__()
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = self.path
        self.readonly = readonly
        self._immutable = False  # the read connection assumes an unchanging file: checked at each read
        self._signature: tuple[int, ...] | None = None
        try:
            if os.path.isdir(self.path):
                raise StoreError(
                    f"store {self.path} is a directory, not a store file: point --store or SANDBOX_STORE at a file, "
                    f"e.g. {os.path.join(self.path, 'runs.db')}"
                )
            if readonly:
                if not os.path.exists(self.path):
                    raise StoreError(self._missing())
                self._connect_readonly()
            else:
                directory = os.path.dirname(self.path)
                if not os.path.isdir(directory) and not folder_problem(self.path):
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                self._prepare_file()
                # Whose file it is, decided on a connection that cannot write, before any write.
                self._connect_readonly()
                self.admit()
                self.close()
                self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                self._immutable = False
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(
                f"store {self.path} is not a readable SQLite database ({e}); it was left untouched. "
                f"Move it aside or point SANDBOX_STORE at another file."
            ) from e
        except OSError as e:
            self.close()
            why = folder_problem(self.path) or e.strerror or str(e)
            raise StoreError(f"cannot create store {self.path}: {why}; set SANDBOX_STORE to a writable path") from e
        except StoreError:
            self.close()  # a refused store keeps no connection open
            raise
        try:
            self.migrate()
        except sqlite3.OperationalError as e:
            self.close()
            raise StoreError(
                f"store {self.path} cannot be written ({e}); check its permissions, or open it read-only"
            ) from e
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(
                f"store {self.path} is not a readable SQLite database ({e}); it was left untouched. "
                f"Move it aside or point SANDBOX_STORE at another file."
            ) from e
        except StoreError:
            self.close()
            raise

    # -- reading without writing ----------------------------------------------------------
    def _connect_readonly(self) -> None:
        """A connection that writes nothing: ``mode=ro`` beside a writer's WAL, else immutable."""
        uri = pathlib.Path(self.path).as_uri() + "?mode=ro"
        self._immutable = self._wal_mode() and not os.path.exists(self.path + "-wal")
        if self._immutable:
            self._signature = self._stat()
            uri += "&immutable=1"
        self.conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()  # a corrupt file fails here

    def _wal_mode(self) -> bool:
        """The file's header says WAL (read and write versions 2, bytes 18 and 19)."""
        try:
            with open(self.path, "rb") as f:
                header = f.read(20)
        except OSError:
            return False
        return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02"

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _changed(self) -> bool:
        """A writer came since the immutable connection opened: its WAL, or a changed file."""
        return os.path.exists(self.path + "-wal") or self._stat() != self._signature

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        if not self._immutable:
            return super()._query(statement, params)
        with self._lock:
            for _ in range(_READ_ATTEMPTS):
                if self._changed():
                    self._reconnect()
                    if not self._immutable:
                        return super()._query(statement, params)
                try:
                    rows = super()._query(statement, params)
                except sqlite3.DatabaseError:
                    if not self._changed():
                        raise
                    continue  # a checkpoint moved pages under the read: read again
                if not self._changed():
                    return rows
        raise StoreError(f"store {self.path} kept changing while it was read; try again")

    def admit(self) -> dict[str, str] | None:
        """As every store decides, on an immutable connection read again if a writer came meanwhile
        (a torn read must not make a store look foreign or corrupt)."""
        for _ in range(_READ_ATTEMPTS):
            try:
                meta = super().admit()
            except (sqlite3.DatabaseError, StoreError):
                if not (self._immutable and self._changed()):
                    raise
                self._reconnect()
                continue
            if not (self._immutable and self._changed()):
                return meta
            self._reconnect()
        raise StoreError(f"store {self.path} kept changing while it was read; try again")

    def _reconnect(self) -> None:
        self.close()
        try:
            self._connect_readonly()
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"store {self.path} could not be read again after a writer changed it ({e})") from e

    # -- creating -------------------------------------------------------------------------
    def _missing(self) -> str:
        """What to tell a reader of a store that is not there: make one only where one can be made."""
        problem = folder_problem(self.path)
        if problem:
            return f"no store at {self.path}: {problem}; check the path (--store or SANDBOX_STORE)"
        if not os.path.isdir(os.path.dirname(self.path)):
            return (
                f"no store at {self.path}: its folder {os.path.dirname(self.path)} does not exist; check the path, "
                "or make a first run there with `sandbox demo`"
            )
        return f"no store at {self.path}: make a first run with `sandbox demo`, or set SANDBOX_STORE"

    def _prepare_file(self) -> None:
        """Refuse what must not be written; create a missing store atomically."""
        directory = os.path.dirname(self.path)
        problem = folder_problem(self.path)
        if problem or not os.access(directory, os.W_OK):
            raise StoreError(
                f"cannot write store {self.path}: {problem or f'its folder {directory} is read-only'}; "
                "set SANDBOX_STORE to a writable path"
            )
        if not os.path.exists(self.path):
            self._create()
        elif os.path.getsize(self.path) == 0:
            raise StoreError(
                f"store {self.path} is an empty file, not a run store (a store is never empty); it was left untouched. "
                f"Delete it to start a fresh store, or point SANDBOX_STORE at another file."
            )
        if not os.access(self.path, os.W_OK):
            raise StoreError(
                f"store {self.path} is read-only for this user; it was left untouched. Fix its permissions, or point "
                f"SANDBOX_STORE at a writable file (reading it works: `sandbox runs`, the dashboard)."
            )

    def _create(self) -> None:
        """Build a new store under a temporary name, then link it into place: other
        processes see a complete store or none, never an empty file (refused above).
        The file is made 0600 before SQLite opens it; its WAL files take its mode."""
        tmp = f"{self.path}.{os.getpid()}-{threading.get_ident()}.new"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self.conn = sqlite3.connect(tmp, timeout=30, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.migrate()
            self.close()  # the last connection checkpoints: the file alone is the whole store
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process made it first
            except OSError:  # a file system without hard links
                if not os.path.exists(self.path):
                    os.replace(tmp, self.path)
        finally:
            self.close()
            for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
                if os.path.exists(leftover):
                    os.unlink(leftover)

    # -- the catalogue and the dialect ------------------------------------------------------
    def _tables(self) -> dict[str, frozenset[str]]:
        with self._lock:
            names = [
                r[0]
                for r in self.conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite!_%' "
                    "ESCAPE '!'"
                )
            ]
            return {
                str(n).lower(): frozenset(
                    str(c[0]).lower() for c in self.conn.execute("SELECT name FROM pragma_table_info(?)", (n,))
                )
                for n in names
            }

    def _insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def _upsert(self, table: str, key: str, columns: Sequence[str]) -> str:
        return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

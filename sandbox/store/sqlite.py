"""The embedded default store: one SQLite file in WAL mode.

Several processes may write at once (WAL, a busy timeout, short transactions).
Read-only opening uses SQLite's own read-only URI mode, so nothing is written,
not even a journal, and a corrupt or foreign file is reported, never replaced.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence

from sandbox.store.base import Store, StoreError


class SQLiteStore(Store):
    placeholder = "?"

    def __init__(self, path: str, readonly: bool = False) -> None:
        super().__init__()
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = self.path
        self.readonly = readonly
        try:
            if readonly:
                if not os.path.exists(self.path):
                    raise StoreError(
                        f"no store at {self.path}: make a first run with `sandbox demo`, or set SANDBOX_STORE"
                    )
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
                self._refuse_foreign()
            else:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._prepare_file()
                self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                self._refuse_foreign()
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=30000")
            self.conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(
                f"store {self.path} is not a readable SQLite database ({e}); it was left untouched. "
                f"Move it aside or point SANDBOX_STORE at another file."
            ) from e
        except OSError as e:
            raise StoreError(f"cannot create store {self.path}: {e}; set SANDBOX_STORE to a writable path") from e
        try:
            self.migrate()
        except sqlite3.OperationalError as e:
            self.close()
            raise StoreError(
                f"store {self.path} cannot be written ({e}); check its permissions, or open it read-only"
            ) from e
        except StoreError:
            self.close()  # a refused store keeps no connection (nor WAL files) open
            raise

    def _prepare_file(self) -> None:
        """Refuse what must not be written; create a missing store atomically."""
        directory = os.path.dirname(self.path)
        if not os.access(directory, os.W_OK):
            raise StoreError(
                f"cannot write store {self.path}: directory {directory} is read-only; set SANDBOX_STORE to a "
                "writable path"
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
        processes see a complete store or none, never an empty file (refused above)."""
        tmp = f"{self.path}.{os.getpid()}-{threading.get_ident()}.new"
        try:
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

    def _refuse_foreign(self) -> None:
        """A SQLite database of something else is never converted or written into."""
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            self.close()
            raise StoreError(
                f"{self.path} is a SQLite database of something else (tables: {', '.join(sorted(tables)[:5])}), "
                f"not a run store; it was left untouched. Point SANDBOX_STORE at another file."
            )

    def _insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def _upsert(self, table: str, key: str, columns: Sequence[str]) -> str:
        return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

"""The embedded default store: one SQLite file in WAL mode.

Several processes may write at once (WAL, a busy timeout, short transactions).
Read-only opening uses SQLite's own read-only URI mode, so nothing is written,
not even a journal, and a corrupt or foreign file is reported, never replaced.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Sequence

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
                    raise StoreError(f"no store at {self.path}: make a first run with `sandbox demo`, or set SANDBOX_STORE")
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            else:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
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

    def _insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def _upsert(self, table: str, key: str, columns: Sequence[str]) -> str:
        return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

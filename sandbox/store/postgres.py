"""The team store: one PostgreSQL database that every job and the dashboard share."""

from __future__ import annotations

from collections.abc import Sequence

from sandbox.store.base import Store, StoreError
from sandbox.store.location import masked


class PostgresStore(Store):
    placeholder = "%s"

    def __init__(self, url: str, readonly: bool = False) -> None:
        super().__init__()
        self.url = masked(url)
        self.readonly = readonly
        try:
            import psycopg  # optional dependency: only for a PostgreSQL store
        except ImportError as e:
            raise StoreError(f"store {self.url} needs the PostgreSQL driver: pip install 'psycopg[binary]'") from e
        try:
            self.conn = psycopg.connect(url, connect_timeout=10)
            if readonly:
                self.conn.read_only = True
        except psycopg.Error as e:
            raise StoreError(
                f"cannot reach PostgreSQL store {self.url}: {str(e).strip()}; check the URL, the server and the "
                "credentials"
            ) from e
        self.migrate()

    def _end_read(self) -> None:
        self.conn.rollback()

    def migrate(self) -> None:
        # Several ranks may create the schema at once: serialise on an advisory lock.
        if self.readonly:
            return super().migrate()
        with self._lock:
            cur = self.conn.cursor()
            cur.execute("SELECT pg_advisory_lock(424242)")
            try:
                super().migrate()
            finally:
                cur.execute("SELECT pg_advisory_unlock(424242)")
                self.conn.commit()

    def _insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        placeholders = ", ".join("?" * len(columns))
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING"

    def _upsert(self, table: str, key: str, columns: Sequence[str]) -> str:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )

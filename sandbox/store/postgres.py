"""The team store: one PostgreSQL database that every job and the dashboard share.

Every network wait is bounded, so a server that is down, unreachable or silent (it accepts
the TCP connection and never answers) costs a known time, never a hung process:

- connecting: libpq's ``connect_timeout``, ``CONNECT_TIMEOUT_S`` unless the location or
  ``PGCONNECT_TIMEOUT`` sets one (per host tried, as libpq counts it);
- each statement: the server's ``statement_timeout``, ``statement_timeout_s`` (default
  ``STATEMENT_TIMEOUT_S``; the training process's writer passes a shorter one) unless the
  location's ``options`` or ``PGOPTIONS`` set one; and on the client, that bound plus
  ``NO_ANSWER_GRACE_S`` for each wait on the server, after which the connection is closed:
  a server that stopped answering cannot cancel its own statement. A user who sets
  ``statement_timeout=0`` (no limit) gets no client bound either.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from sandbox.store.base import Store, StoreError
from sandbox.store.location import masked, redact

CONNECT_TIMEOUT_S = 3  # whole seconds (libpq's unit); libpq and psycopg take 2 at least
STATEMENT_TIMEOUT_S = 60.0  # the CLI and the dashboard: a slow query over a big store still finishes
NO_ANSWER_GRACE_S = 2.0  # the client waits this much longer than the server's own timeout

_USER_STATEMENT_TIMEOUT = re.compile(r"statement_timeout\s*=\s*'?(\d+(?:\.\d+)?)\s*(ms|s|min|h)?", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}


def _user_statement_timeout(options: str) -> float | None:
    """Seconds of a ``-c statement_timeout=...`` the user gave (milliseconds without a unit, as
    PostgreSQL reads it; 0 is no limit); None when none is given or it cannot be read."""
    m = _USER_STATEMENT_TIMEOUT.search(options)
    if not m:
        return None
    return float(m.group(1)) * _UNIT_S[(m.group(2) or "ms").lower()]


def _connection_class() -> Any:
    """psycopg's connection with a bound on each wait for the server."""
    import psycopg  # optional dependency: only for a PostgreSQL store

    parameters = inspect.signature(psycopg.Connection.wait).parameters
    if "timeout" not in parameters or "interval" not in parameters:
        return psycopg.Connection  # psycopg < 3.2: the server's statement_timeout alone bounds a statement
    default_interval = parameters["interval"].default

    class BoundedConnection(psycopg.Connection):  # type: ignore[misc, type-arg]
        # None: the user turned the statement timeout off, and waits as long as the server takes.
        answer_within_s: float | None = STATEMENT_TIMEOUT_S + NO_ANSWER_GRACE_S

        def wait(self, gen: Any, interval: float = default_interval, timeout: float | None = None) -> Any:
            bound = self.answer_within_s if timeout is None else timeout
            t0 = time.monotonic()
            try:
                return super().wait(gen, interval=interval, timeout=bound)
            except psycopg.OperationalError:
                if timeout is None and bound is not None and time.monotonic() - t0 >= bound:
                    # The connection is mid-statement in an unknown state: close it, so nothing
                    # else (a rollback, an unlock) waits on the silent server again.
                    self.close()
                    raise psycopg.OperationalError(
                        f"the server did not answer within {bound:g} s; the connection was closed"
                    ) from None
                raise

    return BoundedConnection


class PostgresStore(Store):
    placeholder = "%s"

    def __init__(self, location: str, readonly: bool = False, statement_timeout_s: float | None = None) -> None:
        super().__init__()
        self.url = masked(location)
        self.readonly = readonly
        try:
            import psycopg  # optional dependency: only for a PostgreSQL store
            from psycopg.conninfo import conninfo_to_dict  # the same optional dependency
        except ImportError as e:
            raise StoreError(f"store {self.url} needs the PostgreSQL driver: pip install 'psycopg[binary]'") from e
        connection = _connection_class()
        try:
            params = conninfo_to_dict(location)
            kwargs: dict[str, Any] = {}
            if params.get("connect_timeout") is None and not os.environ.get("PGCONNECT_TIMEOUT"):
                kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
            options = str(params.get("options") or os.environ.get("PGOPTIONS") or "")
            statement_s = _user_statement_timeout(options)  # the user's own wins, 0 (no limit) included
            if "statement_timeout" not in options:
                statement_s = statement_timeout_s or STATEMENT_TIMEOUT_S
                # Merged into the user's options (a keyword argument replaces them whole).
                kwargs["options"] = f"{options} -c statement_timeout={int(statement_s * 1000)}".strip()
            elif statement_s is None:
                statement_s = statement_timeout_s or STATEMENT_TIMEOUT_S  # one we cannot read: bound by ours
            self.conn = connection.connect(location, **kwargs)
            if hasattr(self.conn, "answer_within_s"):
                self.conn.answer_within_s = statement_s + NO_ANSWER_GRACE_S if statement_s else None
            if readonly:
                self.conn.read_only = True
        except psycopg.Error as e:
            # From None: a driver's message (and so its traceback) may quote the location.
            raise StoreError(
                f"cannot reach PostgreSQL store {self.url}: {redact(str(e).strip(), location)}; check the URL, the "
                "server and the credentials"
            ) from None
        try:
            self.migrate()
        except psycopg.Error as e:
            self.close()
            raise StoreError(
                f"PostgreSQL store {self.url} failed while opening: {redact(' '.join(str(e).split()), location)}"
            ) from None

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
                if not self.conn.closed:  # closed: the server stopped answering, and the lock went with it
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

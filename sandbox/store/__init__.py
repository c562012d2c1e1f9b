"""The run store: where reports outlive the process.

``open_store()`` with no argument opens the default: ``SANDBOX_STORE`` if set, else
a SQLite file in the user's cache directory. A ``postgresql://`` URL or a libpq keyword
string (``host=db dbname=runs ...``) opens a shared PostgreSQL database; any other URL
(a mistyped scheme) is refused, never taken for a SQLite file name.
"""

from __future__ import annotations

from sandbox.store.base import Store, StoreError
from sandbox.store.location import default_location, is_postgresql, looks_like_url, masked, redact, secrets
from sandbox.store.sqlite import SQLiteStore

__all__ = ["Store", "StoreError", "default_location", "is_postgresql", "masked", "open_store", "redact", "secrets"]


def open_store(location: str | None = None, readonly: bool = False, statement_timeout_s: float | None = None) -> Store:
    """The store at ``location``. ``statement_timeout_s`` bounds each PostgreSQL statement
    (default: ``postgres.STATEMENT_TIMEOUT_S``); a SQLite store ignores it."""
    location = location or default_location()
    if is_postgresql(location):
        from sandbox.store.postgres import PostgresStore  # imports psycopg: only for a PostgreSQL store

        return PostgresStore(location, readonly=readonly, statement_timeout_s=statement_timeout_s)
    if looks_like_url(location):
        raise StoreError(
            f"store {masked(location)}: not a store location; a PostgreSQL store is a postgresql:// URL or a "
            "libpq keyword string (host=... dbname=...), a SQLite store a file path"
        )
    return SQLiteStore(location.removeprefix("file://"), readonly=readonly)

"""The run store: where reports outlive the process.

``open_store()`` with no argument opens the default: ``SANDBOX_STORE`` if set, else
a SQLite file in the user's cache directory. A ``postgresql://`` URL opens a shared
PostgreSQL database.
"""

from __future__ import annotations

from sandbox.store.base import Store, StoreError
from sandbox.store.location import default_location, masked
from sandbox.store.sqlite import SQLiteStore

__all__ = ["Store", "StoreError", "default_location", "masked", "open_store"]


def open_store(location: str | None = None, readonly: bool = False) -> Store:
    location = location or default_location()
    if location.startswith(("postgresql://", "postgres://")):
        from sandbox.store.postgres import PostgresStore  # imports psycopg: only for a PostgreSQL store

        return PostgresStore(location, readonly=readonly)
    if "://" in location and not location.startswith("file://"):
        raise StoreError(f"store {location!r}: expected a file path or a postgresql:// URL")
    return SQLiteStore(location.removeprefix("file://"), readonly=readonly)

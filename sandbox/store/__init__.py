"""The run store: where reports outlive the process.

``open_store()`` with no argument opens the default: ``SANDBOX_STORE`` if set, else
a SQLite file in the user's cache directory. A ``postgresql://`` URL opens a shared
PostgreSQL database.
"""

from __future__ import annotations

import os

from sandbox.store.base import Store, StoreError

__all__ = ["Store", "StoreError", "default_location", "open_store"]


def default_location() -> str:
    if os.environ.get("SANDBOX_STORE"):
        return os.environ["SANDBOX_STORE"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "torch-compile-sandbox", "runs.db")


def open_store(location: str | None = None, readonly: bool = False) -> Store:
    location = location or default_location()
    if location.startswith(("postgresql://", "postgres://")):
        from sandbox.store.postgres import PostgresStore

        return PostgresStore(location, readonly=readonly)
    if "://" in location and not location.startswith("file://"):
        raise StoreError(f"store {location!r}: expected a file path or a postgresql:// URL")
    from sandbox.store.sqlite import SQLiteStore

    return SQLiteStore(location.removeprefix("file://"), readonly=readonly)

"""The run store's schema: JSON and text only, never pickles.

Versioned; ``MIGRATIONS[n]`` takes a store from version n-1 to n. A store written
by a newer version is never downgraded or overwritten: it is read when its ``meta``
says this version can (``oldest_reader``), written when it says this version's writes
keep it whole (``oldest_writer``), and refused otherwise (docs/REPORT.md, "Reading what
a newer version wrote").

Whose database it is: a store says so in ``meta`` (``APPLICATION``). A database without
that row is ours only when it is exactly a store made before the row existed
(``V1_TABLES``, a ``schema_version``); an empty one is ours to create. Anything else is
another program's, and nothing is written into it (``sandbox/store/base.py``).
"""

from __future__ import annotations

SCHEMA_VERSION = 1

# The meta row that marks a database as a run store of this package.
APPLICATION = ("application", "compile-sandbox")

# Meta keys a newer version writes when an older one may still read (or also write) its
# store; absent, both are the store's schema_version.
OLDEST_READER = "oldest_reader"
OLDEST_WRITER = "oldest_writer"

# Version 1's tables and their columns: a store made before APPLICATION was written is
# exactly these (indexes aside).
V1_TABLES: dict[str, frozenset[str]] = {
    "meta": frozenset({"key", "value"}),
    "runs": frozenset({"run_id", "started_at", "name", "tags", "hostname", "device", "torch", "job", "rank", "data"}),
    "reports": frozenset(
        {
            "report_id",
            "run_id",
            "graph_index",
            "compile_id",
            "graph_kind",
            "outcome",
            "started_at",
            "duration_s",
            "data",
        }
    ),
    "kernel_sources": frozenset({"source_hash", "source"}),
}

# Statements use ``?`` placeholders and portable types; the PostgreSQL store
# rewrites placeholders.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS runs (
            run_id TEXT PRIMARY KEY,
            started_at DOUBLE PRECISION NOT NULL,
            name TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            hostname TEXT,
            device TEXT,
            torch TEXT,
            job TEXT,
            rank INTEGER,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at)",
        "CREATE INDEX IF NOT EXISTS runs_name ON runs (name)",
        "CREATE INDEX IF NOT EXISTS runs_job ON runs (job)",
        """CREATE TABLE IF NOT EXISTS reports (
            report_id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            graph_index INTEGER NOT NULL,
            compile_id TEXT,
            graph_kind TEXT NOT NULL,
            outcome TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            duration_s DOUBLE PRECISION NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS reports_run ON reports (run_id, graph_index)",
        """CREATE TABLE IF NOT EXISTS kernel_sources (
            source_hash TEXT PRIMARY KEY,
            source TEXT NOT NULL
        )""",
    ],
}

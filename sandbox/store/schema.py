"""The run store's schema: JSON and text only, never pickles.

Versioned; ``MIGRATIONS[n]`` takes a store from version n-1 to n. A store written
by a newer version is refused (never downgraded or overwritten).
"""

from __future__ import annotations

SCHEMA_VERSION = 1

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

"""What every store does, over a DB-API connection; SQLite and PostgreSQL differ only
in how they connect, their placeholders and their upserts.

Whose database it is comes first: before anything is written, :meth:`Store.admit` decides
from what the database holds (``sandbox/store/schema.py``) whether it is a run store,
an empty database to create one in, or another program's, which is refused by name.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sandbox.record.report import CompileReport, Run, warn_unknown
from sandbox.store.schema import APPLICATION, MIGRATIONS, OLDEST_READER, OLDEST_WRITER, SCHEMA_VERSION, V1_TABLES

log = logging.getLogger(__name__)

# The escape character of every LIKE pattern built from user text (``LIKE ? ESCAPE '!'``).
LIKE_ESCAPE = "!"


class StoreError(RuntimeError):
    """A store that cannot be used; the message names it and says what to do."""


def like_literal(text: str) -> str:
    """``text`` as a LIKE pattern that matches only itself: ``%`` and ``_`` are no wildcards."""
    for c in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(c, LIKE_ESCAPE + c)
    return text


def _printable(name: Any, limit: int = 40) -> str:
    """A name read from someone else's database, safe to put in one line of a message."""
    text = "".join(c if c.isprintable() else "?" for c in str(name))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _strip_sources(report: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Kernel sources go to their own table, once per content hash."""
    sources: list[tuple[str, str]] = []
    kernels = []
    for k in report.get("kernels", []):
        k = dict(k)
        if k.get("source") and k.get("source_hash"):
            sources.append((k["source_hash"], k.pop("source")))
        kernels.append(k)
    return dict(report, kernels=kernels), sources


class Store:
    """A run store. Thread-safe; one connection guarded by a lock."""

    placeholder = "?"
    url: str = ""
    readonly = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.conn: Any = None

    # -- dialect hooks ---------------------------------------------------------------
    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def _insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        raise NotImplementedError

    def _upsert(self, table: str, key: str, columns: Sequence[str]) -> str:
        raise NotImplementedError

    # -- schema ------------------------------------------------------------------------
    def _execute(self, cur: Any, statement: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(statement), tuple(params))
        return cur

    def schema_version(self) -> int:
        with self._lock:
            cur = self.conn.cursor()
            try:
                self._execute(cur, "SELECT value FROM meta WHERE key = 'schema_version'")
                row = cur.fetchone()
            except Exception:
                self.conn.rollback()
                return 0
            return int(row[0]) if row else 0

    # -- whose database -------------------------------------------------------------------
    def _tables(self) -> dict[str, frozenset[str]]:
        """The database's tables and views (in the schema in use) and their columns, lower case.
        This one is information_schema's (PostgreSQL); SQLite reads its own catalogue."""
        with self._lock:
            cur = self.conn.cursor()
            self._execute(cur, "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
            tables: dict[str, set[str]] = {str(t).lower(): set() for (t,) in cur.fetchall()}
            self._execute(
                cur,
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()",
            )
            for table, column in cur.fetchall():
                tables.setdefault(str(table).lower(), set()).add(str(column).lower())
            self._end_read()
        return {t: frozenset(c) for t, c in tables.items()}

    def _meta(self) -> dict[str, str]:
        """The ``meta`` rows; {} when they cannot be read as ours (another program's table)."""
        with self._lock:
            cur = self.conn.cursor()
            try:
                self._execute(cur, "SELECT key, value FROM meta")
                rows = cur.fetchall()
            except Exception:  # noqa: BLE001 - a meta table of another shape: not ours, said below
                self.conn.rollback()
                return {}
            self._end_read()
        return {str(k): str(v) for k, v in rows if k is not None and v is not None}

    def admit(self) -> dict[str, str] | None:
        """Decide, reading only, whether this database may be used: None for an empty one (ours
        to create), else its ``meta``. Another program's database, or a store this version may
        not read (or, opened to write, not write), raises ``StoreError`` naming it."""
        tables = self._tables()
        if not tables:
            return None
        meta = self._meta() if tables.get("meta") == V1_TABLES["meta"] else {}
        key, ours = APPLICATION
        if meta.get(key) != ours and not (key not in meta and tables == V1_TABLES and "schema_version" in meta):
            raise StoreError(self._foreign(tables, meta))
        try:
            version = int(meta["schema_version"])
        except (KeyError, ValueError):
            raise StoreError(
                f"store {self.url} has no readable schema version ({_printable(meta.get('schema_version'))!r}); "
                "it was left untouched. Point SANDBOX_STORE (or --store) at another location."
            ) from None
        if version > SCHEMA_VERSION:
            self._admit_newer(version, meta)
        return meta

    def _foreign(self, tables: dict[str, frozenset[str]], meta: dict[str, str]) -> str:
        key = APPLICATION[0]
        if meta.get(key):
            what = f"a database of another application ({_printable(meta[key])!r})"
        else:
            names = ", ".join(_printable(t) for t in sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
            what = f"a database of something else (tables: {names})"
        return (
            f"{self.url} is {what}, not a run store; it was left untouched. Point SANDBOX_STORE (or --store) "
            "at another location."
        )

    def _admit_newer(self, version: int, meta: dict[str, str]) -> None:
        """A store of a newer version: read when it says this version may read it (its changes
        only add), written when it says this version's writes keep it whole; else refused."""

        def oldest(key: str) -> int:
            try:
                return int(meta.get(key, version))
            except ValueError:
                return version

        if oldest(OLDEST_READER) > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.url} was written by a newer version of the sandbox (schema {version}, this "
                f"one reads up to {SCHEMA_VERSION}); upgrade the package, or point SANDBOX_STORE elsewhere"
            )
        if not self.readonly and oldest(OLDEST_WRITER) > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.url} was written by a newer version of the sandbox (schema {version}); this one "
                f"(schema {SCHEMA_VERSION}) may read it but not write it: upgrade the package, or point "
                "SANDBOX_STORE elsewhere"
            )
        _warn_once(
            ("store", self.url, version),
            "store %s has schema %s, written by a newer version of the sandbox (this one: %s); its changes only add, "
            "so this version %s what it knows. Upgrade the package to see the rest.",
            self.url,
            version,
            SCHEMA_VERSION,
            "reads" if self.readonly else "reads and writes",
        )

    def migrate(self) -> None:
        meta = self.admit()  # reads only: nothing is written into a database that is not ours
        version = int(meta["schema_version"]) if meta else 0
        if version >= SCHEMA_VERSION:
            if not self.readonly and meta is not None and APPLICATION[0] not in meta:
                with self._lock:  # a store made before the marker: mark it, as a new one is
                    cur = self.conn.cursor()
                    self._execute(cur, self._insert_ignore("meta", ["key", "value"]), APPLICATION)
                    self.conn.commit()
            return
        if self.readonly:
            raise StoreError(f"store {self.url} has no run data yet (schema {version}); make a run first: sandbox demo")
        with self._lock:
            cur = self.conn.cursor()
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[v]:
                    cur.execute(statement)
            upsert = self._sql(self._upsert("meta", "key", ["key", "value"]))
            cur.execute(upsert, ("schema_version", str(SCHEMA_VERSION)))
            cur.execute(upsert, APPLICATION)
            self.conn.commit()

    # -- writes --------------------------------------------------------------------------
    def put_run(self, run: Run | dict[str, Any]) -> None:
        d = run.to_dict() if isinstance(run, Run) else dict(run)
        row = (
            d["run_id"],
            d["started_at"],
            d.get("name"),
            json.dumps(d.get("tags") or []),
            d.get("hostname"),
            d.get("device"),
            d.get("torch"),
            d.get("job"),
            d.get("rank"),
            json.dumps(d, sort_keys=True),
        )
        cols = ["run_id", "started_at", "name", "tags", "hostname", "device", "torch", "job", "rank", "data"]
        with self._lock:
            cur = self.conn.cursor()
            self._execute(cur, self._upsert("runs", "run_id", cols), row)
            self.conn.commit()

    def put_reports(self, reports: Iterable[CompileReport | dict[str, Any]]) -> int:
        """Write reports in one transaction; returns how many. Idempotent per report id."""
        rows, sources = [], []
        for r in reports:
            d = r.to_dict() if isinstance(r, CompileReport) else dict(r)
            d, srcs = _strip_sources(d)
            sources.extend(srcs)
            rows.append(
                (
                    d["report_id"],
                    d["run_id"],
                    d.get("graph_index", 0),
                    d.get("compile_id"),
                    d["graph_kind"],
                    d["outcome"],
                    d["started_at"],
                    d.get("duration_s", 0.0),
                    json.dumps(d, sort_keys=True),
                )
            )
        if not rows:
            return 0
        cols = [
            "report_id",
            "run_id",
            "graph_index",
            "compile_id",
            "graph_kind",
            "outcome",
            "started_at",
            "duration_s",
            "data",
        ]
        with self._lock:
            cur = self.conn.cursor()
            if sources:
                cur.executemany(
                    self._sql(self._insert_ignore("kernel_sources", ["source_hash", "source"])), sorted(set(sources))
                )
            cur.executemany(self._sql(self._upsert("reports", "report_id", cols)), rows)
            self.conn.commit()
        return len(rows)

    # -- reads ----------------------------------------------------------------------------
    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            cur = self.conn.cursor()
            self._execute(cur, statement, params)
            rows = cur.fetchall()
            self._end_read()
            return rows

    def _end_read(self) -> None:
        """PostgreSQL opens a transaction for a SELECT too: end it."""

    def runs(
        self,
        name: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        until: float | None = None,
        job: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs newest first, each with a summary of its reports."""
        where, params = [], []
        if name:
            where.append("r.name = ?")
            params.append(name)
        if tag:
            where.append(f"r.tags LIKE ? ESCAPE '{LIKE_ESCAPE}'")
            params.append(f"%{like_literal(json.dumps(tag))}%")
        if since is not None:
            where.append("r.started_at >= ?")
            params.append(since)
        if until is not None:
            where.append("r.started_at <= ?")
            params.append(until)
        if job:
            where.append("r.job = ?")
            params.append(job)
        sql = (
            "SELECT r.data, COUNT(p.report_id), COALESCE(SUM(p.duration_s), 0), "
            "SUM(CASE WHEN p.outcome = 'cache_hit' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN p.outcome = 'failed' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN p.outcome = 'isolated' THEN 1 ELSE 0 END) "
            # Pick the runs first, then summarise only their reports: grouping every report of
            # the store before the LIMIT costs as much as the whole store, however few runs it
            # returns (docs/decisions/store-runs-query-limit.md).
            "FROM (SELECT r.run_id, r.data, r.started_at FROM runs r"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY r.started_at DESC"
            + (f" LIMIT {int(limit)}" if limit else "")
            + ") r LEFT JOIN reports p ON p.run_id = r.run_id"
            " GROUP BY r.run_id, r.data, r.started_at ORDER BY r.started_at DESC"
        )
        out = []
        for data, graphs, total, hits, failures, isolated in self._query(sql, params):
            d = json.loads(data)
            d["summary"] = {
                "graphs": int(graphs or 0),
                "compile_s": float(total or 0.0),
                "cache_hits": int(hits or 0),
                "failures": int(failures or 0),
                "isolated": int(isolated or 0),
                "cache_hit_ratio": (int(hits or 0) / graphs) if graphs else None,
            }
            out.append(d)
        return out

    def get_run(self, ref: str) -> dict[str, Any]:
        """A run by id, id prefix, name (newest of that name) or ``latest``."""
        if ref == "latest":
            rows = self._query("SELECT data FROM runs ORDER BY started_at DESC LIMIT 1")
        else:
            rows = self._query("SELECT data FROM runs WHERE run_id = ?", (ref,))
            if not rows:
                rows = self._query(
                    f"SELECT data FROM runs WHERE run_id LIKE ? ESCAPE '{LIKE_ESCAPE}' ORDER BY started_at DESC",
                    (like_literal(ref) + "%",),
                )
                if len(rows) > 1:
                    ids = ", ".join(json.loads(r[0])["run_id"][:12] for r in rows[:5])
                    raise StoreError(
                        f"run id prefix {ref!r} matches {len(rows)} runs in {self.url} ({ids}...): give more characters"
                    )
            if not rows:
                rows = self._query("SELECT data FROM runs WHERE name = ? ORDER BY started_at DESC LIMIT 1", (ref,))
        if not rows:
            raise StoreError(f"no run {ref!r} in store {self.url}: `sandbox runs` lists the runs it has")
        return json.loads(rows[0][0])

    def reports(self, run_id: str, with_sources: bool = False) -> list[CompileReport]:
        """The run's reports; fields this version does not know are left out (with one warning)."""
        rows = self._query("SELECT data FROM reports WHERE run_id = ? ORDER BY graph_index, started_at", (run_id,))
        unknown: list[str] = []
        reports = [CompileReport.from_dict(json.loads(r[0]), unknown) for r in rows]
        warn_unknown(unknown)
        if with_sources:
            hashes = sorted({k["source_hash"] for r in reports for k in r.kernels if k.get("source_hash")})
            sources = self.kernel_sources(hashes)
            for r in reports:
                for k in r.kernels:
                    if k.get("source_hash") in sources:
                        k["source"] = sources[k["source_hash"]]
        return reports

    def kernel_sources(self, hashes: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        hashes = list(hashes)
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(
                self._query(f"SELECT source_hash, source FROM kernel_sources WHERE source_hash IN ({marks})", chunk)
            )
        return out

    def counts(self) -> dict[str, int]:
        return {t: int(self._query(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in ("runs", "reports", "kernel_sources")}

    # -- maintenance ----------------------------------------------------------------------
    def gc(self, keep: int | None = None, older_than_s: float | None = None) -> list[str]:
        """Delete runs, then kernel sources no report refers to; returns the deleted run ids.

        ``keep`` alone: every run but the ``keep`` newest. ``older_than_s`` alone: every run that
        started longer ago. Both: the runs older than that, except the ``keep`` newest, which are
        never deleted, whatever their age (``keep`` is a floor, not a second rule)."""
        rows = [r[0] for r in self._query("SELECT run_id FROM runs ORDER BY started_at DESC, run_id")]
        kept = set(rows[:keep]) if keep is not None else set()
        if older_than_s is None:
            doomed = set(rows) - kept if keep is not None else set()
        else:
            old = self._query("SELECT run_id FROM runs WHERE started_at < ?", (time.time() - older_than_s,))
            doomed = {r[0] for r in old} - kept
        if not doomed:
            return []
        with self._lock:
            cur = self.conn.cursor()
            ids = sorted(doomed)
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                self._execute(cur, f"DELETE FROM reports WHERE run_id IN ({marks})", chunk)
                self._execute(cur, f"DELETE FROM runs WHERE run_id IN ({marks})", chunk)
            self.conn.commit()
            live: set[str] = set()
            self._execute(cur, "SELECT data FROM reports")
            for (data,) in cur.fetchall():
                live.update(k["source_hash"] for k in json.loads(data).get("kernels", []) if k.get("source_hash"))
            self._execute(cur, "SELECT source_hash FROM kernel_sources")
            dead = [h for (h,) in cur.fetchall() if h not in live]
            for i in range(0, len(dead), 500):
                chunk = dead[i : i + 500]
                self._execute(
                    cur, f"DELETE FROM kernel_sources WHERE source_hash IN ({','.join('?' * len(chunk))})", chunk
                )
            self.conn.commit()
        return ids

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                try:
                    self.conn.close()
                finally:
                    self.conn = None


_warned: set[Any] = set()
_warned_lock = threading.Lock()


def _warn_once(key: Any, message: str, *args: Any) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)

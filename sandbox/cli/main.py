"""The ``sandbox`` command line: the demo, and the run store from a terminal.

    sandbox demo [--models M ...]
    sandbox runs [--name N] [--tag T] [--since DATE] [--until DATE] [--limit N] [--json]
    sandbox show RUN [--json] [--sources]
    sandbox diff RUN_A RUN_B [--json]
    sandbox explain RUN [--json]
    sandbox job [JOB] [--against EARLIER_JOB] [--all] [--json]
    sandbox spool [--upload]
    sandbox export-trace RUN -o FILE
    sandbox gc [--keep N] [--older-than AGE]
    sandbox dashboard [--port N] [--address ADDR]

``--store LOCATION`` (before or after the command) picks the store: a path or a
``postgresql://`` URL; the default is ``SANDBOX_STORE``, else the SQLite file in the
user's cache directory. RUN is a run id, an id prefix, a run name (its newest run) or
``latest``. Reading commands open the store read-only. A store that cannot be used
is one line on stderr, naming it and what to do, and exit code 1 (the demo: 2, as
it ran nothing); bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from sandbox.analysis import causes, jobs
from sandbox.analysis.diff import RunDiff, compare_runs
from sandbox.analysis.run_causes import explain_run
from sandbox.cli import render, render_job, safe_text
from sandbox.cli.render_runtime import kernel_runtimes, runtime_deltas
from sandbox.record.report import CompileReport
from sandbox.sinks.perfetto import chrome_trace
from sandbox.store import Store, StoreError, default_location, masked, open_store, secrets, spool

DEFAULT_LIMIT = 20
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class UsageError(ValueError):
    """A bad argument value (exit 2)."""


class CommandError(RuntimeError):
    """A command that could not do its job, e.g. write its output file (exit 1)."""


# -- argument values --------------------------------------------------------------------------


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not m:
        raise UsageError(f"bad age {text!r}: expected a number and a unit, e.g. 90s, 30m, 12h, 7d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_when(text: str, end: bool = False, now: float | None = None) -> float:
    """A date for ``--since``/``--until`` -> unix time.

    ``2026-11-26`` (local; with ``end``, the end of that day), ``2026-11-26T08:30``,
    ``today``, ``yesterday``, an age (``7d``: that long ago), or unix seconds."""
    now = time.time() if now is None else now
    s = text.strip().lower()
    day = dt.timedelta(days=1)
    if s in ("today", "yesterday"):
        start = dt.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        if s == "yesterday":
            start -= day
        return (start + day).timestamp() - 1e-6 if end else start.timestamp()
    if s == "now":
        return now
    if re.fullmatch(r"\d+(\.\d+)?\s*[smhdw]", s):
        return now - parse_age(s)
    if re.fullmatch(r"\d{9,}(\.\d+)?", s):
        return float(s)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"bad date {text!r}: expected e.g. 2026-11-26, '2026-11-26 08:30', today, yesterday, or an age like 7d"
        ) from None
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        return (when + day).timestamp() - 1e-6
    return when.timestamp()


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n


def _port(text: str) -> int:
    n = _non_negative(text)
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return n


# -- what the commands compute (also used by bench/store_scale.py) -------------------------------


def load_run(store: Store, ref: str, with_sources: bool = False) -> tuple[dict[str, Any], list[CompileReport]]:
    run = store.get_run(ref)
    return run, store.reports(run["run_id"], with_sources=with_sources)


def diff_runs(store: Store, ref_a: str, ref_b: str) -> RunDiff:
    return diff_and_causes(store, ref_a, ref_b)[0]


def diff_and_causes(store: Store, ref_a: str, ref_b: str) -> tuple[RunDiff, list[causes.Cause]]:
    """Run A against run B: the comparison and its causes, ranked (the best explanation first)."""
    run_a, reports_a = load_run(store, ref_a)
    run_b, reports_b = load_run(store, ref_b)
    d = compare_runs(run_a, reports_a, run_b, reports_b, load_sources=store.kernel_sources)
    return d, causes.explain(run_a, reports_a, run_b, reports_b)


def earlier_run(store: Store, run: dict[str, Any]) -> dict[str, Any] | None:
    """The newest run of the same name that started before ``run``; None for an unnamed run."""
    if not run.get("name"):
        return None
    started = run.get("started_at") or 0.0
    older = store.runs(name=run["name"], until=started)  # newest first
    return next((r for r in older if r["run_id"] != run["run_id"] and (r.get("started_at") or 0.0) < started), None)


def run_causes(
    store: Store, ref: str
) -> tuple[dict[str, Any], list[CompileReport], dict[str, Any] | None, list[causes.Cause]]:
    """One run's causes, largest first, its cache misses judged against the newest earlier run of its name."""
    run, reports = load_run(store, ref)
    earlier = earlier_run(store, run)
    before = store.reports(earlier["run_id"]) if earlier else []
    return run, reports, earlier, explain_run(run, reports, earlier=before)


# -- commands ---------------------------------------------------------------------------------


def _dump(obj: Any, out: TextIO) -> None:
    json.dump(obj, out, indent=2, sort_keys=True, default=str)
    out.write("\n")


def cmd_runs(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    limit = args.limit if args.limit is not None else DEFAULT_LIMIT
    runs = store.runs(name=args.name, tag=args.tag, since=args.since_s, until=args.until_s, limit=limit or None)
    if args.json:
        _dump(runs, out)
        return 0
    out.write(render.runs_table(runs) + "\n")
    if limit and len(runs) == limit:
        out.write(f"(the {limit} newest; --limit N for more, --limit 0 for all)\n")
    return 0


def cmd_show(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    run, reports = load_run(store, args.run, with_sources=args.sources)
    if args.json:
        _dump({"run": run, "reports": [r.to_dict() for r in reports]}, out)
    else:
        out.write(render.show(run, reports) + "\n")
        runtimes = kernel_runtimes(reports)
        if runtimes:
            out.write("\n" + runtimes + "\n")
    return 0


def cmd_diff(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    d, found = diff_and_causes(store, args.run_a, args.run_b)
    if args.json:
        _dump({**d.to_dict(), "verdict": [c.to_dict() for c in found]}, out)
    else:
        out.write(render.diff(d, found) + "\n")
        deltas = runtime_deltas(d)
        if deltas:
            out.write("\n" + deltas + "\n")
    return 0


def cmd_explain(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    run, reports, earlier, found = run_causes(store, args.run)
    if args.json:
        _dump([c.to_dict() for c in found], out)
    else:
        out.write(render.explain(run, reports, earlier, found) + "\n")
    return 0


def cmd_job(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    known = jobs.jobs(store.runs())
    if args.job is None:
        if args.json:
            _dump(known, out)
        else:
            out.write(render_job.jobs_table(known) + "\n")
        return 0
    try:
        job = jobs.resolve_job(args.job, known)
        earlier = jobs.resolve_job(args.against, known) if args.against else None
    except LookupError as e:
        raise CommandError(str(e)) from None
    report = jobs.analyse_job(
        job, store.runs(job=job), store.reports, earlier=(earlier, store.runs(job=earlier)) if earlier else None
    )
    if args.json:
        _dump(report.to_dict(), out)
    else:
        out.write(render_job.job(report, all_graphs=args.all) + "\n")
    return 0


def cmd_export_trace(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    run, reports = load_run(store, args.run)
    trace = chrome_trace(reports, parent_pid=run.get("pid"))
    try:
        with open(args.output, "w") as f:
            json.dump(trace, f)
    except OSError as e:
        raise CommandError(f"cannot write {args.output}: {e.strerror or e}") from None
    workers = sorted({r.worker_pid for r in reports if r.worker_pid})
    out.write(
        f"wrote {len(trace['traceEvents'])} events of run {render.short_id(run['run_id'])} "
        f"({len(reports)} graphs; process {run.get('pid')}, workers {', '.join(map(str, workers)) or 'none'}) "
        f"to {args.output}; open it in https://ui.perfetto.dev or chrome://tracing\n"
    )
    return 0


def cmd_gc(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    deleted = store.gc(keep=args.keep, older_than_s=args.older_than_s)
    out.write(render.gc(deleted, store.counts()["runs"], store.url) + "\n")
    return 0


def cmd_spool(location: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Reports kept in the local spool for this store (it was unreachable); --upload sends them."""
    if not args.upload:
        files = spool.pending(location)
        waiting = [f for f in files if not f["corrupt"]]
        out.write(
            f"{sum(f['reports'] for f in waiting)} report(s) in {len(waiting)} spool file(s) waiting for "
            f"{masked(location)} (in {spool.spool_dir(location)})\n"
        )
        for f in files:
            out.write(
                f"  {f['path']}  {f['reports']} reports, {f['bytes']} bytes{'  CORRUPT' if f['corrupt'] else ''}\n"
            )
        others = [(d, where) for d, where in spool.locations() if d != spool.spool_dir(location)]
        for d, where in others:
            out.write(f"  also spooled: {where} (in {d}); sandbox spool --store LOCATION to see it\n")
        if waiting:
            out.write("sandbox spool --upload sends them once the store is reachable\n")
        return 0
    done = spool.upload_location(location)  # nothing waiting: the store is only checked, never created
    out.write(
        f"uploaded {done.reports} report(s) and {done.runs} run(s) from {done.files + len(done.corrupt)} spool "
        f"file(s) into {masked(location)}"
        + (
            f"; {done.busy} file(s) are still being written by running processes, which upload them themselves"
            if done.busy
            else ""
        )
        + "\n"
    )
    for message in done.corrupt:
        err.write(f"sandbox spool: {message}\n")
    return 1 if done.corrupt else 0


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from sandbox.cli.demo import run_demo  # imports torch: `sandbox runs` and the like stay quick

    return run_demo(args.models, out=out, err=err, store=args.store)


def cmd_dashboard(args: argparse.Namespace, out: TextIO) -> int:
    from sandbox.cli.dashboard import DashboardError, run_dashboard  # looks for Streamlit: other commands don't

    try:
        return run_dashboard(args.store, args.port, args.address, out=out)
    except DashboardError as e:
        raise CommandError(str(e)) from e


# -- parser and entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    store_help = (
        "the run store: a file path or a postgresql:// URL "
        "(default: $SANDBOX_STORE, else ~/.cache/torch-compile-sandbox/runs.db)"
    )
    parser = argparse.ArgumentParser(
        prog="sandbox",
        description="The compile sandbox: run the demo, and read the run store.",
        epilog="RUN: a run id, an id prefix, a run name (its newest run) or 'latest'.",
    )
    parser.add_argument("--store", metavar="LOCATION", default=None, help=store_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="LOCATION", default=argparse.SUPPRESS, help=store_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="compile the model zoo through the sandbox into the store")
    p.add_argument("--models", nargs="*", help="zoo entries to run (default: all)")

    p = sub.add_parser("runs", parents=[common], help="list runs, newest first")
    p.add_argument("--name", help="only runs of this name")
    p.add_argument("--tag", help="only runs with this tag")
    p.add_argument(
        "--since", metavar="DATE", help="started at or after DATE (2026-11-26, '2026-11-26 08:30', today, 7d)"
    )
    p.add_argument("--until", metavar="DATE", help="started at or before DATE (a bare date: until its end)")
    p.add_argument("--limit", type=_non_negative, metavar="N", help=f"at most N runs (default {DEFAULT_LIMIT}; 0: all)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")

    p = sub.add_parser("show", parents=[common], help="one run: its graphs, stages, caches, kernels, failures")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--json", action="store_true", help="the run and its reports as JSON")
    p.add_argument("--sources", action="store_true", help="with --json: include kernel sources")

    p = sub.add_parser(
        "diff", parents=[common], help="compare two runs: why they differ, then graphs, kernels, stage times, metrics"
    )
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--json", action="store_true", help="JSON for scripts")

    p = sub.add_parser(
        "explain", parents=[common], help="why one run compiled what it did: graph breaks, recompiles, cache misses"
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("--json", action="store_true", help="the causes as a JSON list, largest first")

    p = sub.add_parser("job", parents=[common], help="one job's ranks side by side: rank divergence, stragglers")
    p.add_argument(
        "job",
        metavar="JOB",
        nargs="?",
        help="a job id (SANDBOX_JOB / TORCHELASTIC_RUN_ID), an id prefix or 'latest'; without it, list the jobs",
    )
    p.add_argument("--against", metavar="EARLIER_JOB", help="also compare with this earlier job, rank by rank")
    p.add_argument("--all", action="store_true", help="every graph, not only those that differ across ranks")
    p.add_argument("--json", action="store_true", help="JSON for scripts")

    p = sub.add_parser(
        "spool", parents=[common], help="reports kept locally while the store was unreachable; --upload sends them"
    )
    p.add_argument("--upload", action="store_true", help="upload them into the store now (it must be reachable)")

    p = sub.add_parser("export-trace", parents=[common], help="write a stored run as a Chrome/Perfetto trace")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the trace file to write (JSON)")

    p = sub.add_parser("gc", parents=[common], help="delete old runs (and kernel sources no run uses)")
    p.add_argument(
        "--keep",
        type=_non_negative,
        metavar="N",
        help="keep the N newest runs, always (with --older-than: whatever their age)",
    )
    p.add_argument(
        "--older-than",
        metavar="AGE",
        help="delete runs older than AGE (90s, 30m, 12h, 7d, 2w; never the --keep N newest)",
    )

    p = sub.add_parser("dashboard", parents=[common], help="open the dashboard on this store (127.0.0.1:8501)")
    p.add_argument("--port", type=_port, metavar="N", help="the port to listen on (default 8501)")
    p.add_argument(
        "--address", default="127.0.0.1", metavar="ADDR", help="the address to listen on (default: loopback only)"
    )
    return parser


COMMANDS: dict[str, Callable[[Store, argparse.Namespace, TextIO], int]] = {
    "runs": cmd_runs,
    "show": cmd_show,
    "diff": cmd_diff,
    "explain": cmd_explain,
    "job": cmd_job,
    "export-trace": cmd_export_trace,
    "gc": cmd_gc,
}


def _open(location: str, write: bool) -> Store:
    # Even to write (gc), a store must exist already: opening it read-only first
    # refuses a missing one instead of creating it.
    store = open_store(location, readonly=True)
    if not write:
        return store
    store.close()
    return open_store(location)


def _one_line(e: BaseException) -> str:
    """Driver messages span lines (psycopg's hints): an error here is one line."""
    return re.sub(r"\s*\n\s*", " ", str(e).strip())


def _database_error(e: BaseException) -> bool:
    return isinstance(e, sqlite3.DatabaseError) or type(e).__module__.startswith("psycopg")


def main(argv: list[str] | None = None) -> int:
    out, err = safe_text.wrap(sys.stdout), safe_text.wrap(sys.stderr)  # store text is shown, never obeyed
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command
    if command == "gc" and args.keep is None and args.older_than is None:
        parser.exit(2, "sandbox gc: give --keep N and/or --older-than AGE (e.g. --keep 100 --older-than 30d)\n")
    location = args.store or default_location()
    if args.store and secrets(args.store) and command != "dashboard":
        # A command line is readable by every user of the machine (ps, /proc/PID/cmdline); the
        # dashboard replaces this process with Streamlit at once and hands it the store in its environment.
        err.write(
            "sandbox: the password in --store is visible to other users of this machine while the command runs; "
            "put the location in SANDBOX_STORE, or the password in ~/.pgpass\n"
        )
    try:
        # Argument values first: a typo is reported before any store is opened.
        if command == "runs":
            args.since_s = parse_when(args.since) if args.since else None
            args.until_s = parse_when(args.until, end=True) if args.until else None
        if command == "gc":
            args.older_than_s = parse_age(args.older_than) if args.older_than else None
        if command == "demo":
            return cmd_demo(args, out, err)
        if command == "spool":
            return cmd_spool(location, args, out, err)
        if command == "dashboard":
            return cmd_dashboard(args, out)
        store = _open(location, write=command == "gc")
        try:
            return COMMANDS[command](store, args, out)
        except Exception as e:
            if _database_error(e):
                raise StoreError(
                    f"store {store.url} failed while reading or writing ({e}); check it, or point --store elsewhere"
                ) from e
            raise
        finally:
            store.close()
    except (StoreError, CommandError) as e:
        err.write(f"sandbox {command}: {_one_line(e)}\n")
        return 1
    except UsageError as e:
        err.write(f"sandbox {command}: {_one_line(e)}\n")
        return 2
    except BrokenPipeError:  # `sandbox runs | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())

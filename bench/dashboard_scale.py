#!/usr/bin/env python
"""Is the dashboard fast with real volumes? Fill a store, time every page through AppTest.

Fills a store with ``--runs`` runs (default 1,000) of ``--graphs`` graphs (default 10)
with ``--kernels`` kernels each (default 10): 100,000 kernel entries, built as
``bench/store_scale.py`` builds them (realistic stages, caches, metrics, ~2 KB kernel
sources mostly shared across runs, a "new torch version" every 100 runs). Then renders
each page of ``dashboard/app.py`` through Streamlit's ``AppTest`` (the script, every
query, every table and chart serialized, no browser):

- cold: the dashboard's caches cleared first (a page opened right after the store changed);
- warm: the same page again (the queries served from the cache; what a user clicking
  around sees).

Runs ``--repeats`` times each (default 3) and prints medians. Target (issue 5 point 4):
every page < 2 s, cold. Exit code 1 when a page misses it.

Usage
  python bench/dashboard_scale.py                     # 1,000 runs x 10 graphs x 10 kernels (~1-2 min to fill)
  python bench/dashboard_scale.py --quick             # 50 runs: a smoke test
  python bench/dashboard_scale.py --store /tmp/d.db --keep    # keep the filled store (reused when it exists)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from _scratch import scratch_store  # noqa: E402
from store_scale import Model, make_run  # noqa: E402

from sandbox.store import open_store  # noqa: E402

TARGET_S = 2.0
APP = os.path.join(ROOT, "dashboard", "app.py")


def fill(location: str, runs: int, graphs: int, kernels: int) -> dict[str, Any]:
    model = Model(graphs, kernels)
    t0 = time.time() - runs * 600.0 - 3600
    store = open_store(location)
    ids, entries = [], 0
    started = time.perf_counter()
    for i in range(runs):
        model.step(i)
        run, reports = make_run(model, i, t0)
        store.put_run(run)
        store.put_reports(reports)
        ids.append(run.run_id)
        entries += sum(len(r.kernels) for r in reports)
        if (i + 1) % max(runs // 10, 1) == 0:
            print(f"  {i + 1}/{runs} runs", file=sys.stderr, flush=True)
    counts = store.counts()
    store.close()
    return {"ids": ids, "kernel_entries": entries, "counts": counts, "seconds": time.perf_counter() - started}


def existing(location: str) -> dict[str, Any]:
    store = open_store(location, readonly=True)
    try:
        runs = store.runs()
        ids = [r["run_id"] for r in reversed(runs)]  # oldest first, as fill() returns them
        entries = sum(len(r.kernels) for rid in ids for r in store.reports(rid))
        return {"ids": ids, "kernel_entries": entries, "counts": store.counts(), "seconds": 0.0}
    finally:
        store.close()


def render(page: str | None, params: dict[str, str], cold: bool) -> tuple[float, Any]:
    """Seconds to render ``page`` (the default page when None), and the AppTest."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    if page is None:
        if cold:
            st.cache_resource.clear()
        t = time.perf_counter()
        at.run()
        return time.perf_counter() - t, at
    at.run()  # the session's first page (Runs); the page itself is what is timed
    if cold:
        st.cache_resource.clear()
    at.query_params = dict(params)
    at.switch_page(f"pages/{page}.py")
    t = time.perf_counter()
    at.run()
    return time.perf_counter() - t, at


def check(name: str, at: Any, expect: Callable[[Any], bool]) -> None:
    if at.exception:
        raise SystemExit(f"{name}: the page raised: {[e.value for e in at.exception]}")
    if not expect(at):
        raise SystemExit(f"{name}: the page did not show what it should (titles: {[t.value for t in at.title]})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--graphs", type=int, default=10)
    ap.add_argument("--kernels", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="50 runs, 1 repeat: a smoke test")
    ap.add_argument(
        "--store",
        help="where to build the store (default: a temporary file, removed afterwards); "
        "an existing store there is reused as it is",
    )
    ap.add_argument("--keep", action="store_true", help="keep the store")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.repeats = min(args.runs, 50), 1
    with scratch_store(args.store, args.keep, "sandbox-dashboard-scale-") as location:
        return bench(args, location)


def bench(args: argparse.Namespace, location: str) -> int:
    if os.path.exists(location):
        print(f"store {location}: reusing it as it is")
        made = existing(location)
    else:
        print(f"store {location}: filling {args.runs} runs x {args.graphs} graphs x {args.kernels} kernels")
        made = fill(location, args.runs, args.graphs, args.kernels)
    c = made["counts"]
    print(
        f"{c['runs']:,} runs, {c['reports']:,} graphs, {made['kernel_entries']:,} kernel entries, "
        f"{c['kernel_sources']:,} distinct kernel sources"
        + (f" (filled in {made['seconds']:.1f} s)" if made["seconds"] else "")
    )
    os.environ["SANDBOX_STORE"] = location
    ids = made["ids"]
    latest, before = ids[-1], ids[max(len(ids) - 150, 0)]  # across a "new torch version" when there is one
    n_runs = c["runs"]
    pages: list[tuple[str, str | None, dict[str, str], Callable[[Any], bool]]] = [
        ("Runs", None, {}, lambda at: len(at.dataframe[0].value) == n_runs),
        ("Run", "run", {"run": latest}, lambda at: at.metric[0].value == str(c["reports"] // n_runs)),
        ("Graph", "graph", {"run": latest, "graph": "0"}, lambda at: len(at.code) == 1),
        ("Compare", "compare", {"a": before, "b": latest}, lambda at: at.markdown[0].value.startswith("- ")),
        ("Trends", "trends", {}, lambda at: at.metric[0].value == str(n_runs)),
    ]
    render("trends", {}, cold=True)  # imports (streamlit, pandas, altair) and the first connection: not a page's cost
    print()
    print(f"page render time through AppTest, median of {args.repeats} (s):")
    print(f"  {'page':<10} {'cold':>8} {'warm':>8}")
    ok = True
    for name, page, params, expect in pages:
        cold, warm = [], []
        for _ in range(args.repeats):
            s, at = render(page, params, cold=True)
            check(name, at, expect)
            cold.append(s)
            s, at = render(page, params, cold=False)
            check(name, at, expect)
            warm.append(s)
        mc, mw = statistics.median(cold), statistics.median(warm)
        passed = mc < TARGET_S and mw < TARGET_S
        ok &= passed
        print(f"  {name:<10} {mc:8.3f} {mw:8.3f}   {'PASS' if passed else 'FAIL'} (target < {TARGET_S:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

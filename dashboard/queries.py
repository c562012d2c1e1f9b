"""Every query the dashboard makes, and the tables it shows: pure functions over a ``Store``.

The pages only render what these return. Two layers:

- pure functions (``runs_frame``, ``graph_rows``, ``stage_tree``, ``compare``, ``verdict``,
  ...): a read-only ``Store`` or plain records in, pandas frames and plain values out;
  ``tests/test_queries.py`` calls them without Streamlit;
- cached entry points (``cached_*``) that the pages call with a :class:`Source`: the
  store's location plus its :func:`fingerprint`, so a new run or report shows up on the
  next rerun while everything else is served from the cache.

Caching uses ``st.cache_resource``, not ``st.cache_data``: cache_data round-trips every
value through pickle, and the dashboard never unpickles anything (``tests/test_dashboard.py``
checks that no page calls ``pickle.loads``). Cached values are shared between sessions:
callers must not mutate them (every function here returns new frames).

The store is always opened read-only (``open_store(location, readonly=True)``: SQLite's
``mode=ro``), and it holds JSON and text only.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import pandas as pd
import streamlit as st

from sandbox import jobs
from sandbox.diff import GraphChange, KernelChange, RunDiff, compare_runs, self_times
from sandbox.store import Store, StoreError, default_location, open_store
from sandbox.telemetry.report import CompileReport, Stage

# The sandbox's own stages: what the run page's waterfall draws for every graph.
WATERFALL_STAGES = (
    "cache_lookup",
    "serialize",
    "wait_for_worker",
    "send",
    "compile_in_worker",
    "transfer",
    "load",
    "compile_in_process",
    "switch",
)
# The bar of a graph that ran as is while it compiled in the background (async mode).
EAGER_BAR = "running eagerly"
# Kernel launch fields of GPU reports (``kernel["launchers"]``), in the order shown.
LAUNCH_FIELDS = ("num_warps", "num_stages", "n_regs", "n_spills", "shared")
LAUNCH_LABELS = {
    "num_warps": "warps",
    "num_stages": "stages",
    "n_regs": "registers",
    "n_spills": "spills",
    "shared": "shared memory",
}
# What a stage is, in words, for the compare page's verdict.
STAGE_WORDS = {
    "compile_file": "C++ compile",
    "async_compile.wait": "kernel compile",
    "wait_for_worker": "waiting for a worker",
    "serialize": "serializing the graph",
    "load": "loading the result",
    "transfer": "transfer from the worker",
    "cache_lookup": "cache lookup",
    "GraphLowering.run": "lowering",
    "Scheduler.codegen": "code generation",
    "Scheduler.__init__": "scheduling and fusion",
    "_recursive_post_grad_passes": "post-grad passes",
    "compile_in_process": "in-process compile",
}
# A graph compiled this much slower (and by at least REGRESSION_MIN_S) is a regression.
REGRESSION_PCT = 0.10
REGRESSION_MIN_S = 0.05


class Source(NamedTuple):
    """A store location and its fingerprint: the key of every cached query."""

    location: str
    version: tuple[int, ...]


# -- opening -------------------------------------------------------------------------------------


def initial_location(env: Mapping[str, str] | None = None) -> str:
    """``SANDBOX_STORE`` if set, else the default SQLite file (as the sandbox writes it)."""
    env = os.environ if env is None else env
    return env.get("SANDBOX_STORE") or default_location()


def open_readonly(location: str) -> Store:
    return open_store(location, readonly=True)


def fingerprint(store: Store) -> tuple[int, ...]:
    """Row counts: they change whenever a run or a report is written."""
    c = store.counts()
    return (c["runs"], c["reports"], c["kernel_sources"])


# -- runs ----------------------------------------------------------------------------------------

RUN_COLUMNS = [
    "run_id",
    "name",
    "tags",
    "started",
    "device",
    "torch",
    "graphs",
    "compile_s",
    "cache_hit_ratio",
    "failures",
    "isolated",
    "hostname",
    "started_at",
]


def when(ts: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ts) if ts else None


def runs_frame(store: Store, limit: int | None = None) -> pd.DataFrame:
    """One row per run, newest first, with the store's per-run summary."""
    rows = []
    for r in store.runs(limit=limit):
        s = r.get("summary") or {}
        rows.append(
            {
                "run_id": r["run_id"],
                "name": r.get("name") or "",
                "tags": ", ".join(r.get("tags") or []),
                "started": when(r.get("started_at")),
                "device": r.get("device") or "",
                "torch": r.get("torch") or "",
                "graphs": int(s.get("graphs", 0)),
                "compile_s": float(s.get("compile_s", 0.0)),
                "cache_hit_ratio": s.get("cache_hit_ratio"),
                "failures": int(s.get("failures", 0)),
                "isolated": int(s.get("isolated", 0)),
                "hostname": r.get("hostname") or "",
                "started_at": float(r.get("started_at") or 0.0),
            }
        )
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    df["cache_hit_ratio"] = df["cache_hit_ratio"].astype(float)
    return df


def tag_list(tags: str) -> list[str]:
    return [t for t in (x.strip() for x in tags.split(",")) if t]


def filter_choices(runs: pd.DataFrame) -> dict[str, list[str]]:
    """The values each filter offers: names, tags, devices, torch versions present."""
    return {
        "name": sorted({n for n in runs["name"] if n}),
        "tag": sorted({t for tags in runs["tags"] for t in tag_list(tags)}),
        "device": sorted({d for d in runs["device"] if d}),
        "torch": sorted({v for v in runs["torch"] if v}),
    }


def filter_runs(
    runs: pd.DataFrame,
    names: Sequence[str] = (),
    tags: Sequence[str] = (),
    devices: Sequence[str] = (),
    torch_versions: Sequence[str] = (),
    since: dt.date | None = None,
    until: dt.date | None = None,
    failed_only: bool = False,
    text: str = "",
) -> pd.DataFrame:
    """Runs matching every given filter (a run matches a tag filter with any of the tags)."""
    keep = pd.Series(True, index=runs.index)
    if names:
        keep &= runs["name"].isin(list(names))
    if tags:
        wanted = set(tags)
        keep &= runs["tags"].map(lambda t: bool(wanted & set(tag_list(t))))
    if devices:
        keep &= runs["device"].isin(list(devices))
    if torch_versions:
        keep &= runs["torch"].isin(list(torch_versions))
    if since is not None:
        keep &= runs["started_at"] >= dt.datetime.combine(since, dt.time.min).timestamp()
    if until is not None:
        keep &= runs["started_at"] < dt.datetime.combine(until + dt.timedelta(days=1), dt.time.min).timestamp()
    if failed_only:
        keep &= runs["failures"] > 0
    if text.strip():
        needle = text.strip().lower()
        hay = runs["run_id"] + " " + runs["name"] + " " + runs["tags"] + " " + runs["hostname"]
        keep &= hay.str.lower().str.contains(needle, regex=False)
    return runs[keep].copy()


def run_label(run: Mapping[str, Any]) -> str:
    """``baseline · 2026-11-26 09:04 · acc8e59a4a88``"""
    started = when(run.get("started_at"))
    parts = [
        run.get("name") or "(unnamed)",
        started.strftime("%Y-%m-%d %H:%M:%S") if started else "-",
        str(run.get("run_id", ""))[:12],
    ]
    return " · ".join(parts)


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    return {
        r.run_id: run_label({"name": r.name, "started_at": r.started_at, "run_id": r.run_id}) for r in runs.itertuples()
    }


def resolve_run(store: Store, ref: str | None) -> dict[str, Any] | None:
    """A run by id, id prefix, name or ``latest``; None when there is none (or ``ref`` is empty)."""
    if not ref:
        return None
    try:
        return store.get_run(ref)
    except StoreError:
        return None


def previous_of(runs: pd.DataFrame, run_id: str) -> str | None:
    """The run to compare ``run_id`` with: the previous run of the same name, else the one before it."""
    if run_id not in set(runs["run_id"]):
        return None
    row = runs[runs["run_id"] == run_id].iloc[0]
    older = runs[runs["started_at"] < row["started_at"]].sort_values("started_at", ascending=False)
    same = older[older["name"] == row["name"]] if row["name"] else older.iloc[0:0]
    pick = same if len(same) else older
    return str(pick.iloc[0]["run_id"]) if len(pick) else None


# -- one run -----------------------------------------------------------------------------------


def load_run(store: Store, run_id: str) -> tuple[dict[str, Any], list[CompileReport]]:
    return store.get_run(run_id), store.reports(run_id)


def outcome_label(r: CompileReport) -> str:
    label = {"isolated": "isolated", "cache_hit": "cache hit", "in_process": "in-process", "failed": "failed"}.get(
        r.outcome, r.outcome
    )
    if r.failure is not None:
        label += f" ({r.failure.kind})"
    return label


def cache_label(r: CompileReport) -> str:
    """``fx miss, aot miss`` (plus the async-compile cache's counts when it had any)."""
    parts = []
    for key, label in (("fx_graph", "fx"), ("aot_autograd", "aot")):
        state = (r.caches.get(key) or {}).get("state")
        if state:
            parts.append(f"{label} {state}")
    ac = r.caches.get("async_compile") or {}
    if ac:
        parts.append(f"async {ac.get('hit', 0)} hit/{ac.get('miss', 0)} miss")
    return ", ".join(parts) or "-"


def isolation_label(r: CompileReport) -> str:
    """Where the graph compiled: which worker, in-process and why, a cache, or what failed."""
    if r.outcome == "isolated":
        return f"worker {r.worker_pid}" if r.worker_pid else "worker"
    if r.outcome == "cache_hit":
        return f"no compile ({r.reason})" if r.reason else "no compile"
    if r.outcome == "in_process":
        return f"in-process: {r.reason}" if r.reason else "in-process"
    if r.failure is not None:
        pid = r.failure.worker_pid or r.worker_pid
        ran = {"eager": "ran eagerly", "in_process": "compiled in-process"}.get(r.fallback or "", "raised")
        return f"{r.failure.kind} in worker {pid}; {ran}" if pid else f"{r.failure.kind}; {ran}"
    return r.outcome


def graph_label(r: CompileReport) -> str:
    return f"#{r.graph_index} {r.graph_kind} {r.compile_id or '?'}"


def code_label(co_name: str | None, filename: str | None, line: int | None) -> str:
    where = f"{os.path.basename(filename)}:{line}" if filename else "?"
    return f"{co_name or '?'} ({where})"


def run_start(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> float:
    """Time zero of a run's timeline: its start, or its first compile if that came earlier."""
    starts = [r.started_at for r in reports] + [s.start for r in reports for s in r.stages]
    return min([float(run.get("started_at") or 0.0) or min(starts, default=0.0)] + starts)


def run_cards(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> dict[str, Any]:
    """The numbers at the top of the run page."""
    counts = {k: 0 for k in ("isolated", "cache_hit", "in_process", "failed")}
    for r in reports:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    t0 = run_start(run, reports)
    end = max((r.started_at + r.duration_s for r in reports), default=t0)
    return {
        "graphs": len(reports),
        "compile_s": sum(r.duration_s for r in reports),
        "span_s": end - t0 if reports else 0.0,
        "isolated": counts["isolated"],
        "cache_hits": counts["cache_hit"],
        "cache_hit_ratio": counts["cache_hit"] / len(reports) if reports else None,
        "in_process": counts["in_process"],
        "failures": counts["failed"],
        "kernels": sum(len(r.kernels) for r in reports),
        "workers": len({r.worker_pid for r in reports if r.worker_pid}),
    }


def run_facts(run: Mapping[str, Any]) -> pd.DataFrame:
    """The run's environment, one row per fact that is set."""
    rows = [
        ("run id", run.get("run_id")),
        ("name", run.get("name")),
        ("tags", ", ".join(run.get("tags") or [])),
        ("started", when(run.get("started_at")).strftime("%Y-%m-%d %H:%M:%S") if run.get("started_at") else None),
        ("host", run.get("hostname")),
        ("pid", run.get("pid")),
        ("device", run.get("device")),
        ("torch", run.get("torch")),
        ("triton", run.get("triton")),
        ("cuda", run.get("cuda")),
        ("python", run.get("python")),
        ("sandbox", run.get("sandbox")),
        ("git revision", run.get("git_revision")),
        ("job", run.get("job")),
        ("rank", run.get("rank")),
        ("world size", run.get("world_size")),
        ("command", " ".join(run.get("argv") or []) or None),
    ]
    for key, value in sorted((run.get("inductor_config") or {}).items()):
        rows.append((f"inductor config: {key}", repr(value)))
    return pd.DataFrame([(k, str(v)) for k, v in rows if v not in (None, "")], columns=["", "value"])


def graph_rows(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> pd.DataFrame:
    """One row per compiled graph: what, where, outcome, caches, isolation, when, how long."""
    t0 = run_start(run, reports)
    rows = []
    for r in reports:
        rows.append(
            {
                "graph": r.graph_index,
                "kind": r.graph_kind,
                "compile id": r.compile_id or "",
                "code": code_label(r.co_name, r.filename, r.line),
                "outcome": outcome_label(r),
                "caches": cache_label(r),
                "isolation": isolation_label(r),
                "start s": r.started_at - t0,
                "compile s": r.duration_s,
                "kernels": len(r.kernels),
                "eager calls": r.eager_calls if r.background else None,
                "switch s": r.switched_at - t0 if r.switched_at else None,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "graph",
            "kind",
            "compile id",
            "code",
            "outcome",
            "caches",
            "isolation",
            "start s",
            "compile s",
            "kernels",
            "eager calls",
            "switch s",
        ],
    )


def waterfall(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> pd.DataFrame:
    """Bars of the run's timeline: per graph, the sandbox's own stages (or the whole
    compile when it has none, e.g. an AOTAutograd cache hit), seconds from the run's start."""
    t0 = run_start(run, reports)
    rows = []
    for r in reports:
        common = {
            "graph": graph_label(r),
            "order": r.graph_index,
            "outcome": outcome_label(r),
            "caches": cache_label(r),
            "isolation": isolation_label(r),
        }
        stages = [s for s in r.stages if s.name in WATERFALL_STAGES and s.parent != "compile_in_worker"]
        if not stages:
            stages = [Stage(outcome_label(r), r.started_at, r.started_at + r.duration_s)]
        if r.background == "async":
            # From the end of the compile call to the switch (or the last thing known).
            until = r.switched_at or r.ready_at or max([s.end for s in r.stages] + [r.started_at + r.duration_s])
            stages.append(Stage(EAGER_BAR, r.started_at + r.duration_s, until))
        for s in sorted(stages, key=lambda s: s.start):
            rows.append(
                dict(common, stage=s.name, origin=s.origin, start=s.start - t0, end=s.end - t0, seconds=s.duration_s)
            )
    return pd.DataFrame(
        rows, columns=["graph", "order", "stage", "origin", "start", "end", "seconds", "outcome", "caches", "isolation"]
    )


def failures(reports: Sequence[CompileReport]) -> list[dict[str, Any]]:
    out = []
    for r in reports:
        f = r.failure
        if f is None:
            continue
        out.append(
            {
                "graph": graph_label(r),
                "code": code_label(r.co_name, r.filename, r.line),
                "kind": f.kind,
                "message": (f.message or "").strip() or "(no message)",
                "signal": f.signal,
                "exit_code": f.exit_code,
                "worker_pid": f.worker_pid or r.worker_pid,
                "fallback": {"eager": "ran eagerly instead", "in_process": "compiled in-process instead"}.get(
                    r.fallback or "", "the error was raised"
                ),
                "log_tail": list(f.log_tail),
                "traceback": f.traceback,
            }
        )
    return out


# -- one graph -----------------------------------------------------------------------------------


def find_report(reports: Sequence[CompileReport], graph: str | int | None) -> CompileReport | None:
    """A report by graph index (``"1"``) or report id; the first one when ``graph`` is empty."""
    if not reports:
        return None
    if graph in (None, ""):
        return reports[0]
    for r in reports:
        if str(r.graph_index) == str(graph) or r.report_id == str(graph):
            return r
    return None


def with_sources(store: Store, report: CompileReport) -> list[dict[str, Any]]:
    """The report's kernel entries, each with its source text (new dicts)."""
    sources = store.kernel_sources([k["source_hash"] for k in report.kernels if k.get("source_hash")])
    return [dict(k, source=k.get("source") or sources.get(k.get("source_hash") or "", "")) for k in report.kernels]


def _stage_parents(stages: Sequence[Stage]) -> list[int | None]:
    """Each stage's parent, by name and enclosing interval (names repeat in parent and worker)."""
    eps = 1e-6
    out: list[int | None] = []
    for i, s in enumerate(stages):
        best = None
        for j, t in enumerate(stages):
            if j == i or t.name != s.parent:
                continue
            if t.start - eps <= s.start and s.end <= t.end + eps:
                if best is None or stages[best].duration_s > t.duration_s:
                    best = j
        out.append(best)
    return out


def stage_tree(report: CompileReport) -> pd.DataFrame:
    """The stage tree in order (depth first, by start), with depth, own time and share."""
    stages = list(report.stages)
    parents = _stage_parents(stages)
    own = dict((id(s), t) for s, t in self_times(stages))
    children: dict[int | None, list[int]] = {}
    for i, p in enumerate(parents):
        children.setdefault(p, []).append(i)
    for kids in children.values():
        kids.sort(key=lambda i: (stages[i].start, -stages[i].end))
    total = report.duration_s or max((s.duration_s for s in stages), default=0.0) or 1.0
    rows = []

    def walk(parent: int | None, depth: int) -> None:
        for i in children.get(parent, []):
            s = stages[i]
            rows.append(
                {
                    "stage": "\u2003" * depth + ("\u2514 " if depth else "") + s.name,
                    "name": s.name,
                    "depth": depth,
                    "origin": s.origin,
                    "start s": s.start - report.started_at,
                    "duration s": s.duration_s,
                    "own s": own[id(s)],
                    "share": s.duration_s / total,
                }
            )
            walk(i, depth + 1)

    walk(None, 0)
    return pd.DataFrame(rows, columns=["stage", "name", "depth", "origin", "start s", "duration s", "own s", "share"])


def cache_rows(report: CompileReport) -> pd.DataFrame:
    rows = []
    for name, value in sorted(report.caches.items()):
        value = value if isinstance(value, dict) else {"state": value}
        state = value.get("state")
        if state is None and {"hit", "miss"} & set(value):
            state = f"{value.get('hit', 0)} hit, {value.get('miss', 0)} miss"
        details = ", ".join(
            f"{k}={v}" for k, v in sorted(value.items()) if k not in ("state", "hit", "miss") and v not in (None, "")
        )
        rows.append({"cache": name, "state": str(state or "-"), "details": details})
    return pd.DataFrame(rows, columns=["cache", "state", "details"])


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return f"{len(v)} values" if len(v) > 8 else str(list(v))
    return str(v)


def metric_rows(report: CompileReport, nonzero: bool = True) -> pd.DataFrame:
    """Inductor metrics, graph size and counter deltas, one row each (zeros and empties left out)."""
    rows = []
    for k, v in sorted(report.graph.items()):
        rows.append(("graph", k, v))
    for k, v in sorted(report.metrics.items()):
        rows.append(("inductor metric", k, v))
    for group, values in sorted(report.counters.items()):
        for k, v in sorted((values or {}).items()):
            rows.append((f"counter: {group}", k, v))
    if nonzero:
        rows = [r for r in rows if r[2] not in (0, 0.0, None, [], {}, "")]
    return pd.DataFrame([(a, b, _value(c)) for a, b, c in rows], columns=["group", "metric", "value"])


def launch_summary(kernel: Mapping[str, Any]) -> str:
    """``8 warps, 3 stages, 40 regs, 2 spills, 16384 B shared`` (the first launcher; GPU only)."""
    launchers = kernel.get("launchers") or []
    if not launchers:
        return ""
    first = launchers[0]
    parts = []
    for key, unit in (
        ("num_warps", "warps"),
        ("num_stages", "stages"),
        ("n_regs", "regs"),
        ("n_spills", "spills"),
        ("shared", "B shared"),
    ):
        if first.get(key) is not None:
            parts.append(f"{first[key]} {unit}")
    more = f" (+{len(launchers) - 1} more)" if len(launchers) > 1 else ""
    return ", ".join(parts) + more


def kernel_rows(kernels: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "kernel": k.get("name"),
            "kind": k.get("kind"),
            "lines": k.get("lines") or 0,
            "calls": k.get("calls") or 0,
            "source hash": (k.get("source_hash") or "")[:12],
            "launch": launch_summary(k),
        }
        for k in kernels
    ]
    return pd.DataFrame(rows, columns=["kernel", "kind", "lines", "calls", "source hash", "launch"])


def code_language(kernel: Mapping[str, Any]) -> str:
    """Highlighting for a kernel's source: C++ for the CPU backend, Python for Triton."""
    if kernel.get("kind") == "cpp":
        return "cpp"
    src = kernel.get("source") or ""
    if src.lstrip().startswith("#include") or 'extern "C"' in src:
        return "cpp"
    return "python"


# -- GPU: Triton autotuning (kernel["triton"]) and max-autotune's choices (report.autotune) ---------


def config_label(cfg: Mapping[str, Any] | None) -> str:
    """``XBLOCK=16, num_warps=2, num_stages=1``: a Triton config's block sizes, warps and stages."""
    cfg = cfg or {}
    keys = block_keys(cfg) + [k for k in ("num_warps", "num_stages") if k in cfg]
    return ", ".join(f"{k}={cfg[k]}" for k in keys)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The same block sizes, warps and stages (registers and timings aside)."""
    keys = block_keys(a, b) + ["num_warps", "num_stages"]
    return any(k in a for k in keys) and all(a.get(k) == b.get(k) for k in keys)


def _best_ms(timings: Sequence[Mapping[str, Any]]) -> float | None:
    return min((x["ms"] for x in timings if x.get("ms") is not None), default=None)


def triton_kernel_rows(kernels: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per Triton kernel with autotuning details (GPU reports): the autotune cache
    state, candidate and benchmarked configs, the chosen config with its registers, spills
    and shared memory, the best benchmark time, compile and autotune seconds."""
    rows = []
    for k in kernels:
        t = k.get("triton")
        if not isinstance(t, Mapping):
            continue
        chosen = t.get("chosen") or {}
        timings = t.get("autotune_timings") or []
        rows.append(
            {
                "kernel": k.get("name"),
                "kind": k.get("kind"),
                "autotune cache": t.get("autotune_cache") or "",
                "configs": len(t.get("configs") or []),
                "benchmarked": len(timings),
                "chosen": config_label(chosen),
                "best ms": _best_ms(timings),
                "registers": chosen.get("n_regs"),
                "spills": chosen.get("n_spills"),
                "shared": chosen.get("shared"),
                "compile s": t.get("compile_time_s"),
                "autotune s": t.get("autotune_time_s"),
                "coordinate descent": bool(t.get("coordinate_descent")),
                "after first run": bool(t.get("first_run")),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "kernel",
            "kind",
            "autotune cache",
            "configs",
            "benchmarked",
            "chosen",
            "best ms",
            "registers",
            "spills",
            "shared",
            "compile s",
            "autotune s",
            "coordinate descent",
            "after first run",
        ],
    ).astype({"best ms": float, "compile s": float, "autotune s": float})


def autotune_timing_rows(kernel: Mapping[str, Any]) -> pd.DataFrame:
    """A Triton kernel's autotune candidates, fastest first: each benchmarked config with its
    time, its time over the best one, whether it was chosen, and the compiled candidate's
    registers, spills and shared memory where known. Without benchmark timings (one config,
    an autotune cache hit) the candidate configs alone."""
    t = kernel.get("triton") or {}
    chosen = t.get("chosen") or {}
    configs = [c for c in t.get("configs") or [] if isinstance(c, Mapping)]
    timings = [x for x in t.get("autotune_timings") or [] if isinstance(x, Mapping)]
    entries = [(x.get("config") or {}, x.get("ms")) for x in timings] or [(c, None) for c in configs]
    best = _best_ms(timings)
    rows = []
    for cfg, ms in entries:
        compiled = next((c for c in [*configs, chosen] if c and _same_config(cfg, c)), {})
        rows.append(
            {
                "config": config_label(cfg),
                "ms": ms,
                "x best": ms / best if ms is not None and best else None,
                "chosen": bool(chosen) and _same_config(cfg, chosen),
                "registers": compiled.get("n_regs"),
                "spills": compiled.get("n_spills"),
                "shared": compiled.get("shared"),
            }
        )
    df = pd.DataFrame(rows, columns=["config", "ms", "x best", "chosen", "registers", "spills", "shared"])
    df = df.astype({"ms": float, "x best": float})
    return df.sort_values("ms", kind="stable", na_position="last").reset_index(drop=True)


def shapes_label(shapes: Sequence[Any] | None) -> str:
    """``32x192, 32x64``: the input shapes of a tuned op."""
    return ", ".join("x".join(str(d) for d in s) if isinstance(s, (list, tuple)) else "?" for s in shapes or [])


def _chosen(entry: Mapping[str, Any] | None) -> Mapping[str, Any]:
    cands = (entry or {}).get("candidates") or []
    return next((c for c in cands if c.get("name") == (entry or {}).get("chosen")), {})


def autotune_choice_rows(autotune: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """max-autotune's tuned ops (``report.autotune``), one row each: input shapes, the choice
    and its time, the fastest extern (ATen) candidate and how many times faster the choice was."""
    rows = []
    for i, entry in enumerate(autotune):
        cands = entry.get("candidates") or []
        chosen = _chosen(entry)
        externs = [c for c in cands if c.get("kind") == "extern" and c.get("ms") is not None]
        extern = min(externs, key=lambda c: c["ms"]) if externs else {}
        ms = chosen.get("ms")
        rows.append(
            {
                "op": entry.get("op"),
                "input shapes": shapes_label(entry.get("input_shapes")),
                "chosen": entry.get("chosen"),
                "chosen kind": chosen.get("kind"),
                "chosen ms": ms,
                "fastest extern": extern.get("name") or "",
                "extern ms": extern.get("ms"),
                "speed-up": extern["ms"] / ms if extern and ms else None,
                "candidates": len(cands),
                "i": i,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "op",
            "input shapes",
            "chosen",
            "chosen kind",
            "chosen ms",
            "fastest extern",
            "extern ms",
            "speed-up",
            "candidates",
            "i",
        ],
    ).astype({"chosen ms": float, "extern ms": float, "speed-up": float})


def autotune_candidate_rows(entry: Mapping[str, Any]) -> pd.DataFrame:
    """The candidates of one tuned op, fastest first, the chosen one marked."""
    rows = [
        {
            "candidate": c.get("name"),
            "kind": c.get("kind"),
            "ms": c.get("ms"),
            "chosen": c.get("name") == entry.get("chosen"),
            "description": c.get("description") or "",
        }
        for c in entry.get("candidates") or []
    ]
    df = pd.DataFrame(rows, columns=["candidate", "kind", "ms", "chosen", "description"]).astype({"ms": float})
    return df.sort_values("ms", kind="stable", na_position="last").reset_index(drop=True)


# -- compare ----------------------------------------------------------------------------------


def compare(store: Store, run_a: str, run_b: str) -> RunDiff:
    """Run A (before) against run B (after): ``sandbox.diff.compare_runs``, sources from the store."""
    ra, rb = store.get_run(run_a), store.get_run(run_b)
    return compare_runs(
        ra, store.reports(ra["run_id"]), rb, store.reports(rb["run_id"]), load_sources=store.kernel_sources
    )


def change_label(gc: GraphChange) -> str:
    where = f"{os.path.basename(gc.filename)}:{gc.line}" if gc.filename else "?"
    return f"{gc.co_name or '?'} ({where}) {gc.graph_kind}" + (f" #{gc.order}" if gc.order else "")


def _pct(a: float | None, b: float | None) -> float | None:
    return (b - a) / a if a and b is not None else None


def is_regression(a_s: float | None, b_s: float | None) -> bool:
    if a_s is None or b_s is None:
        return False
    return b_s - a_s >= REGRESSION_MIN_S and (not a_s or (b_s - a_s) / a_s >= REGRESSION_PCT)


def graph_change_rows(d: RunDiff) -> pd.DataFrame:
    rows = []
    for gc in d.graph_changes:
        a, b = gc.a or {}, gc.b or {}
        counts = gc.kernel_counts()
        oa, ob = a.get("outcome"), b.get("outcome")
        rows.append(
            {
                "graph": change_label(gc),
                "status": gc.status,
                "outcome": (oa if oa == ob else f"{oa} \u2192 {ob}") if gc.status == "matched" else (ob or oa),
                "A s": a.get("duration_s"),
                "B s": b.get("duration_s"),
                "delta s": gc.duration_delta_s,
                "change": _pct(a.get("duration_s"), b.get("duration_s")) if gc.status == "matched" else None,
                "kernels +": counts["added"] if gc.kernels_compared else None,
                "kernels -": counts["removed"] if gc.kernels_compared else None,
                "kernels ~": counts["changed"] if gc.kernels_compared else None,
                "kernels =": counts["unchanged"] if gc.kernels_compared else None,
                "regression": gc.status == "matched" and is_regression(a.get("duration_s"), b.get("duration_s")),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "graph",
            "status",
            "outcome",
            "A s",
            "B s",
            "delta s",
            "change",
            "kernels +",
            "kernels -",
            "kernels ~",
            "kernels =",
            "regression",
        ],
    )


def _launchers(kc: KernelChange, side: int) -> list[dict[str, Any]] | None:
    pair = kc.fields.get("launchers")
    return pair[side] if pair else None


def block_keys(*configs: Mapping[str, Any]) -> list[str]:
    """The block sizes a Triton launcher or config names (``XBLOCK``, ``YBLOCK``, ``R0_BLOCK``, ...)."""
    return sorted({k for c in configs for k in c if k.endswith("BLOCK")})


def launch_delta_summary(kc: KernelChange) -> dict[str, Any]:
    """Warps, stages, registers, spills, shared memory and block sizes of the first launcher,
    A and B, when they changed."""
    la, lb = _launchers(kc, 0), _launchers(kc, 1)
    if not la and not lb:
        return {}
    a, b = (la or [{}])[0], (lb or [{}])[0]
    keys = list(LAUNCH_FIELDS) + block_keys(a, b)
    return {key: (a.get(key), b.get(key)) for key in keys if a.get(key) != b.get(key)}


def kernel_change_rows(d: RunDiff, include_unchanged: bool = False) -> pd.DataFrame:
    rows = []
    for gi, gc in enumerate(d.graph_changes):
        for ki, kc in enumerate(gc.kernels):
            if kc.status == "unchanged" and not include_unchanged:
                continue
            launch = launch_delta_summary(kc)
            what = []
            if kc.source_changed:
                what.append("source")
            what += [LAUNCH_LABELS.get(k, k) for k in launch]
            what += [k for k in kc.fields if k != "launchers"]
            rows.append(
                {
                    "graph": change_label(gc),
                    "status": kc.status,
                    "kind": kc.kind,
                    "kernel A": kc.name_a or "",
                    "kernel B": kc.name_b or "",
                    "similarity": kc.similarity,
                    "lines A": kc.lines_a,
                    "lines B": kc.lines_b,
                    "what changed": ", ".join(what),
                    "registers": _arrow(launch.get("n_regs")),
                    "spills": _arrow(launch.get("n_spills")),
                    "shared": _arrow(launch.get("shared")),
                    "warps": _arrow(launch.get("num_warps")),
                    "block sizes": ", ".join(
                        f"{key} {_arrow(pair)}" for key, pair in launch.items() if key.endswith("BLOCK")
                    ),
                    "g": gi,
                    "k": ki,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "graph",
            "status",
            "kind",
            "kernel A",
            "kernel B",
            "similarity",
            "lines A",
            "lines B",
            "what changed",
            "registers",
            "spills",
            "shared",
            "warps",
            "block sizes",
            "g",
            "k",
        ],
    )


def _arrow(pair: tuple[Any, Any] | None) -> str:
    return "" if not pair else f"{pair[0]} \u2192 {pair[1]}"


def kernel_pair(store: Store, d: RunDiff, g: int, k: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Both sides' full kernel entries (sources included) of ``d.graph_changes[g].kernels[k]``."""
    gc = d.graph_changes[g]
    kc = gc.kernels[k]

    def entry(side: dict[str, Any] | None, run_id: str, name: str | None, digest: str | None) -> dict[str, Any] | None:
        if side is None or name is None:
            return None
        report = next((r for r in store.reports(run_id) if r.report_id == side["report_id"]), None)
        if report is None:
            return None
        found = [x for x in report.kernels if x.get("name") == name]
        found = [x for x in found if x.get("source_hash") == digest] or found
        if not found:
            return None
        k = dict(found[0])
        if not k.get("source") and k.get("source_hash"):
            k["source"] = store.kernel_sources([k["source_hash"]]).get(k["source_hash"], "")
        return k

    return (entry(gc.a, d.a["run_id"], kc.name_a, kc.hash_a), entry(gc.b, d.b["run_id"], kc.name_b, kc.hash_b))


def side_by_side(a: str, b: str, context: int | None = None) -> pd.DataFrame:
    """Two sources aligned line by line: ``op`` is equal / replace / delete / insert.
    With ``context``, equal runs longer than that are cut to their edges."""
    la, lb = a.splitlines(), b.splitlines()
    rows = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, la, lb, autojunk=False).get_opcodes():
        n = max(i2 - i1, j2 - j1)
        for x in range(n):
            if op == "equal" and context is not None and context <= x < n - context:
                if x == context:
                    rows.append(
                        {
                            "line A": None,
                            "A": f"... {n - 2 * context} equal lines ...",
                            "line B": None,
                            "B": "",
                            "op": "skip",
                        }
                    )
                continue
            ia, ib = i1 + x, j1 + x
            rows.append(
                {
                    "line A": ia + 1 if ia < i2 else None,
                    "A": la[ia] if ia < i2 else "",
                    "line B": ib + 1 if ib < j2 else None,
                    "B": lb[ib] if ib < j2 else "",
                    "op": op,
                }
            )
    df = pd.DataFrame(rows, columns=["line A", "A", "line B", "B", "op"])
    df["line A"] = df["line A"].astype("Int64")
    df["line B"] = df["line B"].astype("Int64")
    return df


def unified_diff(a: str, b: str, name_a: str = "A", name_b: str = "B") -> str:
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), fromfile=name_a, tofile=name_b, n=3))


def launch_rows(ka: Mapping[str, Any] | None, kb: Mapping[str, Any] | None) -> pd.DataFrame:
    """Launch configs of a kernel in A and B, per launcher and field (GPU reports; empty on CPU)."""
    la, lb = list((ka or {}).get("launchers") or []), list((kb or {}).get("launchers") or [])
    rows = []
    for i in range(max(len(la), len(lb))):
        a, b = (la[i] if i < len(la) else {}), (lb[i] if i < len(lb) else {})
        keys = [k for k in LAUNCH_FIELDS if k in a or k in b] + sorted((set(a) | set(b)) - set(LAUNCH_FIELDS))
        for key in keys:
            va, vb = a.get(key), b.get(key)
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
            rows.append(
                {
                    "launcher": i,
                    "field": LAUNCH_LABELS.get(key, key),
                    "A": _value(va) if va is not None else "",
                    "B": _value(vb) if vb is not None else "",
                    "delta": (vb - va) if numeric else None,
                    "changed": va != vb,
                }
            )
    return pd.DataFrame(rows, columns=["launcher", "field", "A", "B", "delta", "changed"])


def triton_detail_rows(ka: Mapping[str, Any] | None, kb: Mapping[str, Any] | None) -> pd.DataFrame:
    """A kernel's Triton autotuning in A and B, per field (GPU reports; empty without them)."""
    ta, tb = (ka or {}).get("triton"), (kb or {}).get("triton")
    if not isinstance(ta, Mapping) and not isinstance(tb, Mapping):
        return pd.DataFrame(columns=["field", "A", "B", "changed"])

    def facts(t: Any) -> dict[str, Any]:
        if not isinstance(t, Mapping):
            return {}
        timings = t.get("autotune_timings") or []
        return {
            "autotune cache": t.get("autotune_cache"),
            "candidate configs": len(t.get("configs") or []),
            "benchmarked configs": len(timings),
            "chosen config": config_label(t.get("chosen")),
            "best ms": _best_ms(timings),
            "compile s": t.get("compile_time_s"),
            "autotune s": t.get("autotune_time_s"),
            "coordinate descent": bool(t.get("coordinate_descent")),
        }

    fa, fb = facts(ta), facts(tb)
    rows = []
    for key in fa or fb:
        va, vb = fa.get(key), fb.get(key)
        rows.append(
            {
                "field": key,
                "A": "" if va is None else _value(va),
                "B": "" if vb is None else _value(vb),
                "changed": va != vb,
            }
        )
    return pd.DataFrame(rows, columns=["field", "A", "B", "changed"])


def autotune_change_rows(
    d: RunDiff, reports_a: Sequence[CompileReport], reports_b: Sequence[CompileReport]
) -> pd.DataFrame:
    """max-autotune's choices in both runs, graph pair by graph pair: each tuned op (matched
    by op and input shapes, in order) with its choice and time in A and in B."""
    by_id = {r.report_id: r for r in [*reports_a, *reports_b]}

    def keyed(report: CompileReport | None) -> dict[tuple[Any, str, int], Mapping[str, Any]]:
        seen: dict[tuple[Any, str], int] = {}
        out = {}
        for entry in report.autotune if report is not None else []:
            base = (entry.get("op"), shapes_label(entry.get("input_shapes")))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out[(*base, n)] = entry
        return out

    rows = []
    for gc in d.graph_changes:
        ea = keyed(by_id.get((gc.a or {}).get("report_id")))
        eb = keyed(by_id.get((gc.b or {}).get("report_id")))
        for key in [*eb, *(k for k in ea if k not in eb)]:
            a, b = ea.get(key), eb.get(key)
            if a is None or b is None:
                status = "only in B" if a is None else "only in A"
            else:
                status = "same choice" if a.get("chosen") == b.get("chosen") else "other choice"
            rows.append(
                {
                    "graph": change_label(gc),
                    "op": key[0],
                    "input shapes": key[1],
                    "status": status,
                    "A chosen": (a or {}).get("chosen") or "",
                    "A ms": _chosen(a).get("ms"),
                    "B chosen": (b or {}).get("chosen") or "",
                    "B ms": _chosen(b).get("ms"),
                    "B kind": _chosen(b).get("kind") or "",
                }
            )
    return pd.DataFrame(
        rows, columns=["graph", "op", "input shapes", "status", "A chosen", "A ms", "B chosen", "B ms", "B kind"]
    ).astype({"A ms": float, "B ms": float})


def stage_delta_rows(d: RunDiff) -> pd.DataFrame:
    rows = [
        {
            "stage": s["stage"] + (" [worker]" if s["origin"] == "worker" else ""),
            "A s": s["a_s"],
            "B s": s["b_s"],
            "delta s": s["delta_s"],
            "change": _pct(s["a_s"], s["b_s"]),
            "regression": is_regression(s["a_s"], s["b_s"]),
        }
        for s in d.stage_deltas
    ]
    return pd.DataFrame(rows, columns=["stage", "A s", "B s", "delta s", "change", "regression"])


def metric_delta_rows(d: RunDiff) -> pd.DataFrame:
    rows = [
        {
            "metric": m["metric"],
            "A": float(m["a"]),
            "B": float(m["b"]),
            "delta": float(m["delta"]),
            "change": _pct(m["a"], m["b"]),
        }
        for m in d.metric_deltas
    ]
    return pd.DataFrame(rows, columns=["metric", "A", "B", "delta", "change"])


def environment_rows(d: RunDiff) -> pd.DataFrame:
    return pd.DataFrame(
        [(k, repr(a), repr(b)) for k, (a, b) in sorted(d.environment.items())], columns=["setting", "A", "B"]
    )


def _stage_words(name: str) -> str:
    return STAGE_WORDS.get(name, name)


def _count_words(counts: Mapping[str, int], kind: str | None = None) -> str:
    noun = f"{kind} kernel" if kind and kind not in ("?", "") else "kernel"
    parts = []
    for status, word in (("added", "new"), ("removed", "removed"), ("changed", "changed")):
        n = counts.get(status, 0)
        if n:
            parts.append(f"{n} {word} {noun}{'s' if n != 1 else ''}")
    return ", ".join(parts)


def _main_kind(kernels: Iterable[KernelChange]) -> str | None:
    kinds = {k.kind for k in kernels if k.status != "unchanged"}
    return kinds.pop() if len(kinds) == 1 else None


def _change_words(a: float, b: float) -> str:
    """``B compiled 16% slower (13.88 s \u2192 16.15 s)``"""
    pct = round(abs(b - a) / a * 100) if a else 0  # the figure printed: never "0% faster"
    if pct >= 1:
        return f"B compiled {pct}% {'slower' if b > a else 'faster'} ({a:.2f} s \u2192 {b:.2f} s)"
    return f"about the same compile time ({a:.2f} s \u2192 {b:.2f} s)"


def verdict(d: RunDiff) -> list[str]:
    """A few sentences saying what changed from A to B, the biggest change first, e.g.
    ``backward graph #1 (0/0) compiled 40% slower (+1.20 s): kernel compile +0.90 s; 3 new triton kernels``."""
    out = []
    ta, tb = d.a["compile_s"], d.b["compile_s"]
    matched = [gc for gc in d.graph_changes if gc.status == "matched" and gc.duration_delta_s is not None]
    if matched:
        gc = max(matched, key=lambda g: abs(g.duration_delta_s or 0.0))
        a_s, b_s = gc.a["duration_s"], gc.b["duration_s"]
        delta = b_s - a_s
        if abs(delta) >= REGRESSION_MIN_S and a_s:
            direction = "slower" if delta > 0 else "faster"
            sentence = (
                f"{gc.graph_kind} graph #{gc.b['graph_index']} of "
                f"{code_label(gc.co_name, gc.filename, gc.line)} compiled {abs(delta) / a_s:.0%} {direction} "
                f"({delta:+.2f} s)"
            )
            same_way = [s for s in gc.stage_deltas if (s["delta_s"] > 0) == (delta > 0)]
            because = []
            if same_way:
                top = same_way[0]
                because.append(f"{_stage_words(top['stage'])} {top['delta_s']:+.2f} s")
            if gc.kernels_compared:
                words = _count_words(gc.kernel_counts(), _main_kind(gc.kernels))
                if words:
                    because.append(words)
            out.append(sentence + (": " + "; ".join(because) if because else "") + ".")
    if matched and (d.graphs["added"] or d.graphs["removed"]):
        ma = sum(gc.a["duration_s"] for gc in matched)
        mb = sum(gc.b["duration_s"] for gc in matched)
        out.append(
            f"On the {len(matched)} graph{'s' if len(matched) != 1 else ''} both runs compiled: "
            f"{_change_words(ma, mb)}."
        )
    if ta or tb:
        sizes = (
            f"{d.a['graphs']} graphs in A, {d.b['graphs']} in B"
            if d.a["graphs"] != d.b["graphs"]
            else f"{d.b['graphs']} graphs"
        )
        out.append(f"In all: {_change_words(ta, tb)} ({sizes}).")
    k = d.kernels
    if k["added"] or k["removed"] or k["changed"]:
        out.append(
            f"Kernels: {k['added']} added, {k['removed']} removed, {k['changed']} changed, {k['unchanged']} unchanged."
        )
    elif k["unchanged"]:
        out.append(f"The same {k['unchanged']} kernels in both runs.")
    blind = [gc for gc in d.graph_changes if not gc.kernels_compared]
    if blind:
        out.append(
            f"Kernels not compared for {len(blind)} graph{'s' if len(blind) != 1 else ''}: a cache served "
            f"{'them' if len(blind) != 1 else 'it'} whole or the compile failed, so one side has no kernel list."
        )
    g = d.graphs
    if g["added"] or g["removed"]:
        only = [
            f"{change_label(gc)} only in {'B' if gc.status == 'added' else 'A'}"
            for gc in d.graph_changes
            if gc.status != "matched"
        ]
        out.append(
            f"Graphs: {g['matched']} matched, {g['added']} only in B, {g['removed']} only in A "
            f"({'; '.join(only[:3])}{'; ...' if len(only) > 3 else ''})."
        )
    spills = []
    for gc in d.graph_changes:
        for kc in gc.kernels:
            pair = launch_delta_summary(kc).get("n_spills")
            if pair and (pair[1] or 0) > (pair[0] or 0):
                spills.append(f"{kc.name_b} ({pair[0]} \u2192 {pair[1]})")
    if spills:
        out.append(
            f"Register spills grew in {len(spills)} kernel{'s' if len(spills) != 1 else ''}: {', '.join(spills[:3])}."
        )
    if d.environment:
        changes = [
            f"{key} {va!r} \u2192 {vb!r}" for key, (va, vb) in sorted(d.environment.items()) if key != "hostname"
        ]
        if changes:
            out.append("What differs: " + "; ".join(changes[:4]) + ("; ..." if len(changes) > 4 else "") + ".")
    return out


# -- trends ---------------------------------------------------------------------------------------


def report_durations(store: Store, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """``run_id, duration_s, outcome`` of every report (of ``run_ids``): indexed columns only,
    no report JSON parsed. The Store API has no such query; its own SQL helper reads them."""
    sql = "SELECT run_id, duration_s, outcome FROM reports"
    rows: list[tuple] = []
    if run_ids is None:
        rows = store._query(sql)
    else:
        ids = list(run_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows += store._query(sql + f" WHERE run_id IN ({','.join('?' * len(chunk))})", chunk)
    return pd.DataFrame(rows, columns=["run_id", "duration_s", "outcome"]).astype({"duration_s": float})


def trends(runs: pd.DataFrame, durations: pd.DataFrame) -> pd.DataFrame:
    """Per run, oldest first: graph compile latency percentiles (p50, p90, p99, max; all
    graphs, cache hits included) and the cache hit ratio."""
    cols = [
        "run_id",
        "name",
        "started",
        "started_at",
        "graphs",
        "p50 s",
        "p90 s",
        "p99 s",
        "max s",
        "compile s",
        "cache hit ratio",
        "failures",
    ]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    d = durations[durations["run_id"].isin(set(runs["run_id"]))]
    grouped = d.groupby("run_id")["duration_s"]
    stats = pd.DataFrame(
        {
            "p50 s": grouped.quantile(0.5),
            "p90 s": grouped.quantile(0.9),
            "p99 s": grouped.quantile(0.99),
            "max s": grouped.max(),
        }
    )
    out = (
        runs.set_index("run_id")[
            ["name", "started", "started_at", "graphs", "compile_s", "cache_hit_ratio", "failures"]
        ]
        .join(stats, how="left")
        .reset_index()
    )
    out = out.rename(columns={"compile_s": "compile s", "cache_hit_ratio": "cache hit ratio"})
    out = out[out["graphs"] > 0].sort_values("started_at")
    return out[cols].reset_index(drop=True)


# -- cached entry points for the pages ---------------------------------------------------------------

# -- jobs: the ranks of one job side by side ------------------------------------------------------

FINDING_WORDS = {
    "graph": "a different graph",
    "missing": "missing on some ranks",
    "cache": "different cache outcomes",
    "kernels": "different kernels",
    "straggler": "a straggler",
}


def jobs_frame(store: Store) -> pd.DataFrame:
    """Every job in the store, newest first (``sandbox.jobs.jobs``)."""
    rows = jobs.jobs(store.runs())
    frame = pd.DataFrame(
        rows, columns=["job", "ranks", "world_size", "runs", "names", "hosts", "started_at", "compile_s", "graphs"]
    )
    frame["started"] = [when(t) for t in frame["started_at"]]
    frame["names"] = [", ".join(n) for n in frame["names"]]
    frame["hosts"] = [", ".join(h) for h in frame["hosts"]]
    return frame


def job_label(row: Mapping[str, Any]) -> str:
    started = when(row.get("started_at"))
    names = f" {row['names']}" if row.get("names") else ""
    return f"{row['job']}{names} · {row['ranks']} ranks · {started:%Y-%m-%d %H:%M}" if started else str(row["job"])


def previous_job(frame: pd.DataFrame, job: str) -> str | None:
    """The job to compare with by default: the newest earlier job of the same run name, else the one before."""
    rows = [dict(r, names=[n for n in str(r["names"]).split(", ") if n]) for r in frame.to_dict("records")]
    return jobs.previous_job(job, rows)


def job_report(store: Store, job: str, against: str | None = None) -> jobs.JobReport:
    earlier = (against, store.runs(job=against)) if against else None
    return jobs.analyse_job(job, store.runs(job=job), store.reports, earlier=earlier)


def job_cards(report: jobs.JobReport) -> dict[str, Any]:
    slowest = max(report.runs, key=lambda r: r.compile_s)
    return {
        "ranks": len(report.runs),
        "world_size": report.world_size,
        "graphs": len(report.graphs),
        "divergent": len(report.divergent),
        "stragglers": sorted(
            {r for g in report.graphs for r in g.stragglers} | {r.rank for r in report.runs if r.straggler}
        ),
        "slowest_rank": slowest.rank,
        "slowest_s": slowest.compile_s,
        "median_s": report.median_compile_s,
    }


def job_rank_rows(report: jobs.JobReport) -> pd.DataFrame:
    rows = [
        {
            "rank": r.rank,
            "run_id": r.run_id,
            "host": r.hostname,
            "pid": r.pid,
            "started": when(r.started_at),
            "graphs": r.graphs,
            "compile s": r.compile_s,
            "cache hits": r.cache_hits,
            "failures": r.failures,
            "straggler": r.straggler,
            "restarts": r.restarts,
        }
        for r in report.runs
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "rank",
            "run_id",
            "host",
            "pid",
            "started",
            "graphs",
            "compile s",
            "cache hits",
            "failures",
            "straggler",
            "restarts",
        ],
    )


def _ranks_text(ranks: Sequence[int]) -> str:
    return ", ".join(str(r) for r in ranks)


def job_graph_rows(report: jobs.JobReport) -> pd.DataFrame:
    """One row per graph: what diverges across the ranks."""
    rows = []
    for i, g in enumerate(report.graphs):
        rows.append(
            {
                "g": i,
                "graph": code_label(g.co_name, g.filename, g.line) + (f" #{g.order}" if g.order else ""),
                "kind": g.graph_kind,
                "divergence": ", ".join(FINDING_WORDS[f] for f in g.findings),
                "ranks": len(g.ranks),
                "graph hashes": len(g.hash_groups),
                "cache outcomes": " | ".join(f"{label}: {_ranks_text(rs)}" for label, rs in g.cache_groups.items()),
                "kernels differ on": _ranks_text(g.kernel_ranks),
                "stragglers": _ranks_text(g.stragglers),
                "missing on": _ranks_text(g.missing),
                "median s": g.median_s,
                "slowest s": max(r.duration_s for r in g.ranks),
                "diverges": bool(g.findings),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "g",
            "graph",
            "kind",
            "divergence",
            "ranks",
            "graph hashes",
            "cache outcomes",
            "kernels differ on",
            "stragglers",
            "missing on",
            "median s",
            "slowest s",
            "diverges",
        ],
    )


def job_graph_ranks(report: jobs.JobReport, g: int) -> pd.DataFrame:
    """One graph, a row per rank."""
    graph = report.graphs[g]
    run_ids = {r.rank: r.run_id for r in report.runs}
    rows = []
    for r in graph.ranks:
        c = r.kernel_changes
        rows.append(
            {
                "rank": r.rank,
                "compile id": r.compile_id,
                "outcome": r.outcome,
                "caches": r.cache,
                "graph hash": (r.graph_hash or "")[:16],
                "time s": r.duration_s,
                "kernels": r.kernels,
                "kernels vs lowest rank": ""
                if c is None
                else f"+{c['added']} -{c['removed']} ~{c['changed']} ={c['unchanged']}",
                "straggler": r.straggler,
                "run_id": run_ids.get(r.rank),
                "graph_index": r.graph_index,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "rank",
            "compile id",
            "outcome",
            "caches",
            "graph hash",
            "time s",
            "kernels",
            "kernels vs lowest rank",
            "straggler",
            "run_id",
            "graph_index",
        ],
    )


def job_verdict(report: jobs.JobReport) -> list[str]:
    """What a reader should know first, in sentences."""
    cards = job_cards(report)
    lines = []
    if report.missing_ranks:
        lines.append(f"Ranks {_ranks_text(report.missing_ranks)} of {report.world_size} have no run in this store.")
    divergent = report.divergent
    if not divergent:
        lines.append(f"All {cards['ranks']} ranks compiled the same {cards['graphs']} graphs the same way.")
    else:
        counts = ", ".join(f"{n} with {FINDING_WORDS[f]}" for f, n in report.counts.items() if n)
        lines.append(f"{len(divergent)} of {cards['graphs']} graphs differ across ranks: {counts}.")
    for g in divergent:
        where = code_label(g.co_name, g.filename, g.line) + f" {g.graph_kind}"
        if "graph" in g.findings:
            groups = "; ".join(f"ranks {_ranks_text(rs)}" for rs in g.hash_groups)
            lines.append(f"{where}: the ranks traced different graphs (other shapes or guards): {groups}.")
        if "straggler" in g.findings:
            durations = {r.rank: r.duration_s for r in g.ranks}
            slow = ", ".join(
                f"rank {r.rank} took {r.duration_s:.2f} s against the other ranks' median of "
                f"{jobs.others_median(durations, r.rank):.2f} s"
                for r in g.ranks
                if r.straggler
            )
            lines.append(f"{where}: a straggler: {slow}.")
    slow_ranks = [r for r in report.runs if r.straggler]
    if slow_ranks:
        lines.append(
            "Slowest overall: "
            + ", ".join(f"rank {r.rank} ({r.compile_s:.2f} s)" for r in slow_ranks)
            + f", against a median of {report.median_compile_s:.2f} s per rank."
        )
    if report.against is not None:
        a = report.against
        before, now = a.compile_s
        lines.append(
            f"Against {a.earlier}: the slowest rank compiled {before:.2f} s then, {now:.2f} s now"
            f" ({now - before:+.2f} s)."
        )
        changed = [g for g in a.graphs if g.hash_changed or g.status != "matched"]
        if changed:
            lines.append(f"{len(changed)} graph(s) new, gone or traced differently since {a.earlier}.")
    return lines


def job_against_rows(report: jobs.JobReport) -> pd.DataFrame:
    a = report.against
    rows = (
        []
        if a is None
        else [
            {
                "rank": r.rank,
                "then s": r.compile_s[0],
                "now s": r.compile_s[1],
                "delta s": r.compile_s[1] - r.compile_s[0],
                "graphs matched": r.graphs["matched"],
                "graphs new": r.graphs["added"],
                "graphs gone": r.graphs["removed"],
                "kernels changed": r.kernels["changed"],
                "kernels new": r.kernels["added"],
                "kernels gone": r.kernels["removed"],
                "environment": ", ".join(sorted(r.environment)),
                "then": r.earlier_run,
                "now": r.run,
            }
            for r in a.ranks
        ]
    )
    return pd.DataFrame(
        rows,
        columns=[
            "rank",
            "then s",
            "now s",
            "delta s",
            "graphs matched",
            "graphs new",
            "graphs gone",
            "kernels changed",
            "kernels new",
            "kernels gone",
            "environment",
            "then",
            "now",
        ],
    )


def job_against_graph_rows(report: jobs.JobReport) -> pd.DataFrame:
    a = report.against
    rows = (
        []
        if a is None
        else [
            {
                "graph": code_label(g.co_name, g.filename, g.line) + (f" #{g.order}" if g.order else ""),
                "kind": g.graph_kind,
                "status": {"matched": "in both", "added": "new", "removed": "gone"}[g.status],
                "then s (median)": g.earlier_s,
                "now s (median)": g.now_s,
                "graph changed": g.hash_changed,
            }
            for g in a.graphs
        ]
    )
    return pd.DataFrame(rows, columns=["graph", "kind", "status", "then s (median)", "now s (median)", "graph changed"])


_cache = st.cache_resource(show_spinner=False, max_entries=64)


@st.cache_resource(show_spinner=False, max_entries=8)
def store_at(location: str) -> Store:
    """One read-only connection per location, shared by every session (the Store locks)."""
    return open_readonly(location)


def source(location: str) -> Source:
    """Opens (once) and fingerprints the store; raises ``StoreError`` when it cannot be read."""
    return Source(location, fingerprint(store_at(location)))


@_cache
def cached_runs(src: Source, limit: int | None = None) -> pd.DataFrame:
    return runs_frame(store_at(src.location), limit)


@_cache
def cached_run(src: Source, run_id: str) -> tuple[dict[str, Any], list[CompileReport]]:
    return load_run(store_at(src.location), run_id)


@_cache
def cached_resolve(src: Source, ref: str) -> dict[str, Any] | None:
    return resolve_run(store_at(src.location), ref)


@_cache
def cached_kernels(src: Source, run_id: str, report_id: str) -> list[dict[str, Any]]:
    _, reports = cached_run(src, run_id)
    report = next(r for r in reports if r.report_id == report_id)
    return with_sources(store_at(src.location), report)


@_cache
def cached_compare(src: Source, run_a: str, run_b: str) -> RunDiff:
    return compare(store_at(src.location), run_a, run_b)


@_cache
def cached_kernel_pair(
    src: Source, run_a: str, run_b: str, g: int, k: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return kernel_pair(store_at(src.location), cached_compare(src, run_a, run_b), g, k)


@_cache
def cached_trends(src: Source, limit: int | None = None) -> pd.DataFrame:
    runs = cached_runs(src, limit)
    ids = None if limit is None else list(runs["run_id"])
    return trends(runs, report_durations(store_at(src.location), ids))


@_cache
def cached_jobs(src: Source) -> pd.DataFrame:
    return jobs_frame(store_at(src.location))


@_cache
def cached_job(src: Source, job: str, against: str | None = None) -> jobs.JobReport:
    return job_report(store_at(src.location), job, against)

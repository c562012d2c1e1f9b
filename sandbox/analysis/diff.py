"""What changed between two runs: graphs, kernels, stage times, metrics. Pure.

Graphs are matched by where they come from and their place in the run: ``(co_name,
filename, line, graph_kind, order)``, ``order`` counting the graphs of that key so far
(a recompile of the same frame is the next one). Within a matched pair, kernels are
matched by name first; the rest by source similarity (``difflib`` ratio over lines),
so a kernel that Inductor renumbered or refused differently is "changed", not "removed
and added". A graph only one run has brings all its kernels as added or removed.

``compare_runs`` is what ``sandbox diff`` and the dashboard's compare page call; it
returns data (:class:`RunDiff`), rendering is elsewhere (``sandbox/cli/render.py``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.analysis import runtime
from sandbox.record.report import CACHE_HIT, FAILED, CompileReport
from sandbox.record.stages import self_times

# Below this source similarity two unmatched kernels are "one removed, one added".
SIMILAR = 0.5

# What a Run records about its environment that a comparison should point out.
ENVIRONMENT = ("torch", "triton", "python", "cuda", "device", "hostname", "git_revision", "sandbox", "world_size")

# Kernel fields compared on their own (the source through its hash, lines through the source).
# A Triton kernel's autotune details (candidates, benchmark timings, compile time) differ
# on every run; what it runs with is compared through its ``launchers``.
# Runtimes (profile_steps) differ on every run too: they are compared apart (``GraphChange.runtime``).
_KERNEL_SKIP = {"name", "source", "source_hash", "lines", "triton", "runtime"}

GraphKey = tuple  # (co_name, filename, line, graph_kind, order)


@dataclass
class KernelChange:
    status: str  # added | removed | changed | unchanged
    kind: str
    name_a: str | None = None
    name_b: str | None = None
    hash_a: str | None = None
    hash_b: str | None = None
    lines_a: int | None = None
    lines_b: int | None = None
    similarity: float | None = None  # of the two sources, 0..1, when both are known and differ
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # other properties that differ

    @property
    def source_changed(self) -> bool:
        return self.status == "changed" and self.hash_a != self.hash_b


@dataclass
class GraphChange:
    status: str  # matched | added (only in B) | removed (only in A)
    co_name: str | None
    filename: str | None
    line: int | None
    graph_kind: str
    order: int
    a: dict[str, Any] | None = None  # a summary of the report in run A
    b: dict[str, Any] | None = None
    duration_delta_s: float | None = None  # compile work, B - A (waits for a worker apart)
    wait_delta_s: float | None = None
    kernels_compared: bool = True  # False when a side has no kernel inventory (cache hit, failure)
    kernels: list[KernelChange] = field(default_factory=list)
    stage_deltas: list[dict[str, Any]] = field(default_factory=list)
    metric_deltas: list[dict[str, Any]] = field(default_factory=list)
    # Per matched kernel with runtimes on both sides (profile_steps): runtime.deltas' rows
    runtime: list[dict[str, Any]] = field(default_factory=list)

    def kernel_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("added", "removed", "changed", "unchanged"), 0)
        for k in self.kernels:
            counts[k.status] += 1
        return counts


@dataclass
class RunDiff:
    a: dict[str, Any]  # run summary: run_id, name, started_at, torch, graphs, compile_s
    b: dict[str, Any]
    environment: dict[str, tuple[Any, Any]]  # Run fields (and Inductor config keys) that differ
    graphs: dict[str, int]  # matched / added / removed
    kernels: dict[str, int]  # added / removed / changed / unchanged
    stage_deltas: list[dict[str, Any]]  # own seconds per stage (name, origin), summed over all graphs
    metric_deltas: list[dict[str, Any]]  # per metric, summed over all graphs
    graph_changes: list[GraphChange]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- graphs -----------------------------------------------------------------------------------


def graph_keys(reports: Iterable[CompileReport]) -> list[tuple[GraphKey, CompileReport]]:
    """Each report with its key; ``order`` counts earlier reports of the same code and kind."""
    seen: dict[tuple, int] = {}
    out = []
    for r in sorted(reports, key=lambda r: (r.graph_index, r.started_at)):
        base = (r.co_name, r.filename, r.line, r.graph_kind)
        order = seen.get(base, 0)
        seen[base] = order + 1
        out.append(((*base, order), r))
    return out


def _summary(r: CompileReport) -> dict[str, Any]:
    return {
        "report_id": r.report_id,
        "graph_index": r.graph_index,
        "compile_id": r.compile_id,
        "outcome": r.outcome,
        "duration_s": r.duration_s,
        "work_s": r.work_s,  # compile work: the duration less the waits for a worker
        "wait_s": r.wait_s,
        "worker_pid": r.worker_pid,
        "kernels": len(r.kernels),
        "failure": r.failure.kind if r.failure else None,
    }


def _has_inventory(r: CompileReport) -> bool:
    """Cache hits served whole and failed graphs list no kernels: nothing to compare."""
    return bool(r.kernels) or r.outcome not in (CACHE_HIT, FAILED)


# -- stages and metrics -------------------------------------------------------------------------


def stage_totals(reports: Iterable[CompileReport]) -> dict[tuple[str, str], float]:
    """Own seconds (less nested stages) per (stage name, origin), summed: a slower
    stage shows up once, not again in every stage around it."""
    out: dict[tuple[str, str], float] = {}
    for r in reports:
        for s, own in self_times(r.stages):
            key = (s.name, s.origin)
            out[key] = out.get(key, 0.0) + own
    return out


def metric_totals(reports: Iterable[CompileReport]) -> dict[str, float]:
    """Numeric metrics, graph sizes, counters and the kernel count, summed."""
    out: dict[str, float] = {}

    def add(key: str, v: Any) -> None:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = out.get(key, 0) + v

    for r in reports:
        for k, v in r.metrics.items():
            add(f"metrics.{k}", v)
        for k, v in r.graph.items():
            add(f"graph.{k}", v)
        for group, values in r.counters.items():
            for k, v in (values or {}).items():
                add(f"counters.{group}.{k}", v)
        add("kernels", len(r.kernels))
    return out


def stage_deltas(a: Mapping[tuple[str, str], float], b: Mapping[tuple[str, str], float]) -> list[dict[str, Any]]:
    rows = []
    for key in set(a) | set(b):
        va, vb = a.get(key, 0.0), b.get(key, 0.0)
        if abs(vb - va) > 1e-6:
            rows.append({"stage": key[0], "origin": key[1], "a_s": va, "b_s": vb, "delta_s": vb - va})
    return sorted(rows, key=lambda r: (-abs(r["delta_s"]), r["stage"]))


def metric_deltas(a: Mapping[str, float], b: Mapping[str, float]) -> list[dict[str, Any]]:
    """Metrics that differ, the largest relative change first."""
    rows = []
    for key in set(a) | set(b):
        va, vb = a.get(key, 0), b.get(key, 0)
        if va != vb:
            rows.append({"metric": key, "a": va, "b": vb, "delta": vb - va})
    return sorted(rows, key=lambda r: (-abs(r["delta"]) / max(abs(r["a"]), abs(r["b"]), 1), r["metric"]))


# -- kernels ----------------------------------------------------------------------------------


def similarity(a: str, b: str) -> float:
    """difflib's ratio over source lines: 1.0 the same, 0.0 nothing in common."""
    if a == b:
        return 1.0
    return difflib.SequenceMatcher(None, a.splitlines(), b.splitlines(), autojunk=False).ratio()


def _other_fields(ka: Mapping[str, Any], kb: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = (set(ka) | set(kb)) - _KERNEL_SKIP
    return {k: (ka.get(k), kb.get(k)) for k in sorted(keys) if ka.get(k) != kb.get(k)}


def _change(
    status: str, ka: Mapping[str, Any] | None, kb: Mapping[str, Any] | None, sim: float | None = None
) -> KernelChange:
    ka, kb = ka or {}, kb or {}
    return KernelChange(
        status=status,
        kind=str(kb.get("kind") or ka.get("kind") or "?"),
        name_a=ka.get("name"),
        name_b=kb.get("name"),
        hash_a=ka.get("source_hash"),
        hash_b=kb.get("source_hash"),
        lines_a=ka.get("lines"),
        lines_b=kb.get("lines"),
        similarity=sim,
        fields=_other_fields(ka, kb) if ka and kb else {},
    )


@dataclass
class _Pending:
    """A graph pair's kernels once matched by name; the rest wait for their sources."""

    by_name: list[tuple[dict[str, Any], dict[str, Any]]]
    only_a: list[dict[str, Any]]
    only_b: list[dict[str, Any]]


def _match_by_name(ka: Sequence[dict[str, Any]], kb: Sequence[dict[str, Any]]) -> _Pending:
    pool: dict[str, list[dict[str, Any]]] = {}
    for k in kb:
        pool.setdefault(k.get("name") or "", []).append(k)
    pairs, only_a = [], []
    for k in ka:
        same = pool.get(k.get("name") or "")
        if same:
            pairs.append((k, same.pop(0)))
        else:
            only_a.append(k)
    only_b = [k for ks in pool.values() for k in ks]
    order = {id(k): i for i, k in enumerate(kb)}
    only_b.sort(key=lambda k: order[id(k)])
    return _Pending(pairs, only_a, only_b)


def _needed(pending: _Pending) -> set[str]:
    """Hashes whose source a comparison needs and the kernel entries do not carry."""
    out = set()
    for ka, kb in pending.by_name:
        if ka.get("source_hash") != kb.get("source_hash"):
            out.update(k["source_hash"] for k in (ka, kb) if k.get("source_hash") and not k.get("source"))
    for k in pending.only_a + pending.only_b:
        if k.get("source_hash") and not k.get("source"):
            out.add(k["source_hash"])
    return out


def _source(k: Mapping[str, Any], sources: Mapping[str, str]) -> str | None:
    return k.get("source") or sources.get(k.get("source_hash") or "")


def _settle(pending: _Pending, sources: Mapping[str, str]) -> list[KernelChange]:
    out = []
    for ka, kb in pending.by_name:
        if ka.get("source_hash") == kb.get("source_hash") and not _other_fields(ka, kb):
            out.append(_change("unchanged", ka, kb))
            continue
        sim = None
        if ka.get("source_hash") != kb.get("source_hash"):
            sa, sb = _source(ka, sources), _source(kb, sources)
            sim = similarity(sa, sb) if sa is not None and sb is not None else None
        out.append(_change("changed", ka, kb, sim))

    # The rest: pair the most similar sources of one kind, best first.
    candidates = []
    for i, ka in enumerate(pending.only_a):
        sa = _source(ka, sources)
        for j, kb in enumerate(pending.only_b):
            if ka.get("kind") != kb.get("kind"):
                continue
            if ka.get("source_hash") and ka.get("source_hash") == kb.get("source_hash"):
                candidates.append((1.0, i, j))
                continue
            sb = _source(kb, sources)
            if sa is None or sb is None:
                continue
            matcher = difflib.SequenceMatcher(None, sa.splitlines(), sb.splitlines(), autojunk=False)
            if matcher.real_quick_ratio() < SIMILAR or matcher.quick_ratio() < SIMILAR:
                continue
            ratio = matcher.ratio()
            if ratio >= SIMILAR:
                candidates.append((ratio, i, j))
    used_a, used_b = set(), set()
    for ratio, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        ka, kb = pending.only_a[i], pending.only_b[j]
        same = ka.get("source_hash") == kb.get("source_hash")
        out.append(_change("changed", ka, kb, None if same else ratio))
    out += [_change("removed", k, None) for i, k in enumerate(pending.only_a) if i not in used_a]
    out += [_change("added", None, k) for j, k in enumerate(pending.only_b) if j not in used_b]
    return out


# -- runs -------------------------------------------------------------------------------------


def _run_summary(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> dict[str, Any]:
    return {
        "run_id": run.get("run_id"),
        "name": run.get("name"),
        "tags": list(run.get("tags") or []),
        "started_at": run.get("started_at"),
        "torch": run.get("torch"),
        "device": run.get("device"),
        "graphs": len(reports),
        "compile_s": sum(r.work_s for r in reports),  # compile work; waits for a worker apart
        "wait_s": sum(r.wait_s for r in reports),
    }


def environment(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    out = {k: (a.get(k), b.get(k)) for k in ENVIRONMENT if a.get(k) != b.get(k)}
    ca, cb = a.get("inductor_config") or {}, b.get("inductor_config") or {}
    for k in sorted(set(ca) | set(cb)):
        if ca.get(k) != cb.get(k):
            out[f"inductor_config.{k}"] = (ca.get(k), cb.get(k))
    return out


def _key(change: GraphChange) -> GraphKey:
    return (change.co_name, change.filename, change.line, change.graph_kind, change.order)


def compare_runs(
    run_a: Mapping[str, Any],
    reports_a: Sequence[CompileReport],
    run_b: Mapping[str, Any],
    reports_b: Sequence[CompileReport],
    load_sources: Callable[[list[str]], Mapping[str, str]] | None = None,
) -> RunDiff:
    """Compare run A (before) with run B (after).

    Kernel sources come from the kernel entries when they carry them, else from
    ``load_sources(hashes)`` (e.g. ``store.kernel_sources``), asked once for all the
    hashes the comparison needs; without either, changed kernels get no similarity
    and unmatched ones are not paired."""
    keyed_a = graph_keys(reports_a)
    keyed_b = graph_keys(reports_b)
    by_key_a = dict(keyed_a)
    by_key_b = dict(keyed_b)
    keys_b = set(by_key_b)

    changes: list[GraphChange] = []
    pending: list[tuple[GraphChange, _Pending]] = []

    def new(status: str, key: GraphKey, ra: CompileReport | None, rb: CompileReport | None) -> GraphChange:
        co_name, filename, line, kind, order = key
        return GraphChange(
            status,
            co_name,
            filename,
            line,
            kind,
            order,
            a=_summary(ra) if ra else None,
            b=_summary(rb) if rb else None,
        )

    for key, rb in keyed_b:
        ra = by_key_a.get(key)
        if ra is None:
            change = new("added", key, None, rb)
            change.kernels_compared = _has_inventory(rb)
            pending.append((change, _Pending([], [], list(rb.kernels) if change.kernels_compared else [])))
        else:
            change = new("matched", key, ra, rb)
            change.duration_delta_s = rb.work_s - ra.work_s
            change.wait_delta_s = rb.wait_s - ra.wait_s
            change.stage_deltas = stage_deltas(stage_totals([ra]), stage_totals([rb]))
            change.metric_deltas = metric_deltas(metric_totals([ra]), metric_totals([rb]))
            change.kernels_compared = _has_inventory(ra) and _has_inventory(rb)
            if change.kernels_compared:
                pending.append((change, _match_by_name(ra.kernels, rb.kernels)))
        changes.append(change)
    for key, ra in keyed_a:
        if key not in keys_b:
            change = new("removed", key, ra, None)
            change.kernels_compared = _has_inventory(ra)
            pending.append((change, _Pending([], list(ra.kernels) if change.kernels_compared else [], [])))
            changes.append(change)

    needed = sorted(set().union(*(_needed(p) for _, p in pending))) if pending else []
    sources: Mapping[str, str] = dict(load_sources(needed)) if (needed and load_sources) else {}
    for change, p in pending:
        change.kernels = _settle(p, sources)
    for change in changes:
        ra, rb = by_key_a.get(_key(change)), by_key_b.get(_key(change))
        if change.status == "matched" and ra is not None and rb is not None:
            change.runtime = runtime.deltas(ra, rb, [(k.name_a, k.name_b) for k in change.kernels])

    kernel_counts = dict.fromkeys(("added", "removed", "changed", "unchanged"), 0)
    for change in changes:
        for status, n in change.kernel_counts().items():
            kernel_counts[status] += n
    graph_counts = dict.fromkeys(("matched", "added", "removed"), 0)
    for change in changes:
        graph_counts[change.status] += 1

    return RunDiff(
        a=_run_summary(run_a, reports_a),
        b=_run_summary(run_b, reports_b),
        environment=environment(run_a, run_b),
        graphs=graph_counts,
        kernels=kernel_counts,
        stage_deltas=stage_deltas(stage_totals(reports_a), stage_totals(reports_b)),
        metric_deltas=metric_deltas(metric_totals(reports_a), metric_totals(reports_b)),
        graph_changes=changes,
    )

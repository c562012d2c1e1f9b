"""Rank divergence within a job, and a job against an earlier one. Pure.

A job is the runs that share ``Run.job`` (``SANDBOX_JOB``, else torchrun's
``TORCHELASTIC_RUN_ID``), one per rank. Graphs are matched across ranks the way
``sandbox/analysis/diff.py`` matches them across runs - by code location, graph kind and order
- and every rank is compared with the reference rank (the lowest one) through
:func:`sandbox.analysis.diff.compare_runs`, which also matches their kernels. Per graph the
analysis then says which ranks

- compiled a different graph: another ``graph.hash`` (the graph dynamo captured and
  its inputs' shapes, strides and dtypes: what the static-shape guards check), or the
  graph is missing on some ranks;
- had different cache outcomes (outcome, FX graph cache and AOTAutograd cache states);
- generated different kernels (added, removed or changed against the reference rank);
- are stragglers: took more than ``STRAGGLER_FACTOR`` times the median of the other
  ranks, and at least ``STRAGGLER_MIN_S`` more. The same rule applies to each rank's
  total compile time.

and, where the ranks shared compiles (the host's compile service, a Redis lease: the report's
``single_flight``), which rank compiled the graph and which ranks waited for it, how long. A
rank that waited for another's compile spent that time getting its graph: its wait counts as
its time for the graph (so the rank that compiled is not a straggler against the ones it served),
while waits for a free worker stay apart, as everywhere.

A rank with several runs in one job (an elastic restart) counts with its newest run.
``compare_jobs`` puts an earlier job beside: rank by rank (``compare_runs`` of rank r
then and now) and graph by graph (median compile time across ranks, graph hashes).

``analyse_job`` is what ``sandbox job`` and the dashboard's Job page call; it returns
data (:class:`JobReport`), rendering is elsewhere (``sandbox/cli/render.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.analysis import labels
from sandbox.analysis.diff import GraphKey, compare_runs, graph_keys
from sandbox.record.report import CompileReport

# A rank is a straggler when it took more than this many times the median of the
# other ranks ...
STRAGGLER_FACTOR = 2.0
# ... and at least this many seconds more (a 0.02 s graph taking 0.05 s is noise).
STRAGGLER_MIN_S = 1.0

FINDINGS = ("graph", "missing", "cache", "kernels", "straggler")

Loader = Callable[[str], Sequence[CompileReport]]


@dataclass
class RankGraph:
    """One rank's compile of one graph."""

    rank: int
    report_id: str
    graph_index: int
    compile_id: str | None
    outcome: str
    cache: str  # e.g. "fx_graph miss, aot_autograd miss"
    graph_hash: str | None
    duration_s: float  # compile work, waits apart
    kernels: int
    kernel_changes: dict[str, int] | None = None  # against the reference rank; None: not comparable
    straggler: bool = False
    shared: str | None = None  # single_flight role: compiled | waited | alone; None: not shared
    via: str | None = None  # service | redis | cache_dir
    waited_s: float | None = None  # with shared="waited": seconds waiting for another's compile
    compiled_by: int | None = None  # with shared="waited": the rank of this job that compiled it (None: none did)
    compiled_by_host: str | None = None


@dataclass
class GraphAcross:
    """One graph (code location, kind, order) across the ranks of a job."""

    co_name: str | None
    filename: str | None
    line: int | None
    graph_kind: str
    order: int
    ranks: list[RankGraph]
    missing: list[int]  # ranks of the job that have no such graph
    hash_groups: list[list[int]]  # ranks grouped by graph hash (one group: all the same; ranks without one left out)
    cache_groups: dict[str, list[int]]  # cache outcome -> ranks
    kernel_ranks: list[int]  # ranks whose kernels differ from the reference rank's
    stragglers: list[int]
    median_s: float
    findings: list[str] = field(default_factory=list)  # which of FINDINGS apply
    compiled_on: list[int] = field(default_factory=list)  # ranks that compiled it (cache hits and waits left out)
    waited: list[int] = field(default_factory=list)  # ranks that waited for another's compile of it

    @property
    def key(self) -> GraphKey:
        return (self.co_name, self.filename, self.line, self.graph_kind, self.order)


@dataclass
class RankRun:
    rank: int
    run_id: str
    hostname: str | None
    pid: int | None
    started_at: float | None
    graphs: int
    compile_s: float  # compile work, and waits for other ranks' compiles (less the compiler's wait for a worker)
    cache_hits: int
    failures: int
    restarts: int  # earlier runs of this rank in the job, left out
    straggler: bool = False
    wait_s: float = 0.0  # waiting for a worker or a lock, kept apart from compile_s
    waited_graphs: int = 0  # graphs this rank got from another rank's compile
    served_graphs: int = 0  # graphs this rank compiled that other processes waited for
    flight_wait_s: float = 0.0  # seconds spent waiting for other ranks' compiles (in compile_s)


@dataclass
class RankAgainst:
    """Rank r of the earlier job against rank r of this job."""

    rank: int
    earlier_run: str
    run: str
    compile_s: tuple[float, float]
    graphs: dict[str, int]  # matched / added / removed
    kernels: dict[str, int]  # added / removed / changed / unchanged
    environment: dict[str, tuple[Any, Any]]


@dataclass
class GraphAgainst:
    """One graph in the earlier job and in this one (medians across ranks)."""

    co_name: str | None
    filename: str | None
    line: int | None
    graph_kind: str
    order: int
    status: str  # matched | added (only now) | removed (only earlier)
    earlier_s: float | None
    now_s: float | None
    hash_changed: bool  # the sets of graph hashes differ


@dataclass
class JobComparison:
    earlier: str
    ranks: list[RankAgainst]
    graphs: list[GraphAgainst]
    only_earlier: list[int]  # ranks only the earlier job had
    only_now: list[int]
    compile_s: tuple[float, float]  # the slowest rank's total, earlier and now


@dataclass
class JobReport:
    job: str
    world_size: int | None
    runs: list[RankRun]
    missing_ranks: list[int]  # ranks below world_size with no run in the store
    graphs: list[GraphAcross]
    counts: dict[str, int]  # graphs per finding
    median_compile_s: float
    against: JobComparison | None = None
    compiles: int = 0  # graphs compiled across the ranks (cache hits and waits for another's compile left out)
    shared_graphs: int = 0  # graphs at least one rank got from another's compile

    @property
    def ranks(self) -> list[int]:
        return [r.rank for r in self.runs]

    @property
    def divergent(self) -> list[GraphAcross]:
        return [g for g in self.graphs if g.findings]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- pieces ----------------------------------------------------------------------------------


def rank_of(run: Mapping[str, Any]) -> int:
    """A run's rank; a job's single process without one counts as rank 0."""
    rank = run.get("rank")
    return int(rank) if rank is not None else 0


def newest_per_rank(runs: Iterable[Mapping[str, Any]]) -> tuple[dict[int, Mapping[str, Any]], dict[int, int]]:
    """The newest run of each rank, and how many older runs each rank has (restarts)."""
    chosen: dict[int, Mapping[str, Any]] = {}
    restarts: dict[int, int] = {}
    for run in sorted(runs, key=lambda r: r.get("started_at") or 0):
        rank = rank_of(run)
        if rank in chosen:
            restarts[rank] = restarts.get(rank, 0) + 1
        chosen[rank] = run
    return dict(sorted(chosen.items())), restarts


def others_median(values: Mapping[int, float], rank: int) -> float | None:
    rest = [v for k, v in values.items() if k != rank]
    return statistics.median(rest) if rest else None


def stragglers(
    durations: Mapping[int, float], factor: float = STRAGGLER_FACTOR, min_s: float = STRAGGLER_MIN_S
) -> list[int]:
    """Ranks that took more than ``factor`` times the median of the others, and ``min_s`` more."""
    out = []
    for rank, d in durations.items():
        m = others_median(durations, rank)
        if m is not None and d > factor * m and d - m >= min_s:
            out.append(rank)
    return sorted(out)


def _groups(values: Mapping[int, Any]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for rank, v in sorted(values.items()):
        out.setdefault(v, []).append(rank)
    return out


def _differs(changes: Mapping[str, int] | None) -> bool:
    return bool(changes) and any(changes.get(k, 0) for k in ("added", "removed", "changed"))


def _flight(r: CompileReport) -> dict[str, Any]:
    return r.single_flight if isinstance(r.single_flight, dict) else {}


def waited_for_another(r: CompileReport) -> bool:
    return _flight(r).get("role") == "waited"


def rank_time_s(r: CompileReport, compiler: CompileReport | None = None) -> float:
    """The rank's time for the graph: its compile work, or with the graph another rank compiled
    for it, the wait for that compile (the rank could not go on without it) less the time the
    compiling rank (``compiler``, when known) itself waited for a free worker, which is left
    out of every rank's time alike."""
    if not waited_for_another(r):
        return r.work_s
    return max(r.duration_s - (compiler.wait_s if compiler is not None else 0.0), r.work_s)


def compiled_here(r: CompileReport) -> bool:
    """A compile this rank ran (or had run for it by its own workers), not a hit or another's."""
    return r.outcome not in ("cache_hit", "failed") and not waited_for_another(r)


def _compiler_rank(r: CompileReport, ranks_by_pid: Mapping[tuple[Any, Any], int]) -> tuple[int | None, str | None]:
    """The rank of this job that compiled a graph ``r`` waited for, found by the compiling
    process's pid and host among the job's runs (a process of another job, or of no job, has
    no rank here: None), and that process's host."""
    by = _flight(r).get("compiled_by")
    if not isinstance(by, dict):
        return None, None
    host = by.get("host") if isinstance(by.get("host"), str) else None
    return ranks_by_pid.get((by.get("pid"), host)), host


# -- one job -----------------------------------------------------------------------------------


def analyse_job(
    job: str,
    runs: Sequence[Mapping[str, Any]],
    load_reports: Loader,
    earlier: tuple[str, Sequence[Mapping[str, Any]]] | None = None,
) -> JobReport:
    """Rank divergence in ``job`` (its ``runs``; ``load_reports(run_id)`` reads a run's
    reports), and, with ``earlier = (job, runs)``, the comparison with that job."""
    if not runs:
        raise ValueError(f"job {job!r} has no runs")
    chosen, restarts = newest_per_rank(runs)
    reports = {rank: list(load_reports(str(run["run_id"]))) for rank, run in chosen.items()}
    ranks = list(chosen)
    reference = ranks[0]
    ranks_by_pid = {(run.get("pid"), run.get("hostname")): rank for rank, run in chosen.items()}
    time_s: dict[str, float] = {}  # report id -> the rank's time for that graph

    # Each rank against the reference rank: which graphs it has, and their kernels.
    kernel_changes: dict[tuple[GraphKey, int], dict[str, int] | None] = {}
    for rank in ranks[1:]:
        d = compare_runs(chosen[reference], reports[reference], chosen[rank], reports[rank])
        for gc in d.graph_changes:
            if gc.status == "matched":
                key = (gc.co_name, gc.filename, gc.line, gc.graph_kind, gc.order)
                kernel_changes[(key, rank)] = gc.kernel_counts() if gc.kernels_compared else None

    keyed: dict[GraphKey, dict[int, CompileReport]] = {}
    for rank in ranks:
        for key, r in graph_keys(reports[rank]):
            keyed.setdefault(key, {})[rank] = r

    graphs = []
    for key, by_rank in keyed.items():
        co_name, filename, line, kind, order = key
        compilers = {
            rank: _compiler_rank(r, ranks_by_pid) if waited_for_another(r) else (None, None)
            for rank, r in by_rank.items()
        }
        durations = {}  # worker waits apart
        for rank, r in by_rank.items():
            durations[rank] = time_s[r.report_id] = rank_time_s(r, by_rank.get(compilers[rank][0]))  # type: ignore[arg-type]
        slow = stragglers(durations)
        rows = []
        for rank, r in sorted(by_rank.items()):
            changes = None if rank == reference else kernel_changes.get((key, rank))
            flight = _flight(r)
            by, by_host = compilers[rank]
            rows.append(
                RankGraph(
                    rank=rank,
                    report_id=r.report_id,
                    graph_index=r.graph_index,
                    compile_id=r.compile_id,
                    outcome=r.outcome,
                    cache=labels.verdict(r),
                    graph_hash=r.graph.get("hash"),
                    duration_s=durations[rank],
                    kernels=len(r.kernels),
                    kernel_changes=changes,
                    straggler=rank in slow,
                    shared=flight.get("role"),
                    via=flight.get("via"),
                    waited_s=flight.get("waited_s") if flight.get("role") == "waited" else None,
                    compiled_by=by,
                    compiled_by_host=by_host,
                )
            )
        # Reports without a hash (older ones) neither match nor differ.
        hash_groups = list(
            _groups({rank: r.graph["hash"] for rank, r in by_rank.items() if r.graph.get("hash")}).values()
        )
        cache_groups = {
            label: rs for label, rs in _groups({rank: labels.verdict(r) for rank, r in by_rank.items()}).items()
        }
        kernel_ranks = [row.rank for row in rows if _differs(row.kernel_changes)]
        missing = [rank for rank in ranks if rank not in by_rank]
        g = GraphAcross(
            co_name,
            filename,
            line,
            kind,
            order,
            rows,
            missing,
            hash_groups,
            cache_groups,
            kernel_ranks,
            slow,
            statistics.median(durations.values()),
            compiled_on=[rank for rank, r in sorted(by_rank.items()) if compiled_here(r)],
            waited=[rank for rank, r in sorted(by_rank.items()) if waited_for_another(r)],
        )
        g.findings = [
            name
            for name, hit in (
                ("graph", len(hash_groups) > 1),
                ("missing", bool(missing)),
                ("cache", len(cache_groups) > 1),
                ("kernels", bool(kernel_ranks)),
                ("straggler", bool(slow)),
            )
            if hit
        ]
        graphs.append(g)
    graphs.sort(key=_first_index)

    totals = {rank: sum(time_s.get(r.report_id, r.work_s) for r in reports[rank]) for rank in ranks}
    slow_ranks = stragglers(totals)
    rank_runs = [
        RankRun(
            rank=rank,
            run_id=str(run["run_id"]),
            hostname=run.get("hostname"),
            pid=run.get("pid"),
            started_at=run.get("started_at"),
            graphs=len(reports[rank]),
            compile_s=totals[rank],
            wait_s=sum(r.wait_s for r in reports[rank] if not waited_for_another(r)),
            waited_graphs=sum(1 for r in reports[rank] if waited_for_another(r)),
            served_graphs=sum(
                1 for r in reports[rank] if _flight(r).get("role") == "compiled" and _flight(r).get("served")
            ),
            flight_wait_s=sum(r.duration_s for r in reports[rank] if waited_for_another(r)),
            cache_hits=sum(1 for r in reports[rank] if r.outcome == "cache_hit"),
            failures=sum(1 for r in reports[rank] if r.outcome == "failed"),
            restarts=restarts.get(rank, 0),
            straggler=rank in slow_ranks,
        )
        for rank, run in chosen.items()
    ]
    sizes = [int(run["world_size"]) for run in chosen.values() if run.get("world_size")]
    world_size = max(sizes) if sizes else None
    missing_ranks = [r for r in range(world_size or 0) if r not in chosen]
    report = JobReport(
        job=job,
        world_size=world_size,
        runs=rank_runs,
        missing_ranks=missing_ranks,
        graphs=graphs,
        counts={name: sum(1 for g in graphs if name in g.findings) for name in FINDINGS},
        median_compile_s=statistics.median(totals.values()),
        compiles=sum(1 for rank in ranks for r in reports[rank] if compiled_here(r)),
        shared_graphs=sum(1 for g in graphs if g.waited),
    )
    if earlier is not None:
        report.against = compare_jobs(earlier[0], earlier[1], chosen, reports, load_reports)
    return report


def _first_index(g: GraphAcross) -> tuple[int, int]:
    """Order graphs as the lowest rank that has them compiled them."""
    return (g.ranks[0].rank, g.ranks[0].graph_index)


# -- a job against an earlier one -----------------------------------------------------------------


def compare_jobs(
    earlier_job: str,
    earlier_runs: Sequence[Mapping[str, Any]],
    chosen: Mapping[int, Mapping[str, Any]],
    reports: Mapping[int, Sequence[CompileReport]],
    load_reports: Loader,
) -> JobComparison:
    if not earlier_runs:
        raise ValueError(f"job {earlier_job!r} has no runs")
    then, _ = newest_per_rank(earlier_runs)
    then_reports = {rank: list(load_reports(str(run["run_id"]))) for rank, run in then.items()}

    ranks = []
    for rank in sorted(set(then) & set(chosen)):
        d = compare_runs(then[rank], then_reports[rank], chosen[rank], reports[rank])
        ranks.append(
            RankAgainst(
                rank,
                str(then[rank]["run_id"]),
                str(chosen[rank]["run_id"]),
                (d.a["compile_s"], d.b["compile_s"]),
                d.graphs,
                d.kernels,
                d.environment,
            )
        )

    def across(by_rank: Mapping[int, Sequence[CompileReport]]) -> dict[GraphKey, list[CompileReport]]:
        out: dict[GraphKey, list[CompileReport]] = {}
        for rs in by_rank.values():
            for key, r in graph_keys(rs):
                out.setdefault(key, []).append(r)
        return out

    before, now = across(then_reports), across(reports)
    graphs = []
    for key in list(now) + [k for k in before if k not in now]:
        a, b = before.get(key), now.get(key)
        status = "matched" if a and b else ("added" if b else "removed")
        hashes_a = {r.graph.get("hash") for r in a or []}
        hashes_b = {r.graph.get("hash") for r in b or []}
        graphs.append(
            GraphAgainst(
                *key,
                status=status,
                earlier_s=statistics.median(r.work_s for r in a) if a else None,
                now_s=statistics.median(r.work_s for r in b) if b else None,
                hash_changed=bool(a and b and hashes_a != hashes_b),
            )
        )
    totals_then = [sum(r.work_s for r in rs) for rs in then_reports.values()]
    totals_now = [sum(r.work_s for r in rs) for rs in reports.values()]
    return JobComparison(
        earlier=earlier_job,
        ranks=ranks,
        graphs=graphs,
        only_earlier=sorted(set(then) - set(chosen)),
        only_now=sorted(set(chosen) - set(then)),
        compile_s=(max(totals_then, default=0.0), max(totals_now, default=0.0)),
    )


# -- finding jobs ------------------------------------------------------------------------------------


def jobs(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The jobs among ``runs`` (e.g. ``store.runs()``), newest first: job id, ranks, runs,
    names, hosts, first start, total compile seconds of its ranks."""
    by_job: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        if run.get("job"):
            by_job.setdefault(str(run["job"]), []).append(run)
    out = []
    for job, rs in by_job.items():
        out.append(
            {
                "job": job,
                "ranks": len({rank_of(r) for r in rs}),
                "runs": len(rs),
                "world_size": max((int(r["world_size"]) for r in rs if r.get("world_size")), default=None),
                "names": sorted({str(r["name"]) for r in rs if r.get("name")}),
                "hosts": sorted({str(r["hostname"]) for r in rs if r.get("hostname")}),
                "started_at": min(r.get("started_at") or 0 for r in rs),
                "compile_s": sum(float((r.get("summary") or {}).get("compile_s") or 0.0) for r in rs),
                "graphs": sum(int((r.get("summary") or {}).get("graphs") or 0) for r in rs),
            }
        )
    return sorted(out, key=lambda j: -j["started_at"])


def resolve_job(ref: str, known: Sequence[Mapping[str, Any]]) -> str:
    """A job by id, id prefix or ``latest`` among ``known`` (from :func:`jobs`, newest first)."""
    ids = [str(j["job"]) for j in known]
    if ref == "latest" and ids:
        return ids[0]
    if ref in ids:
        return ref
    prefixed = [j for j in ids if j.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise LookupError(
            f"job prefix {ref!r} matches {len(prefixed)} jobs ({', '.join(prefixed[:5])}): give more characters"
        )
    listed = ", ".join(ids[:5]) + ("..." if len(ids) > 5 else "")
    raise LookupError(
        f"no job {ref!r}"
        + (
            f"; jobs: {listed}"
            if ids
            else "; no run in this store belongs to a job (set SANDBOX_JOB, or run under torchrun)"
        )
    )


def previous_job(job: str, known: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest job that started before ``job`` and shares a run name with it (else any earlier one)."""
    this = next((j for j in known if j["job"] == job), None)
    if this is None:
        return None
    before = [j for j in known if j["started_at"] < this["started_at"]]
    same = [j for j in before if set(j["names"]) & set(this["names"])]
    pick = same or before
    return str(pick[0]["job"]) if pick else None

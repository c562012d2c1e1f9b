"""Queries of the Graph page: one compiled graph's stage tree, caches, Inductor metrics and
kernels, and on GPU its Triton autotuning and max-autotune's choices (the Compare page shows
configs and tuned ops with the same helpers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.queries.run import cached_run
from dashboard.queries.shared import Source, as_counts, cached, store_at, value_text
from sandbox.record import stages
from sandbox.record.report import CompileReport
from sandbox.store import Store

# The stage chart's colour of a stage that is not one of the sandbox's own: by where it ran, so the
# sandbox's stages keep the colours they have on the Run page and the legend stays short.
OTHER_STAGES = {"worker": "other stages (worker)", "parent": "other stages (user process)"}


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


def stage_tree(report: CompileReport) -> pd.DataFrame:
    """The stage tree in order (depth first, by start; ``sandbox.record.stages``), with depth,
    own time and share."""
    tree = list(report.stages)
    own = [t for _, t in stages.self_times(tree)]
    total = report.duration_s or max((s.duration_s for s in tree), default=0.0) or 1.0
    rows = [
        {
            "stage": "\u2003" * depth + ("\u2514 " if depth else "") + tree[i].name,
            "name": tree[i].name,
            "depth": depth,
            "origin": tree[i].origin,
            "start s": tree[i].start - report.started_at,
            "duration s": tree[i].duration_s,
            "own s": own[i],
            "share": tree[i].duration_s / total,
        }
        for i, depth, _ in stages.walk(tree)
    ]
    return pd.DataFrame(rows, columns=["stage", "name", "depth", "origin", "start s", "duration s", "own s", "share"])


def colour_groups(tree: pd.DataFrame) -> list[str]:
    """The colour of each row of :func:`stage_tree`: the sandbox's own stages by name, the others
    by origin (:data:`OTHER_STAGES`)."""
    own = {*stages.OWN, stages.SWITCH}
    return [
        name if name in own else OTHER_STAGES.get(origin, f"other stages ({origin})")
        for name, origin in zip(tree["name"], tree["origin"])
    ]


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
    return pd.DataFrame([(a, b, value_text(c)) for a, b, c in rows], columns=["group", "metric", "value"])


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


def block_keys(*configs: Mapping[str, Any]) -> list[str]:
    """The block sizes a Triton launcher or config names (``XBLOCK``, ``YBLOCK``, ``R0_BLOCK``, ...)."""
    return sorted({k for c in configs for k in c if k.endswith("BLOCK")})


def config_label(cfg: Mapping[str, Any] | None) -> str:
    """``XBLOCK=16, num_warps=2, num_stages=1``: a Triton config's block sizes, warps and stages."""
    cfg = cfg or {}
    keys = block_keys(cfg) + [k for k in ("num_warps", "num_stages") if k in cfg]
    return ", ".join(f"{k}={cfg[k]}" for k in keys)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The same block sizes, warps and stages (registers and timings aside)."""
    keys = block_keys(a, b) + ["num_warps", "num_stages"]
    return any(k in a for k in keys) and all(a.get(k) == b.get(k) for k in keys)


def best_ms(timings: Sequence[Mapping[str, Any]]) -> float | None:
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
                "best ms": best_ms(timings),
                "registers": chosen.get("n_regs"),
                "spills": chosen.get("n_spills"),
                "shared": chosen.get("shared"),
                "compile s": t.get("compile_time_s"),
                "autotune s": t.get("autotune_time_s"),
                "coordinate descent": bool(t.get("coordinate_descent")),
                "after first run": bool(t.get("first_run")),
            }
        )
    frame = pd.DataFrame(
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
    return as_counts(frame, "configs", "benchmarked", "registers", "spills", "shared")


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
    best = best_ms(timings)
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
    df = as_counts(df.astype({"ms": float, "x best": float}), "registers", "spills", "shared")
    return df.sort_values("ms", kind="stable", na_position="last").reset_index(drop=True)


def shapes_label(shapes: Sequence[Any] | None) -> str:
    """``32x192, 32x64``: the input shapes of a tuned op."""
    return ", ".join("x".join(str(d) for d in s) if isinstance(s, (list, tuple)) else "?" for s in shapes or [])


def chosen_candidate(entry: Mapping[str, Any] | None) -> Mapping[str, Any]:
    cands = (entry or {}).get("candidates") or []
    return next((c for c in cands if c.get("name") == (entry or {}).get("chosen")), {})


def autotune_choice_rows(autotune: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """max-autotune's tuned ops (``report.autotune``), one row each: input shapes, the choice
    and its time, the fastest extern (ATen) candidate and how many times faster the choice was."""
    rows = []
    for i, entry in enumerate(autotune):
        cands = entry.get("candidates") or []
        chosen = chosen_candidate(entry)
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


# -- cached entry points -------------------------------------------------------------------------


@cached
def cached_kernels(src: Source, run_id: str, report_id: str) -> list[dict[str, Any]]:
    _, reports = cached_run(src, run_id)
    report = next(r for r in reports if r.report_id == report_id)
    return with_sources(store_at(src.location), report)

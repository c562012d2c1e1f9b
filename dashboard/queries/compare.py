"""Queries of the Compare page: run A (before) against run B (after), graph by graph and
kernel by kernel (``sandbox.analysis.diff``), sources, launch configs and autotuning side by
side, and a verdict in sentences."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.queries.graph import best_ms, block_keys, chosen_candidate, config_label, shapes_label
from dashboard.queries.shared import Source, as_counts, cached, store_at, value_text
from sandbox.analysis import labels
from sandbox.analysis.diff import GraphChange, KernelChange, RunDiff, compare_runs
from sandbox.record.report import CACHE_HIT, FAILED, CompileReport
from sandbox.store import Store

# Kernel launch fields of GPU reports (``kernel["launchers"]``), in the order shown.
LAUNCH_FIELDS = ("num_warps", "num_stages", "n_regs", "n_spills", "shared")
LAUNCH_LABELS = {
    "num_warps": "warps",
    "num_stages": "stages",
    "n_regs": "registers",
    "n_spills": "spills",
    "shared": "shared memory",
}

# A graph compiled this much slower (and by at least REGRESSION_MIN_S) is a regression.
REGRESSION_PCT = 0.10
REGRESSION_MIN_S = 0.05

# A time in A this short, or this small a share of B's, is next to nothing: a change from it reads
# as "new", not as a percentage in the thousands.
NEAR_ZERO_S = 0.001
NEAR_ZERO_SHARE = 0.01
# The change a table shows as "new" (B has what A had next to none of).
NEW = math.inf


def compare(store: Store, run_a: str, run_b: str) -> RunDiff:
    """Run A (before) against run B (after): ``sandbox.diff.compare_runs``, sources from the store."""
    ra, rb = store.get_run(run_a), store.get_run(run_b)
    return compare_runs(
        ra, store.reports(ra["run_id"]), rb, store.reports(rb["run_id"]), load_sources=store.kernel_sources
    )


def change_label(gc: GraphChange) -> str:
    return f"{labels.code(gc.co_name, gc.filename, gc.line)} {gc.graph_kind}" + (f" #{gc.order}" if gc.order else "")


def near_zero(a: float, b: float, floor: float = NEAR_ZERO_S, share: float = NEAR_ZERO_SHARE) -> bool:
    """Whether ``a`` is next to nothing against ``b``: at most ``floor``, or under ``share`` of ``b``."""
    return abs(a) <= floor or abs(a) < share * abs(b)


def _pct(a: float | None, b: float | None, floor: float = NEAR_ZERO_S, share: float = NEAR_ZERO_SHARE) -> float | None:
    """B's change over A as a fraction (0.16: 16% more); :data:`NEW` where A is next to nothing and B
    is not (:func:`near_zero`); None where there is no telling (a side missing, both next to nothing)."""
    if a is None or b is None:
        return None
    if near_zero(a, b, floor, share):
        return NEW if abs(b) > floor and b > a else None
    return (b - a) / a


def change_text(x: float | None) -> str:
    """A change as a table shows it: ``+16%``, ``new`` (:data:`NEW`), or nothing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return "new" if x == NEW else f"{x:+.0%}"


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
                "A s": a.get("work_s"),  # compile work: waits for a worker apart
                "B s": b.get("work_s"),
                "delta s": gc.duration_delta_s,
                "change": _pct(a.get("work_s"), b.get("work_s")) if gc.status == "matched" else None,
                "kernels +": counts["added"] if gc.kernels_compared else None,
                "kernels -": counts["removed"] if gc.kernels_compared else None,
                "kernels ~": counts["changed"] if gc.kernels_compared else None,
                "kernels =": counts["unchanged"] if gc.kernels_compared else None,
                "regression": gc.status == "matched" and is_regression(a.get("work_s"), b.get("work_s")),
            }
        )
    frame = pd.DataFrame(
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
    ).astype({"A s": float, "B s": float, "delta s": float, "change": float})
    return as_counts(frame, "kernels +", "kernels -", "kernels ~", "kernels =")


def _launchers(kc: KernelChange, side: int) -> list[dict[str, Any]] | None:
    pair = kc.fields.get("launchers")
    return pair[side] if pair else None


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
    frame = pd.DataFrame(
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
    ).astype({"similarity": float})
    return as_counts(frame, "lines A", "lines B")


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


# -- one kernel, A beside B ------------------------------------------------------------------------


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
    return as_counts(pd.DataFrame(rows, columns=["line A", "A", "line B", "B", "op"]), "line A", "line B")


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
                    "A": value_text(va) if va is not None else "",
                    "B": value_text(vb) if vb is not None else "",
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
            "best ms": best_ms(timings),
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
                "A": "" if va is None else value_text(va),
                "B": "" if vb is None else value_text(vb),
                "changed": va != vb,
            }
        )
    return pd.DataFrame(rows, columns=["field", "A", "B", "changed"])


# -- max-autotune, stages, metrics, environment ---------------------------------------------------


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
                    "A ms": chosen_candidate(a).get("ms"),
                    "B chosen": (b or {}).get("chosen") or "",
                    "B ms": chosen_candidate(b).get("ms"),
                    "B kind": chosen_candidate(b).get("kind") or "",
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
    return pd.DataFrame(rows, columns=["stage", "A s", "B s", "delta s", "change", "regression"]).astype(
        {"change": float}
    )


def metric_delta_rows(d: RunDiff) -> pd.DataFrame:
    rows = [
        {
            "metric": m["metric"],
            "A": float(m["a"]),
            "B": float(m["b"]),
            "delta": float(m["delta"]),
            "change": _pct(m["a"], m["b"], floor=0.0, share=0.0),  # counts: new only from none
        }
        for m in d.metric_deltas
    ]
    return pd.DataFrame(rows, columns=["metric", "A", "B", "delta", "change"]).astype({"change": float})


def setting_text(key: str, value: Any) -> str:
    """A setting's value in the table of differences: an Inductor setting left unset is its default,
    another field not recorded is left empty (never a literal ``None``)."""
    if value is None:
        return "default" if key.startswith("inductor_config.") else ""
    return repr(value)


def environment_rows(d: RunDiff) -> pd.DataFrame:
    return pd.DataFrame(
        [(k, setting_text(k, a), setting_text(k, b)) for k, (a, b) in sorted(d.environment.items())],
        columns=["setting", "A", "B"],
    )


# -- no kernel changed ------------------------------------------------------------------------------


def _why_no_kernels(graphs: Sequence[Mapping[str, Any]]) -> str:
    """Why one run's graphs list no kernel, from their summaries (``GraphChange.a`` / ``.b``)."""
    outcomes = {g.get("outcome") for g in graphs}
    if not graphs:
        return "it compiled no graph"
    if outcomes == {FAILED}:
        return "every graph failed to compile"
    if outcomes == {CACHE_HIT}:
        return "a cache served every graph whole"
    if outcomes <= {FAILED, CACHE_HIT}:
        return "every graph failed to compile or was served whole by a cache"
    return "no graph listed a kernel"


def no_kernel_change(d: RunDiff) -> tuple[str, str]:
    """What the kernel section says when no kernel changed, and how (``success`` only where both
    runs compiled every graph and their kernels are the same; ``info`` or ``warning`` otherwise)."""
    sides = {side: [g for g in (getattr(gc, side) for gc in d.graph_changes) if g is not None] for side in ("a", "b")}
    failed = any(g.get("outcome") == FAILED for graphs in sides.values() for g in graphs)
    unchanged = d.kernels["unchanged"]
    if unchanged:
        text = f"No kernel changed: the same {unchanged} kernel{'s' if unchanged != 1 else ''} in both runs."
        return text, "info" if failed else "success"
    if not any(g.get("kernels") for graphs in sides.values() for g in graphs):
        why_a, why_b = _why_no_kernels(sides["a"]), _why_no_kernels(sides["b"])
        why = f"{why_a}, in both runs" if why_a == why_b else f"in A {why_a}; in B {why_b}"
        return f"Neither run produced kernels: {why}.", "warning" if failed else "info"
    return (
        "No kernel to compare: where one run lists kernels, the other has none for that graph "
        "(a cache served it whole or its compile failed).",
        "info",
    )


# -- the verdict ----------------------------------------------------------------------------------


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
    """``B compiled 16% slower (13.88 s \u2192 16.15 s)``; from next to nothing, no percentage."""
    if b > NEAR_ZERO_S and near_zero(a, b):
        return f"B compiled for {b:.2f} s, A for next to no time ({a:.3f} s \u2192 {b:.2f} s)"
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
        a_s, b_s = gc.a["work_s"], gc.b["work_s"]
        delta = b_s - a_s
        if abs(delta) >= REGRESSION_MIN_S and (a_s or delta > 0):
            direction = "slower" if delta > 0 else "faster"
            how = (
                f"in {b_s:.2f} s, where A took next to no time"
                if delta > 0 and near_zero(a_s, b_s)
                else f"{abs(delta) / a_s:.0%} {direction}"
            )
            sentence = (
                f"{gc.graph_kind} graph #{gc.b['graph_index']} of "
                f"{labels.code(gc.co_name, gc.filename, gc.line)} compiled {how} ({delta:+.2f} s)"
            )
            same_way = [s for s in gc.stage_deltas if (s["delta_s"] > 0) == (delta > 0)]
            because = []
            if same_way:
                top = same_way[0]
                because.append(f"{labels.stage(top['stage'])} {top['delta_s']:+.2f} s")
            if gc.kernels_compared:
                words = _count_words(gc.kernel_counts(), _main_kind(gc.kernels))
                if words:
                    because.append(words)
            out.append(sentence + (": " + "; ".join(because) if because else "") + ".")
    if matched and (d.graphs["added"] or d.graphs["removed"]):
        ma = sum(gc.a["work_s"] for gc in matched)
        mb = sum(gc.b["work_s"] for gc in matched)
        out.append(
            f"On the {len(matched)} graph{'s' if len(matched) != 1 else ''} both runs compiled: "
            f"{_change_words(ma, mb)}."
        )
    if ta or tb:
        sizes = (
            f"{d.a['graphs']} graphs in A, {d.b['graphs']} in B"
            if d.a["graphs"] != d.b["graphs"]
            else f"{d.b['graphs']} graph{'s' if d.b['graphs'] != 1 else ''}"
        )
        out.append(f"In all: {_change_words(ta, tb)} ({sizes}).")
    k = d.kernels
    if k["added"] or k["removed"] or k["changed"]:
        out.append(
            f"Kernels: {k['added']} added, {k['removed']} removed, {k['changed']} changed, {k['unchanged']} unchanged."
        )
    elif k["unchanged"]:
        out.append(f"The same {k['unchanged']} kernel{'s' if k['unchanged'] != 1 else ''} in both runs.")
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


# -- cached entry points -------------------------------------------------------------------------


@cached
def cached_compare(src: Source, run_a: str, run_b: str) -> RunDiff:
    return compare(store_at(src.location), run_a, run_b)


@cached
def cached_kernel_pair(
    src: Source, run_a: str, run_b: str, g: int, k: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return kernel_pair(store_at(src.location), cached_compare(src, run_a, run_b), g, k)

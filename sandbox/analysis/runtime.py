"""Kernel runtimes read back: one graph's kernels by time, and what changed between two runs. Pure.

A report has runtimes when a call of its graph was profiled (option ``profile_steps``:
``report.runtime`` and ``kernels[i]["runtime"]``, docs/REPORT.md). Two matched graphs that both
have them are compared kernel by kernel (matched by name, or as the run comparison paired them),
each runtime delta beside the build differences that may explain it: the kind (template vs extern),
the source, the chosen launch config (block sizes, warps, stages), registers, spills, shared
memory, autotune's choice, and for an extern kernel the device kernels it launched (cuBLAS's pick).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sandbox.record.report import CompileReport

# A kernel's runtime changed when it runs this many times slower (or faster) per call ...
MIN_RATIO = 1.25
# ... by at least this much per profiled call, and held this share of its graph's time in one run.
MIN_DELTA_US = 5.0
MIN_SHARE = 0.05

# Launch config fields compared, as the words that name them.
LAUNCH = (
    ("num_warps", "warps"),
    ("num_stages", "stages"),
    ("n_regs", "registers"),
    ("n_spills", "spills"),
    ("shared", "shared memory"),
)


def has_runtime(r: CompileReport) -> bool:
    return bool(r.runtime and r.runtime.get("steps"))


def us(x: float | None) -> str:
    """``41 µs``, ``1.2 ms``, ``-`` (one spelling for every face)."""
    if x is None:
        return "-"
    return f"{x / 1000:.1f} ms" if abs(x) >= 1000 else f"{x:.0f} µs" if abs(x) >= 10 else f"{x:.1f} µs"


def kernel_rows(r: CompileReport) -> list[dict[str, Any]]:
    """The graph's kernels by time, the largest first, then what no kernel accounts for (``other``):
    ``{"kernel", "kind", "calls", "total_us", "per_call_us", "share"}``. Empty without runtimes."""
    if not has_runtime(r):
        return []
    rows = []
    for k in r.kernels:
        rt = k.get("runtime") or {}
        rows.append(
            {
                "kernel": k.get("name"),
                "kind": k.get("kind"),
                "calls": rt.get("calls") or 0,
                "total_us": rt.get("total_us"),
                "per_call_us": rt.get("per_call_us"),
                "share": rt.get("share"),
                "device_kernels": ", ".join(rt.get("device_kernels") or {}),
            }
        )
    rows.sort(key=lambda row: -(row["total_us"] or 0.0))
    rt = r.runtime or {}
    graph_us = rt.get("graph_us") or 0.0
    other = rt.get("other_us") or 0.0
    if other > 0:
        rows.append(
            {
                "kernel": "(other: not a listed kernel)",
                "kind": "",
                "calls": None,
                "total_us": other,
                "per_call_us": None,
                "share": round(other / graph_us, 4) if graph_us else None,
                "device_kernels": ", ".join(list(rt.get("other_by_name") or {})[:3]),
            }
        )
    return rows


def _chosen(k: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the kernel ran with: autotune's choice, else its one launcher."""
    triton = k.get("triton") or {}
    if triton.get("chosen"):
        return triton["chosen"]
    launchers = k.get("launchers") or []
    return launchers[0] if len(launchers) == 1 else {}


def build_changes(ka: Mapping[str, Any], kb: Mapping[str, Any]) -> list[str]:
    """How two builds of a kernel differ, in words: ``XBLOCK 32 → 16``, ``registers 56 → 44``,
    ``template → extern``, ``source changed (lines 62 → 40)``, ``cuBLAS kernel a → b``."""
    out: list[str] = []
    if ka.get("kind") != kb.get("kind"):
        out.append(f"{ka.get('kind')} \u2192 {kb.get('kind')}")
    ca, cb = _chosen(ka), _chosen(kb)
    for key in sorted({k for k in (*ca, *cb) if str(k).endswith("BLOCK")}):
        if ca.get(key) != cb.get(key):
            out.append(f"{key} {ca.get(key)} \u2192 {cb.get(key)}")
    for key, word in LAUNCH:
        if ca.get(key) != cb.get(key) and (ca.get(key) is not None or cb.get(key) is not None):
            out.append(f"{word} {ca.get(key)} \u2192 {cb.get(key)}")
    ta, tb = ka.get("triton") or {}, kb.get("triton") or {}
    if (ta.get("num_configs") or 0) != (tb.get("num_configs") or 0) and (ta or tb):
        out.append(f"autotune candidates {ta.get('num_configs') or 0} \u2192 {tb.get('num_configs') or 0}")
    if ka.get("source_hash") != kb.get("source_hash") and (ka.get("source_hash") or kb.get("source_hash")):
        lines = f" (lines {ka.get('lines')} \u2192 {kb.get('lines')})" if ka.get("lines") != kb.get("lines") else ""
        out.append(f"source changed{lines}")
    da = list((ka.get("runtime") or {}).get("device_kernels") or {})[:1]
    db = list((kb.get("runtime") or {}).get("device_kernels") or {})[:1]
    if da != db and (da or db):
        out.append(f"device kernel {(da or ['-'])[0]} \u2192 {(db or ['-'])[0]}")
    return out


def kernel_pairs(
    a: CompileReport, b: CompileReport, renamed: Iterable[tuple[str | None, str | None]] = ()
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The kernels of two builds of a graph, paired by name, then as ``renamed`` pairs them."""
    by_a = {k.get("name"): k for k in a.kernels}
    by_b = {k.get("name"): k for k in b.kernels}
    pairs = [(by_a[n], by_b[n]) for n in by_a if n in by_b]
    for na, nb in renamed:
        if na != nb and na in by_a and nb in by_b and na not in by_b and nb not in by_a:
            pairs.append((by_a[na], by_b[nb]))
    return pairs


def deltas(
    a: CompileReport, b: CompileReport, renamed: Iterable[tuple[str | None, str | None]] = ()
) -> list[dict[str, Any]]:
    """Per matched kernel with a runtime on both sides: per-call times, the ratio B/A, the change of
    the profiled call's time, shares, and the build differences; the largest change first."""
    if not (has_runtime(a) and has_runtime(b)):
        return []
    calls_a = max(len((a.runtime or {}).get("steps") or []), 1)
    calls_b = max(len((b.runtime or {}).get("steps") or []), 1)
    out = []
    for ka, kb in kernel_pairs(a, b, renamed):
        ra, rb = ka.get("runtime") or {}, kb.get("runtime") or {}
        pa, pb = ra.get("per_call_us"), rb.get("per_call_us")
        if pa is None or pb is None:
            continue
        step_a, step_b = (ra.get("total_us") or 0.0) / calls_a, (rb.get("total_us") or 0.0) / calls_b
        out.append(
            {
                "kernel_a": ka.get("name"),
                "kernel_b": kb.get("name"),
                "kind": kb.get("kind"),
                "a_per_call_us": pa,
                "b_per_call_us": pb,
                "ratio": round(pb / pa, 3) if pa else None,
                "a_calls": ra.get("calls"),
                "b_calls": rb.get("calls"),
                "a_share": ra.get("share"),
                "b_share": rb.get("share"),
                "step_delta_us": round(step_b - step_a, 3),
                "build": build_changes(ka, kb),
            }
        )
    out.sort(key=lambda d: -abs(d["step_delta_us"]))
    return out


def significant(d: Mapping[str, Any]) -> bool:
    """A runtime change worth naming: past MIN_RATIO either way, MIN_DELTA_US per call, MIN_SHARE."""
    ratio = d.get("ratio")
    if not ratio:
        return False
    shares = [s for s in (d.get("a_share"), d.get("b_share")) if s is not None]
    return (
        (ratio >= MIN_RATIO or ratio <= 1 / MIN_RATIO)
        and abs(d["step_delta_us"]) >= MIN_DELTA_US
        and (not shares or max(shares) >= MIN_SHARE)
    )


def sentence(d: Mapping[str, Any], why: Sequence[str] = (), subject: str = "B's ", against: str = "") -> str:
    """The verdict's sentence: ``B's <kernel> runs <n>x slower (<A> → <B> µs/call): <build differences>``."""
    ratio = d["ratio"]
    how = f"{ratio:.1f}x slower" if ratio >= 1 else f"{1 / ratio:.1f}x faster"
    name = d["kernel_b"] if d["kernel_a"] == d["kernel_b"] else f"{d['kernel_b']} (A: {d['kernel_a']})"
    a, b = d["a_per_call_us"], d["b_per_call_us"]
    unit = "ms" if max(a, b) >= 1000 else "µs"
    scale = 1000 if unit == "ms" else 1
    fmt = "{:.2f}" if unit == "ms" else "{:.0f}" if max(a, b) >= 10 else "{:.1f}"
    text = f"{subject}{name} runs {how}{against} ({fmt.format(a / scale)} \u2192 {fmt.format(b / scale)} {unit}/call)"
    reasons = list(d.get("build") or []) + list(why)
    return text + (f": {', '.join(reasons[:4])}" if reasons else "")


def summary(r: CompileReport) -> str:
    """``profiled call 3: 1.97 ms, kernels 56%`` (one line per graph with runtimes)."""
    rt = r.runtime or {}
    if not rt.get("steps"):
        skipped = rt.get("skipped") or []
        return f"not profiled: {skipped[-1].get('why')}" if skipped else ""
    calls = ", ".join(str(c) for c in rt.get("profiled_calls") or [])
    graph_us = rt.get("graph_us") or 0.0
    share = f", kernels {rt.get('kernels_us', 0.0) / graph_us:.0%}" if graph_us else ""
    n = len(rt["steps"])
    what = "device time" if rt.get("device") not in (None, "cpu") else "time"
    return f"profiled call{'s' if n > 1 else ''} {calls}: {what} {us(graph_us / n)} per call{share}"

"""Why two runs compiled differently: ranked causes (one run alone: ``run_causes.py``).

Pure functions over runs and reports (no store, no torch). Each ``Cause`` names a kind, says it
in a sentence in the user's words (with the code location where there is one), lists the graphs
it explains, points at its evidence and says how many seconds of compile work it accounts for.
Time spent waiting for a worker is kept apart from compile work: a wait is an environment cause,
never part of another cause's seconds.

Ranking: causes in the code, the config or the versions first, then cache effects (a cache
that was warm in one run and cold in the other), then the environment (waits, a slower machine);
within each, by how many seconds of the difference a cause accounts for. So a busy machine never
outranks the graph break that explains the extra graphs.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.analysis import runtime
from sandbox.analysis.diff import graph_keys
from sandbox.record.report import FAILED, CompileReport

__all__ = ["CLASSES", "Cause", "explain", "wait_s", "work_s"]

# Each kind and the class it ranks in (0: code, config, versions; 1: caches; 2: environment).
CLASSES = {
    "graph_break_added": 0,
    "graph_break_removed": 0,
    "recompile": 0,
    "shape_change": 0,
    "kernel_change": 0,
    "graph_change": 0,
    "config_change": 0,
    "mode_change": 0,
    "version_change": 0,
    "compile_failure": 0,
    "runtime_change": 0,  # a kernel runs slower or faster and its build differs (profile_steps)
    "cache_miss": 1,
    "environment": 2,
    "runtime_noise": 2,  # ... with the same build
}

# Inductor settings that torch.compile's modes set (torch._inductor.list_mode_options).
MODE_KEYS = {
    "max_autotune",
    "max_autotune_pointwise",
    "max_autotune_gemm",
    "triton.cudagraphs",
    "coordinate_descent_tuning",
    "epilogue_fusion",
    "shape_padding",
}
VERSIONS = ("torch", "triton", "python", "cuda", "sandbox")
# Below these, a difference in time is noise rather than a cause.
MIN_S = 0.25
MIN_SHARE = 0.05


@dataclass
class Cause:
    cause: str  # a key of CLASSES
    text: str
    seconds: float = 0.0  # of the compile-work difference (B - A; for one run: its compile work)
    graphs: list[str] = field(default_factory=list)  # the graphs it explains, as labels
    evidence: list[dict[str, Any]] = field(default_factory=list)  # {"graph": ...}, {"kernel": ...}, {"config": ...}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- time ------------------------------------------------------------------------------------------


def wait_s(r: CompileReport) -> float:
    return r.wait_s


def work_s(r: CompileReport) -> float:
    return r.work_s


def _work(reports: Iterable[CompileReport]) -> float:
    return sum(work_s(r) for r in reports)


def _signed(s: float) -> str:
    return f"{s:+.1f} s" if abs(s) >= 0.05 else f"{s:+.2f} s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- naming ----------------------------------------------------------------------------------------


def _where(filename: str | None, line: int | None) -> str:
    return f"{os.path.basename(filename)}:{line}" if filename else "an unknown place"


def _graph(r: CompileReport) -> str:
    return f"{r.graph_kind} graph of {r.co_name or '?'} at {_where(r.filename, r.line)}"


def _evidence(side: str, r: CompileReport) -> dict[str, Any]:
    return {"graph": r.graph_index, "run": side, "report_id": r.report_id}


_RESUME = re.compile(r"torch_dynamo_resume_in_(\w+?)_at_(\d+)$")


def _function(r: CompileReport) -> str | None:
    """The user function a report's graph belongs to (a resume function belongs to the one it resumes)."""
    m = _RESUME.match(r.co_name or "")
    return m.group(1) if m else r.co_name


def _short(reason: str | None, limit: int = 120) -> str:
    """Dynamo's reason, first phrase, without markup: ``Call to `torch._dynamo.graph_break()` Explanation: ...``
    reads ``call to torch._dynamo.graph_break``."""
    text = (reason or "").split(" Explanation:")[0].split(". ")[0].replace("`", "").replace("()", "").strip()
    text = text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _guard(reason: str | None) -> str:
    """A recompile reason without dynamo's ``<compile id>: `` prefix."""
    text = (reason or "a guard failed").strip()
    return re.sub(r"^\d+/\d+(_\d+)?: ", "", text)


# -- graph breaks ----------------------------------------------------------------------------------


def _breaks(reports: Sequence[CompileReport]) -> dict[tuple, CompileReport]:
    """Graph breaks by where they are (file name, line, function): the first report of each."""
    out: dict[tuple, CompileReport] = {}
    for r in reports:
        reason = r.compile_reason or {}
        if reason.get("graph_break") and reason.get("frames"):
            frame = reason["frames"][-1]
            out.setdefault((os.path.basename(frame.get("file") or ""), frame.get("line"), frame.get("function")), r)
    return out


def _break_causes(reports_a: Sequence[CompileReport], reports_b: Sequence[CompileReport]) -> tuple[list[Cause], set]:
    out: list[Cause] = []
    explained: set[str] = set()
    breaks_a, breaks_b = _breaks(reports_a), _breaks(reports_b)
    for mine, other, kind, side, word in (
        (breaks_b, breaks_a, "graph_break_added", "B", "new"),
        (breaks_a, breaks_b, "graph_break_removed", "A", "removed"),
    ):
        for where in [w for w in mine if w not in other]:
            r = mine[where]
            fn = _function(r)
            in_a = [x for x in reports_a if _function(x) == fn and os.path.basename(x.filename or "") == where[0]]
            in_b = [x for x in reports_b if _function(x) == fn and os.path.basename(x.filename or "") == where[0]]
            more = len(in_b) - len(in_a)
            seconds = _work(in_b) - _work(in_a)
            how = f"{_plural(abs(more), 'more graph' if more >= 0 else 'graph')}{'' if more >= 0 else ' fewer'}"
            reason = _short(r.compile_reason.get("reason"))
            if word == "new":
                text = f"B has a new graph break at {where[0]}:{where[1]} ({reason}): {how}, {_signed(seconds)}"
            else:
                text = f"B no longer breaks the graph at {where[0]}:{where[1]} ({reason}): {how}, {_signed(seconds)}"
            graphs = [_graph(x) for x in (in_b if side == "B" else in_a)]
            explained |= {x.report_id for x in in_a + in_b}
            out.append(Cause(kind, text, seconds, graphs, [_evidence(side, r)]))
    return out, explained


# -- recompiles ------------------------------------------------------------------------------------


def _recompiles(reports: Sequence[CompileReport]) -> dict[tuple, list[CompileReport]]:
    out: dict[tuple, list[CompileReport]] = {}
    for r in reports:
        if r.recompile:
            out.setdefault((r.co_name, os.path.basename(r.filename or ""), r.line), []).append(r)
    return out


def _recompile_causes(
    reports_a: Sequence[CompileReport], reports_b: Sequence[CompileReport]
) -> tuple[list[Cause], set]:
    out: list[Cause] = []
    explained: set[str] = set()
    rec_a, rec_b = _recompiles(reports_a), _recompiles(reports_b)
    for where, rs in rec_b.items():
        before = rec_a.get(where, [])
        compiles = {(r.recompile or {}).get("count") for r in rs} - {(r.recompile or {}).get("count") for r in before}
        if not compiles:
            continue
        new = [r for r in rs if (r.recompile or {}).get("count") in compiles]
        first = min(new, key=lambda r: r.graph_index)
        seconds = _work(new)
        text = (
            f"B recompiled {first.co_name or '?'} at {_where(first.filename, first.line)} "
            f"({_plural(len(compiles), 'more compile')}): {_guard(first.recompile.get('reason'))}, {_signed(seconds)}"
        )
        explained |= {r.report_id for r in new}
        out.append(Cause("recompile", text, seconds, [_graph(r) for r in new], [_evidence("B", first)]))
    return out, explained


# -- a graph both runs compiled ----------------------------------------------------------------------


def _input_text(i: int, x: Mapping[str, Any]) -> str:
    if x.get("kind") == "tensor":
        return f"input {i} {list(x.get('shape') or [])} {x.get('dtype')}"
    return f"input {i} {x.get('kind')} {x.get('value')!r}"


def _inputs_change(a: CompileReport, b: CompileReport) -> str | None:
    ia, ib = list(a.inputs or []), list(b.inputs or [])
    if not ia or not ib:
        return None
    if len(ia) != len(ib):
        return f"{len(ia)} inputs \u2192 {len(ib)}"
    for i, (x, y) in enumerate(zip(ia, ib)):
        if x != y:
            return f"{_input_text(i, x)} \u2192 {list(y.get('shape') or [])} {y.get('dtype')}".replace(
                f"\u2192 [] {y.get('dtype')}", f"\u2192 {y.get('kind')} {y.get('value')!r}"
            )
    return None


def _ops(r: CompileReport) -> Counter:
    return Counter(op for k in r.kernels for op in (k.get("ops") or []))


def _kernel_with(r: CompileReport, ops: Iterable[str]) -> str | None:
    wanted = set(ops)
    return next((k.get("name") for k in r.kernels if wanted & set(k.get("ops") or [])), None)


def _calls_change(a: CompileReport, b: CompileReport) -> str | None:
    ca, cb = Counter(a.graph.get("calls") or {}), Counter(b.graph.get("calls") or {})
    if not ca or not cb or ca == cb:
        return None
    added, removed = sorted(cb - ca), sorted(ca - cb)
    if added and removed:
        return f"it calls {', '.join(added)} where A called {', '.join(removed)}"
    return f"it also calls {', '.join(added)}" if added else f"it no longer calls {', '.join(removed)}"


def _kernel_change(a: CompileReport, b: CompileReport) -> tuple[str, list[dict[str, Any]]] | None:
    """What changed in the code, in the words of the graph's calls and of its kernels' fused ops."""
    oa, ob = _ops(a), _ops(b)
    calls = _calls_change(a, b)
    if not (a.kernels and b.kernels and oa != ob):
        return (calls, []) if calls else None
    added, removed = sorted(ob - oa), sorted(oa - ob)
    ka, kb = _kernel_with(a, removed), _kernel_with(b, added)
    if added and removed:
        what = f"fuses {', '.join(added)} where A fused {', '.join(removed)}"
    elif added:
        what = f"also fuses {', '.join(added)}"
    else:
        what = f"no longer fuses {', '.join(removed)}"
    names = f" ({kb} replaces {ka})" if ka and kb else f" ({kb or ka})" if (kb or ka) else ""
    evidence = [
        {"kernel": n, "run": side, "graph": r.graph_index, "report_id": r.report_id}
        for n, side, r in ((ka, "A", a), (kb, "B", b))
        if n
    ]
    return (f"{calls}; its generated code {what}{names}" if calls else f"its generated code {what}{names}"), evidence


def _differing(a: CompileReport, b: CompileReport, cache: str) -> list[str]:
    ca = ((a.cache_keys or {}).get(cache) or {}).get("components") or {}
    cb = ((b.cache_keys or {}).get(cache) or {}).get("components") or {}
    return sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))


def _state(r: CompileReport, cache: str) -> str | None:
    return (r.caches.get(cache) or {}).get("state")


def _hit(r: CompileReport) -> bool:
    return r.outcome == "cache_hit" or _state(r, "fx_graph") == "hit" or _state(r, "aot_autograd") == "hit"


@dataclass
class _Pair:
    a: CompileReport
    b: CompileReport
    delta: float  # compile work, B - A


def _pairs(reports_a: Sequence[CompileReport], reports_b: Sequence[CompileReport]) -> list[_Pair]:
    by_key = dict(graph_keys(reports_a))
    out = []
    for key, b in graph_keys(reports_b):
        a = by_key.get(key)
        if a is not None:
            out.append(_Pair(a, b, work_s(b) - work_s(a)))
    return out


def _group(kind: str, pairs: list[_Pair], text: str, evidence: list[dict[str, Any]]) -> Cause:
    seconds = sum(p.delta for p in pairs)
    return Cause(
        kind,
        text + (f", {_signed(seconds)}" if abs(seconds) >= 0.005 else ""),
        sum(p.delta for p in pairs),
        [_graph(p.b) for p in pairs],
        evidence + [_evidence("B", p.b) for p in pairs[:3]],
    )


def _by_function(pairs: list[_Pair]) -> dict[tuple, list[_Pair]]:
    out: dict[tuple, list[_Pair]] = {}
    for p in pairs:
        out.setdefault((_function(p.b), os.path.basename(p.b.filename or ""), p.b.line), []).append(p)
    return out


# -- two runs ----------------------------------------------------------------------------------------


def _cache_words(pairs: list[_Pair], caches: str) -> str:
    """``: the FX graph cache missed in B for 2 graphs`` (or, the other way, what B found there)."""
    b_missed = [p for p in pairs if not _hit(p.b)]
    if b_missed:
        return f": {caches} missed in B for {_plural(len(b_missed), 'graph')} A found there"
    return f": B found {_plural(len(pairs), 'graph')} in {caches} that A compiled" if pairs else ""


def _config_text(key: str, a: Any, b: Any) -> str:
    return f"{key}={b!r} (A: {'default' if a is None else repr(a)})" if b is not None else f"{key} back to default"


def explain(
    run_a: Mapping[str, Any],
    reports_a: Sequence[CompileReport],
    run_b: Mapping[str, Any],
    reports_b: Sequence[CompileReport],
) -> list[Cause]:
    """The causes of the difference from run A (before) to run B (after), ranked."""
    causes, explained = _break_causes(reports_a, reports_b)
    more, explained_recompiles = _recompile_causes(reports_a, reports_b)
    causes += more
    explained |= explained_recompiles

    ca, cb = run_a.get("inductor_config") or {}, run_b.get("inductor_config") or {}
    config = {k: (ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)}
    versions = {k: (run_a.get(k), run_b.get(k)) for k in VERSIONS if run_a.get(k) != run_b.get(k)}
    by_config: list[_Pair] = []
    by_version: list[_Pair] = []
    by_cache: list[_Pair] = []
    failures: list[_Pair] = []
    changed: dict[str, list[_Pair]] = {"shape_change": [], "kernel_change": [], "graph_change": []}
    same: list[_Pair] = []
    for p in _pairs(reports_a, reports_b):
        if p.a.report_id in explained or p.b.report_id in explained:
            continue
        if (p.b.outcome == FAILED) != (p.a.outcome == FAILED):
            failures.append(p)
        elif p.a.graph.get("hash") and p.b.graph.get("hash") and p.a.graph["hash"] != p.b.graph["hash"]:
            kind = (
                "shape_change"
                if _inputs_change(p.a, p.b)
                else "kernel_change"
                if _kernel_change(p.a, p.b)
                else "graph_change"
            )
            changed[kind].append(p)
        elif _hit(p.a) != _hit(p.b):
            parts = _differing(p.a, p.b, "fx_graph")
            if any(k.startswith("inductor_config") for k in parts) or (config and not parts):
                by_config.append(p)
            elif any("version" in k or k.startswith("system_info") for k in parts) or (versions and not parts):
                by_version.append(p)
            else:
                by_cache.append(p)
        else:
            same.append(p)

    for kind, pairs in changed.items():
        for (fn, file, line), group in _by_function(pairs).items():
            first = group[0]
            where = f"{fn or '?'} at {file}:{line}"
            if kind == "shape_change":
                text = f"B's graph of {where} got inputs of another shape: {_inputs_change(first.a, first.b)}"
                evidence: list[dict[str, Any]] = []
            elif kind == "kernel_change":
                pick = next((p for p in group if _kernel_change(p.a, p.b)), first)
                what, evidence = _kernel_change(pick.a, pick.b)  # type: ignore[misc]
                text = f"B's {pick.b.graph_kind} graph of {where} changed: {what}"
            else:
                text, evidence = f"B traced another graph for {where} (its code or inputs differ from A's)", []
            causes.append(_group(kind, group, text, evidence))

    if config:
        mode = set(config) <= MODE_KEYS
        settings = "; ".join(_config_text(k, a, b) for k, (a, b) in list(config.items())[:4])
        missed = _cache_words(by_config, "the FX graph cache")
        text = f"B compiles with another {'mode' if mode else 'Inductor config'}, {settings}{missed}"
        evidence = [{"config": k} for k in config]
        cause = _group("mode_change" if mode else "config_change", by_config, text, evidence)
        if not by_config:
            cause.text = text
        causes.append(cause)
    if versions:
        what = ", ".join(f"{k} {b} (A: {a})" for k, (a, b) in versions.items())
        missed = _cache_words(by_version, "the compile caches")
        cause = _group("version_change", by_version, f"B runs {what}{missed}", [{"config": k} for k in versions])
        if not by_version:
            cause.text = f"B runs {what}"
        causes.append(cause)
    for p in failures:
        side, r = ("B", p.b) if p.b.outcome == FAILED else ("A", p.a)
        f = r.failure
        ran = {"eager": "ran eagerly", "in_process": "compiled in-process"}.get(r.fallback or "", "raised")
        text = (
            f"{side}'s {_graph(r)} failed to compile ({f.kind if f else 'error'}: "
            f"{(f.message if f else '').splitlines()[0][:100] if f and f.message else 'no message'}) and {ran}"
        )
        causes.append(_group("compile_failure", [p], text, []))
    if by_cache:
        hits_b = [p for p in by_cache if _hit(p.b)]
        misses_b = [p for p in by_cache if not _hit(p.b)]
        if hits_b:
            causes.append(
                _group(
                    "cache_miss",
                    hits_b,
                    f"A compiled {_plural(len(hits_b), 'graph')} that B found in the compile caches",
                    [],
                )
            )
        if misses_b:
            parts = sorted({k for p in misses_b for k in _differing(p.a, p.b, "fx_graph")})
            why = f"its cache key differs in {', '.join(parts[:3])}" if parts else "the same key, not in B's cache"
            causes.append(
                _group(
                    "cache_miss",
                    misses_b,
                    f"B missed the compile caches for {_plural(len(misses_b), 'graph')} A found there ({why})",
                    [],
                )
            )

    causes += _unmatched(reports_a, reports_b, explained)
    causes += _environment(reports_a, reports_b, same)
    why = [_config_text(k, a, b) for k, (a, b) in list(config.items())[:2]]
    causes += runtime_causes(reports_a, reports_b, why + [f"{k} {b} (A: {a})" for k, (a, b) in versions.items()])
    return _ranked(causes)


def runtime_causes(
    reports_a: Sequence[CompileReport],
    reports_b: Sequence[CompileReport],
    why: Sequence[str] = (),
    subject: str = "B's ",
    against: str = "",
    side: str = "B",
) -> list[Cause]:
    """Kernels of matched graphs that run slower or faster in B's profiled calls (``profile_steps``):
    with their build differences (and ``why``: the config or versions that differ) a
    ``runtime_change``, else ``runtime_noise``. ``seconds`` is the change of the profiled call's time."""
    out = []
    for p in _pairs(reports_a, reports_b):
        for d in runtime.deltas(p.a, p.b):
            if not runtime.significant(d):
                continue
            built = bool(d["build"])
            text = runtime.sentence(d, why if built else (), subject, against)
            if not built:
                text += ", with the same build: the machine (its load) or noise"
            evidence = {"kernel": d["kernel_b"], "run": side, "graph": p.b.graph_index, "report_id": p.b.report_id}
            evidence["runtime"] = {k: d[k] for k in ("a_per_call_us", "b_per_call_us", "ratio", "step_delta_us")}
            kind = "runtime_change" if built else "runtime_noise"
            out.append(Cause(kind, text, d["step_delta_us"] / 1e6, [_graph(p.b)], [evidence]))
    return out


def _unmatched(
    reports_a: Sequence[CompileReport], reports_b: Sequence[CompileReport], explained: set[str]
) -> list[Cause]:
    """Graphs only one run compiled that no graph break or recompile explains, by function."""
    keys_a = {key for key, _ in graph_keys(reports_a)}
    keys_b = {key for key, _ in graph_keys(reports_b)}
    out = []
    for side, mine, theirs, other in (("B", reports_b, keys_a, "A"), ("A", reports_a, keys_b, "B")):
        only = [r for key, r in graph_keys(mine) if key not in theirs and r.report_id not in explained]
        groups: dict[tuple, list[CompileReport]] = {}
        for r in only:
            groups.setdefault((r.co_name, os.path.basename(r.filename or ""), r.line), []).append(r)
        for (fn, file, line), rs in groups.items():
            seconds = _work(rs) if side == "B" else -_work(rs)
            out.append(
                Cause(
                    "graph_change",
                    f"{side} compiled {_plural(len(rs), 'graph')} of {fn or '?'} at {file}:{line} "
                    f"that {other} did not, {_signed(seconds)}",
                    seconds,
                    [_graph(r) for r in rs],
                    [_evidence(side, r) for r in rs[:3]],
                )
            )
    return out


def _environment(
    reports_a: Sequence[CompileReport], reports_b: Sequence[CompileReport], same: list[_Pair]
) -> list[Cause]:
    out = []
    waited = sum(wait_s(r) for r in reports_b) - sum(wait_s(r) for r in reports_a)
    if abs(waited) >= MIN_S:
        more = "longer" if waited > 0 else "less"
        out.append(
            Cause(
                "environment",
                f"B waited {abs(waited):.1f} s {more} for a worker (a worker still starting, or all of them busy)",
                waited,
                [],
                [{"stage": "wait_for_worker"}],
            )
        )
    if same:
        ta, tb = sum(work_s(p.a) for p in same), sum(work_s(p.b) for p in same)
        if abs(tb - ta) >= MIN_S and ta and abs(tb - ta) / ta >= MIN_SHARE:
            word = "slower" if tb > ta else "faster"
            out.append(
                Cause(
                    "environment",
                    f"B compiled the same {_plural(len(same), 'graph')} {abs(tb - ta) / ta:.0%} {word} "
                    f"({_signed(tb - ta)}) with the same code, config, versions and cache states: "
                    "the machine (its load) or noise",
                    tb - ta,
                    [_graph(p.b) for p in same],
                    [],
                )
            )
    return out


def _ranked(causes: list[Cause]) -> list[Cause]:
    def key(c: Cause) -> tuple:
        rank = CLASSES.get(c.cause, 2)
        # A recorded event (a wait) leads the environment class: "the machine or noise" is what is left
        # unexplained, so it comes last however many seconds it holds.
        residual = (c.cause == "environment" and not c.evidence) or c.cause == "runtime_noise"
        # What B's training step pays comes first: a kernel that runs slower for a build reason, then a
        # graph that failed to compile and ran eagerly (the graphs compiled beside it changed because
        # of the same code, and their seconds depend on the machine's load, not on the cause).
        first = {"runtime_change": 0, "compile_failure": 1}.get(c.cause, 2)
        return (rank, first, residual, rank < 2 and not c.graphs, -abs(c.seconds))

    return sorted(causes, key=key)

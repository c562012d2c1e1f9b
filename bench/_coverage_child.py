"""One slice of the coverage sweep, in a fresh Python process. Started by ``bench/coverage.py``.

    python bench/_coverage_child.py --variant sandbox --ops a,b,c --result FILE [--device cuda] [--dtypes ...]

Runs each entry's samples of every float dtype it supports on the device (the CPU unless
``--device`` names another) eagerly and through the variant's backend, compares outputs and,
where the op supports it, gradients, and appends one JSON line per entry to FILE as soon as it
is done (a crash loses one entry, never the slice). After each sample it also replaces
FILE.progress with the entry's counts so far, so an entry that crashes or runs past the sweep's
timeout still counts the samples and graphs it got through. Graph outcomes come from the sandbox's
CompileReports; for the other variants from Inductor's FX graph cache counters, and for the
stock subprocess mode from what its serializer refused.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import traceback
import warnings
from typing import Any

import _coverage_models as models
import torch
import torch.utils._pytree as pytree

import sandbox

BACKEND = {"sandbox": "sandbox", "stock": "inductor", "inductor": "inductor"}
# Entries whose outputs are uninitialized memory (their OpInfo entries skip value comparisons too):
# eager may return the same bytes twice by reusing a freed block, so the seed check cannot tell.
UNINITIALIZED = {"empty", "empty_like", "empty_permuted", "empty_strided", "new_empty", "new_empty_strided"}

# rtol, atol against eager: Inductor fuses and reorders, so bit equality is not the bar.
TOLERANCE = {
    torch.float64: (1e-5, 1e-7),
    torch.float32: (1.3e-3, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}


class StockRefusals:
    """What the stock subprocess mode compiled in this process, and why: its serializer
    returns None for a graph it will not send to its subprocess."""

    def __init__(self) -> None:
        from torch._inductor import compile_fx_ext as ext

        self.reasons: collections.Counter[str] = collections.Counter()
        original = ext._SerializedFxCompile.serialize_compile

        def serialize_compile(this: Any, gm: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(this, gm, *args, **kwargs)
            if out is None:
                self.reasons[self._why(gm)] += 1
            return out

        ext._SerializedFxCompile.serialize_compile = serialize_compile

    @staticmethod
    def _why(gm: Any) -> str:
        from torch._inductor import compile_fx_ext as ext
        from torch._inductor.codecache import BypassFxGraphCache, FxGraphCache
        from torch.fx._graph_pickler import GraphPickler

        try:
            FxGraphCache._check_for_hop(gm)
        except BypassFxGraphCache as e:
            return str(e)
        if ext._graph_contains_triton_kernel_wrappers(gm):
            return "graph contains triton kernel wrappers"
        try:
            GraphPickler.dumps(gm)
        except Exception as e:
            return f"unable to pickle: {type(e).__name__}: {str(e)[:120]}"
        return "unable to pickle the inputs"


def _graph_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    c = counters["inductor"]
    return {k: int(c.get(f"fxgraph_cache_{k}", 0)) for k in ("miss", "hit", "bypass")}


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(t.requires_grad)


def _call(fn: Any, sample: Any, grad: bool) -> tuple[Any, Any]:
    """``fn`` on a copy of the sample (an op that mutates its inputs sees the same values
    each time), with the gradients of its outputs' sum where ``grad``."""
    x, args, kwargs = pytree.tree_map_only(torch.Tensor, _copy, (sample.input, sample.args, sample.kwargs))
    out = fn(x, *args, **kwargs)
    if not grad:
        return out, None
    flat = pytree.tree_leaves((x, args, kwargs))
    leaves = [t for t in flat if isinstance(t, torch.Tensor) and t.requires_grad]
    outs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not leaves or not outs:
        return out, None
    loss = sum(t.float().sum() for t in outs)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out, grads


def _same(a: Any, b: Any, dtype: torch.dtype) -> bool:
    rtol, atol = TOLERANCE.get(dtype, (1e-3, 1e-3))
    try:
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True, check_device=False)
        return True
    except (AssertionError, TypeError, ValueError, RuntimeError):
        return False


def _seeded(fn: Any, seed: int) -> Any:
    torch.manual_seed(seed)
    return fn()


def _checkpoint(
    path: str, rec: dict[str, Any], variant: str, n_reports: int, before: dict[str, int], t0: float
) -> None:
    """The entry's counts so far, replaced whole (a reader never sees half a file)."""
    graphs, reasons = _account(variant, n_reports, before, consume=False)
    partial = {**rec, "seconds": round(time.perf_counter() - t0, 3), "graphs": {k: v for k, v in graphs.items() if v}}
    partial["reasons"] = dict(reasons)
    with open(path + ".tmp", "w") as f:
        json.dump(partial, f)
    os.replace(path + ".tmp", path)


def run_entry(
    name: str,
    op: Any,
    variant: str,
    dtypes: list[str] | None,
    max_samples: int,
    device: str = "cpu",
    progress: str = "",
) -> dict[str, Any]:
    from _coverage_cases import float_dtypes  # loaded with the OpInfo table, for operator entries only

    backend = BACKEND[variant]
    rec: dict[str, Any] = {"op": name, "variant": variant, "device": device, "dtypes": [], "samples": 0}
    rec["compared"] = 0
    rec.update(failed=0, mismatch=0, eager_error=0, random=0, uninitialized=0, errors=[], mismatched=[])
    n_reports = len(sandbox.reports())
    counters_before = _graph_counters()
    t0 = time.perf_counter()
    for dtype in float_dtypes(op, device):
        if dtypes and str(dtype).replace("torch.", "") not in dtypes:
            continue
        rec["dtypes"].append(str(dtype).replace("torch.", ""))
        grad = bool(op.supports_autograd) and dtype in op.supported_backward_dtypes(device)
        torch._dynamo.reset()

        def fn(x: Any, *args: Any, _op: Any = op, **kwargs: Any) -> Any:
            return _op(x, *args, **kwargs)

        compiled = torch.compile(fn, backend=backend)
        try:
            samples = list(op.sample_inputs(device, dtype, requires_grad=grad))
        except Exception as e:  # an entry whose samples cannot be made here
            rec["errors"].append(f"{dtype}: samples: {type(e).__name__}: {str(e)[:200]}")
            continue
        for i, sample in enumerate(samples[:max_samples] if max_samples else samples):
            if progress:  # the samples before this one, should this one never finish
                _checkpoint(progress, rec, variant, n_reports, counters_before, t0)
            rec["samples"] += 1
            key = f"{str(dtype).replace('torch.', '')}#{i}"
            try:
                expected = _seeded(lambda s=sample, g=grad: _call(fn, s, g), 0)
                again = _seeded(lambda s=sample, g=grad: _call(fn, s, g), 1)
            except Exception:
                rec["eager_error"] += 1
                continue
            try:
                got = _seeded(lambda s=sample, g=grad, c=compiled: _call(c, s, g), 0)
            except Exception as e:
                rec["failed"] += 1
                if len(rec["errors"]) < 5:
                    last = traceback.format_exception_only(type(e), e)[-1].strip()
                    rec["errors"].append(f"{key}: {last[:300]}")
                continue
            if name in UNINITIALIZED:
                rec["uninitialized"] += 1  # compiled and run; no values to compare
                continue
            if not _same(expected, again, dtype):
                rec["random"] += 1  # eager differs from itself under another seed: only shapes compare
                continue
            rec["compared"] += 1
            if not _same(got, expected, dtype):
                rec["mismatch"] += 1
                rec["mismatched"].append(key)
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    graphs, reasons = _account(variant, n_reports, counters_before)
    rec["graphs"] = {k: v for k, v in graphs.items() if v}
    rec["reasons"] = dict(reasons)
    return rec


def _account(variant: str, n_reports: int, counters_before: dict[str, int], consume: bool = True) -> tuple[Any, Any]:
    """The graphs compiled since ``n_reports`` reports and ``counters_before``, by outcome, and
    the reasons of those left in the user's process or failed; ``consume`` clears the stock
    mode's refusals, counted from then on for the next entry."""
    graphs: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    if variant == "sandbox":
        for r in sandbox.reports()[n_reports:]:
            graphs[r.outcome] += 1
            if r.outcome == "in_process":
                reasons[r.reason or "?"] += 1
            elif r.outcome == "failed" and r.failure is not None:
                reasons[f"failed ({r.failure.kind}): {r.failure.message[:160]}"] += 1
    else:
        after = _graph_counters()
        delta = {k: after[k] - counters_before[k] for k in after}
        graphs["cache_hit"] = delta["hit"]
        compiled_graphs = delta["miss"] + delta["bypass"]
        if variant == "stock":
            left = sum(STOCK.reasons.values()) if STOCK else 0
            graphs["in_process"] = left
            graphs["isolated"] = compiled_graphs - left
            reasons.update(STOCK.reasons if STOCK else {})
            if STOCK and consume:
                STOCK.reasons.clear()
        else:
            graphs["in_process"] = compiled_graphs
    return graphs, reasons


def run_model(name: str, variant: str) -> dict[str, Any]:
    """A model entry (``model:NAME``): one training step, accounted like an operator's samples."""
    n_reports, counters_before = len(sandbox.reports()), _graph_counters()
    rec = {"op": name, "variant": variant, **models.run(name[len(models.PREFIX) :], BACKEND[variant])}
    graphs, reasons = _account(variant, n_reports, counters_before)
    rec["graphs"] = {k: v for k, v in graphs.items() if v}
    rec["reasons"] = dict(reasons)
    return rec


STOCK: StockRefusals | None = None


def main() -> int:
    global STOCK
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", required=True, choices=("sandbox", "inductor", "stock"))
    ap.add_argument("--ops", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--dtypes", default="")
    ap.add_argument("--max-samples", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    # Every sample of an op recompiles where its shapes or arguments differ: no limit may
    # send a graph to eager unseen.
    torch._dynamo.config.recompile_limit = 100000
    torch._dynamo.config.accumulated_recompile_limit = 1000000
    if args.variant == "stock":
        STOCK = StockRefusals()
    names = args.ops.split(",")
    table: dict[str, Any] = {}
    if any(not n.startswith(models.PREFIX) for n in names):
        # torch's OpInfo databases take seconds to load and need expecttest: a models-only slice skips them.
        from _coverage_cases import entries

        table = entries()
    dtypes = [d for d in args.dtypes.split(",") if d]
    with open(args.result, "a") as out:
        for name in names:
            print(f"START {name}", flush=True)
            if name.startswith(models.PREFIX):
                rec = run_model(name, args.variant)
            else:
                progress = args.result + ".progress"
                rec = run_entry(name, table[name], args.variant, dtypes, args.max_samples, args.device, progress)
            out.write(json.dumps(rec) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""How soon does a training job step, and how soon at compiled speed?

A training model (2 transformer blocks, AdamW) under five ways of compiling. Every
measurement runs in a fresh Python process (this script with ``--child``) on fresh,
empty ``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR``; variants alternate (ABCDE
ABCDE ...); medians are printed, ratios are against in-process Inductor's median.

Variants
  inductor        torch.compile(backend="inductor"), compiled in the user's process
  stock_async     the same with TORCHINDUCTOR_FX_COMPILE_MODE=async+subprocess (PyTorch's own
                  mode; it fails with the FX graph cache on, so the graph caches are off for it)
  sandbox         backend="sandbox", blocking, sandbox.warmup() at the program's start
  sandbox_2w      the same with 2 workers (forward and backward compile side by side)
  sandbox_async   backend="sandbox" with SANDBOX_ASYNC=1, sandbox.warmup() at the start
  sandbox_async_2w  the same with 2 workers (the backward compiles beside the forward)
  sandbox_prep    sandbox with SANDBOX_WARMUP_IMPORTS=prepare: warmup() also prepares the first cache
                  miss (imports, patterns, source hashes) in blocking mode (not in the default list)
  sandbox_gpujob, sandbox_async_gpujob  with SANDBOX_WORKER_GPU_WARMUP=job: the workers start CUDA,
                  Triton and the compile pool at their first GPU job, not when warmup() is called

Every process first "loads data" for ``--load-s`` seconds (a sleep: what a job does before
its first step, and the time sandbox.warmup() has to warm the workers up), then builds the
model. The clock starts just before torch.compile.

Measurements (seconds from the clock's start; CUDA synchronized at each step's end), each taken
from the event it names; one that never happened prints "not reached" and fails its target
  first step      the end of the first step (forward, backward, optimizer step)
  50 / 300 steps  the end of step 50 / 300
  compiled speed  when the last of the job's graphs began running compiled code: for the async
                  variants the swap itself, as recorded when it happened (the sandbox's reports'
                  ``switched_at``; PyTorch's async mode: the moment its output code switched, timed
                  in the child); for the blocking variants, whose graphs run compiled from their
                  first call, the end of the first step. Not reached while a graph still ran as is
                  when the process stopped stepping, or its compile failed
  step ms (compiled)  the median of the (last 50) steps that started after that moment

Steps: ``--steps auto`` (the default) runs 300 steps, and the async variants on until every graph
was swapped in plus ``--after-swap`` steps, at most ``--max-steps`` steps or ``--max-s`` seconds;
``--steps N`` runs exactly N steps (an async variant may then never reach compiled code).

Targets (printed with the medians; the exit status is 1 when one is not met or not reached)
  cpu:  sandbox_async first step <= 0.15x inductor's; sandbox (after warmup) first step <= 0.7x;
        sandbox_async at compiled speed no later than 1.1x inductor's first step; sandbox_async
        300 steps no worse than inductor's
  cuda: sandbox_async first step <= 0.25x inductor's; sandbox_async at compiled speed no later
        than inductor's first step (1.0x); sandbox (after warmup) first step <= 1.0x

Usage
  python bench/time_to_first_step.py                    # 3 repeats, all variants (~25 min on 2 cores)
  python bench/time_to_first_step.py --repeats 5 --out ttfs.json
  python bench/time_to_first_step.py --summarize ttfs.json   # the tables again, from a saved run
  python bench/time_to_first_step.py --quick            # 1 repeat, small model, auto steps: the script runs
  python bench/time_to_first_step.py --device cuda --repeats 2 --variants inductor,sandbox,sandbox_async
  python bench/time_to_first_step.py --quick --variants sandbox_async --profile-first-step   # where the first step goes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _paths import checkout_first  # bench/, the script's own folder, is first on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("inductor", "stock_async", "sandbox", "sandbox_2w", "sandbox_async", "sandbox_async_2w")
EXTRA = ("sandbox_prep", "sandbox_gpujob", "sandbox_async_gpujob")  # run only when named
BASELINE = "inductor"
ASYNC = tuple(v for v in VARIANTS + EXTRA if "async" in v)  # variants whose graphs run as is until a swap
MIN_STEPS = 300  # --steps auto: every variant runs at least this many steps
TAIL = 50  # the compiled step time: the median of this many steps after the swap (at most)
POINTS = (("first step", 1), ("50 steps", 50), ("300 steps", 300))
TARGETS = {  # per device: (variant, measurement, max ratio, which measurement of which variant)
    "cpu": (
        ("sandbox_async", "first step", 0.15, "first step", BASELINE),
        ("sandbox", "first step", 0.70, "first step", BASELINE),
        ("sandbox_async", "compiled speed", 1.10, "first step", BASELINE),
        ("sandbox_async", "300 steps", 1.00, "300 steps", BASELINE),
    ),
    "cuda": (
        ("sandbox_async", "first step", 0.25, "first step", BASELINE),
        ("sandbox_async", "compiled speed", 1.00, "first step", BASELINE),
        ("sandbox", "first step", 1.00, "first step", BASELINE),
        # Two workers compile the forward and the backward side by side: worth it only if clearly faster.
        ("sandbox_2w", "first step", 0.80, "first step", "sandbox"),
    ),
}


# --- the child: one process, one variant -------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    t_start = time.time()
    variant = spec["variant"]
    sandboxed = variant.startswith("sandbox")
    if sandboxed:
        import sandbox

        sandbox.warmup(workers=2 if variant.endswith("_2w") else 1)
    time.sleep(spec["load_s"])  # the job loads its data meanwhile

    import torch
    from torch import nn

    from sandbox.zoo import TransformerBlock

    device = spec["device"]
    torch.manual_seed(0)
    d = spec["d"]
    model = nn.Sequential(TransformerBlock(d, 4), TransformerBlock(d, 4)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(spec["batch"], spec["seq"], d, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    options = {"workers": 2} if variant.endswith("_2w") else None
    stock_swaps: list[float] = []
    stock_pending = _watch_stock_swaps(stock_swaps) if variant == "stock_async" else None

    def pending() -> int:
        """Graphs that still run as is (0 for the blocking variants)."""
        if variant.startswith("sandbox_async"):
            return sandbox.pending()
        return stock_pending() if stock_pending is not None else 0

    auto = spec["steps"] == "auto"
    cap = spec["max_steps"] if auto else spec["steps"]
    profiler = _first_step_profiler() if spec.get("profile_first_step") else None
    t0 = time.time()
    fn = torch.compile(model, backend="sandbox" if sandboxed else "inductor", options=options)
    ends: list[float] = []
    all_swapped_at = None  # the step after which no graph ran as is
    for _ in range(cap):
        opt.zero_grad(set_to_none=True)
        loss = fn(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        sync()
        ends.append(time.time() - t0)
        if profiler is not None and len(ends) == 1:
            profiler.disable()
        if not auto or len(ends) < MIN_STEPS:
            continue
        if variant not in ASYNC:
            break  # compiled from the first call: nothing to wait for
        if all_swapped_at is None and pending() == 0:
            all_swapped_at = len(ends)
        if all_swapped_at is not None and len(ends) >= all_swapped_at + spec["after_swap"]:
            break
        if ends[-1] > spec["max_s"]:
            break
    out: dict[str, Any] = {
        "t_start": t_start,
        "t0": t0,
        "ends": ends,
        "pending_at_end": pending(),
        "loss_last": float(loss.item()),
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else None,
    }
    if variant == "stock_async":
        out["swaps_s"] = [t - t0 for t in stock_swaps]
    if profiler is not None:
        out["first_step_profile"] = _profile_text(profiler)
    if sandboxed:
        out["reports"] = [
            {k: r.to_dict()[k] for k in ("graph_kind", "outcome", "background", "eager_calls", "background_s")}
            | {
                "switched_s": r.switched_at - t0 if r.switched_at else None,
                "ready_s": r.ready_at - t0 if r.ready_at else None,
                "started_s": r.started_at - t0,
                "load_s": sum(st.end - st.start for st in r.stages if st.name == "load"),
            }
            for r in sandbox.reports()
        ]
        out["workers"] = [
            {k: w.get(k) for k in ("pid", "jobs", "warm_up_s", "start_to_ready_s")} for w in sandbox.workers()
        ]
    return out


def _first_step_profiler() -> Any:
    """cProfile from ``torch.compile`` to the first step's end: where the first step's seconds go
    (up to Python 3.11 the user's thread alone, background threads' GIL holds showing as waits;
    from 3.12 the profiler counts every thread's calls)."""
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _profile_text(profiler: Any, top: int = 80) -> str:
    """The calls that took longest with what they called, then those that took longest themselves."""
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top // 4)
    return buf.getvalue()


def _watch_stock_swaps(swaps: list[float]) -> Any:
    """PyTorch's async mode records no swap time: time each output code's switch to the compiled
    graph (its private ``_AsyncOutputCode``, torch 2.11-2.13); returns ``pending()``."""
    # Only this variant touches PyTorch's async mode.
    from torch._inductor.compile_fx_async import _AsyncFxCompile, _AsyncOutputCode

    switch = _AsyncOutputCode._switch_to_compiled_fn

    def timed(self: Any, args: Any) -> Any:
        out = switch(self, args)
        swaps.append(time.time())
        return out

    _AsyncOutputCode._switch_to_compiled_fn = timed
    return lambda: _AsyncFxCompile._stat_bg_started - len(swaps)


# --- the parent ------------------------------------------------------------------------------------


def child_env(variant: str, cache_root: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in (
        "TORCHINDUCTOR_FX_COMPILE_MODE",
        "SANDBOX_ASYNC",
        "SANDBOX_WORKERS",
        "SANDBOX_WARMUP_IMPORTS",
        "SANDBOX_WORKER_GPU_WARMUP",
        "TORCHINDUCTOR_FX_GRAPH_CACHE",
        "TORCHINDUCTOR_AUTOGRAD_CACHE",
    ):
        env.pop(k, None)
    env["PYTHONPATH"] = checkout_first(env.get("PYTHONPATH"))
    env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_root, "inductor")
    env["TRITON_CACHE_DIR"] = os.path.join(cache_root, "triton")
    env["SANDBOX_STORE"] = "off"
    if variant == "stock_async":
        env["TORCHINDUCTOR_FX_COMPILE_MODE"] = "async+subprocess"
        env["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
        env["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"
    if variant.startswith("sandbox_async"):
        env["SANDBOX_ASYNC"] = "1"
    if variant == "sandbox_prep":
        env["SANDBOX_WARMUP_IMPORTS"] = "prepare"
    if variant.endswith("_gpujob"):
        env["SANDBOX_WORKER_GPU_WARMUP"] = "job"
    return env


def run_child(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="ttfs-")
    result_path = os.path.join(root, "result.json")
    load = os.getloadavg()[0]
    t = time.time()
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec), "--result", result_path]
    rec: dict[str, Any] = {"ok": False, "loadavg_1m_before": load}
    try:
        proc = subprocess.run(
            cmd, env=child_env(spec["variant"], root), capture_output=True, text=True, timeout=timeout_s
        )
        rec["rc"], rec["stderr_tail"] = proc.returncode, proc.stderr[-3000:]
        if proc.returncode == 0 and os.path.exists(result_path):
            with open(result_path) as f:
                rec["result"] = json.load(f)
            rec["ok"] = True
    except subprocess.TimeoutExpired:
        rec["error"] = f"timed out after {timeout_s:.0f} s"
    rec["process_s"] = time.time() - t
    rec["loadavg_1m_after"] = os.getloadavg()[0]
    shutil.rmtree(root, ignore_errors=True)
    return rec


def compiled_from(variant: str, res: dict[str, Any]) -> float | None:
    """Seconds from the clock's start until the last graph began running compiled code, from
    the event itself; None when it never happened."""
    ends = res["ends"]
    reports = res.get("reports") or []
    if not ends or res.get("pending_at_end") or any(r["outcome"] == "failed" for r in reports):
        return None
    if variant.startswith("sandbox_async"):
        swapped = [r["switched_s"] for r in reports if r["background"] == "async"]
        return max(swapped) if swapped else ends[0]  # no graph deferred: all came from the caches
    if variant == "stock_async":
        swaps = res.get("swaps_s") or []
        return max(swaps) if swaps else None
    return ends[0]  # blocking: every graph was compiled before it first ran


def measurements(variant: str, res: dict[str, Any]) -> dict[str, float | None]:
    ends = res["ends"]
    out: dict[str, float | None] = {name: (ends[n - 1] if len(ends) >= n else None) for name, n in POINTS}
    at = compiled_from(variant, res)
    out["compiled speed"] = at
    after = [b - a for a, b in zip([0.0, *ends], ends) if at is not None and a >= at]
    out["step ms (compiled)"] = statistics.median(after[-TAIL:]) * 1000 if after else None
    return out


def median(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--steps",
        default="auto",
        help=f"N (exactly N steps) or auto (default: {MIN_STEPS} steps, async variants on until every graph "
        "was swapped in plus --after-swap steps)",
    )
    ap.add_argument("--after-swap", type=int, default=200, help="--steps auto: steps run after the last swap")
    ap.add_argument("--max-steps", type=int, default=50_000, help="--steps auto: at most this many steps")
    ap.add_argument("--max-s", type=float, default=240.0, help="--steps auto: stop stepping after this many seconds")
    ap.add_argument("--load-s", type=float, default=8.0, help="seconds the job 'loads data' before building the model")
    ap.add_argument("--d", type=int, default=128, help="model width")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--quick", action="store_true", help="1 repeat, d=32, no data loading: the script runs")
    ap.add_argument("--timeout-s", type=float, default=900.0)
    ap.add_argument("--out", help="write every raw measurement here (JSON)")
    ap.add_argument(
        "--profile-first-step",
        action="store_true",
        help="cProfile the first step of every process and print where it went",
    )
    ap.add_argument("--summarize", metavar="JSON", help="print the tables of an earlier --out file, run nothing")
    args = ap.parse_args()

    if args.child:
        out = child(json.loads(args.child))
        with open(args.result, "w") as f:
            json.dump(out, f)
        return 0

    if args.summarize:
        with open(args.summarize) as f:
            saved = json.load(f)
        raw = saved["raw"]
        spec = saved["spec"]
        return summarize(raw, list(raw), spec, None)
    if args.steps != "auto" and not args.steps.isdigit():
        ap.error("--steps takes a number of steps or auto")
    if args.quick:
        args.repeats, args.d, args.load_s = 1, 32, 0.0
    device = args.device
    if device is None:
        probe = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True
        )
        device = "cuda" if probe.stdout.strip() == "True" else "cpu"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS + EXTRA]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS + EXTRA)}")
    spec = {
        "device": device,
        "steps": args.steps if args.steps == "auto" else int(args.steps),
        "after_swap": args.after_swap,
        "max_steps": args.max_steps,
        "max_s": args.max_s,
        "load_s": args.load_s,
        "d": args.d,
        "batch": args.batch,
        "seq": args.seq,
        "cpus": os.cpu_count(),  # of the machine that ran it: --summarize may run elsewhere
        "profile_first_step": args.profile_first_step,
    }
    steps = (
        f"auto steps ({MIN_STEPS}, async: until swapped + {args.after_swap}, at most {args.max_steps} or "
        f"{args.max_s:.0f} s)"
        if args.steps == "auto"
        else f"{args.steps} steps"
    )
    print(
        f"# time to first step: 2 transformer blocks d={args.d}, AdamW, batch {args.batch}x{args.seq}, "
        f"{steps}, device {device}, {os.cpu_count()} CPUs, {args.repeats} repeat(s), load {args.load_s:.0f} s",
        flush=True,
    )
    raw: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            rec = run_child(dict(spec, variant=v), args.timeout_s)
            raw[v].append(rec)
            if rec["ok"]:
                res = rec["result"]
                m = measurements(v, res)
                print(
                    f"  repeat {rep + 1} {v:16s} first step {fmt(m['first step'])} s, {swap_line(v, res)}, "
                    f"{len(res['ends'])} steps {fmt(res['ends'][-1])} s "
                    f"(load avg {rec['loadavg_1m_before']:.1f} -> {rec['loadavg_1m_after']:.1f})",
                    flush=True,
                )
                if res.get("first_step_profile"):
                    print("\n".join("    | " + ln for ln in res["first_step_profile"].splitlines()), flush=True)
            else:
                print(
                    f"  repeat {rep + 1} {v:14s} FAILED ({rec.get('error') or 'rc ' + str(rec.get('rc'))}):\n"
                    + "\n".join("    | " + ln for ln in rec.get("stderr_tail", "").splitlines()[-15:]),
                    flush=True,
                )

    return summarize(raw, variants, spec, args.out)


def swap_line(variant: str, res: dict[str, Any]) -> str:
    """When each async graph's result was back, and when it took over (or that it never did)."""
    at = compiled_from(variant, res)
    if variant not in ASYNC:
        return f"compiled from the first step ({fmt(at)} s)" if at is not None else "compiled speed not reached"
    graphs = [r for r in res.get("reports") or [] if r["background"]]
    back = ", ".join(
        f"{r['graph_kind']} back {fmt(r['ready_s'])} s (load {fmt(r['load_s'])} s) swapped {fmt(r['switched_s'])} s"
        for r in graphs
    )
    head = (
        f"compiled speed at {fmt(at)} s"
        if at is not None
        else f"compiled speed not reached ({res['pending_at_end']} graph(s) still as is)"
    )
    return head + (f" [{back}]" if back else "")


def summarize(
    raw: dict[str, list[dict[str, Any]]],
    variants: list[str],
    spec: dict[str, Any],
    out_path: str | None,
) -> int:
    steps, device = spec["steps"], spec["device"]
    least = MIN_STEPS if steps == "auto" else int(steps)
    names = [n for n, k in POINTS if k <= least] + ["compiled speed", "step ms (compiled)"]
    med: dict[str, dict[str, Any]] = {}
    missed: dict[str, dict[str, int]] = {}  # runs whose event never happened, per measurement
    for v in variants:
        ok = [measurements(v, r["result"]) for r in raw[v] if r["ok"]]
        missed[v] = {n: sum(m[n] is None for m in ok) for n in names}
        # One run without the event: the figure is not reached, never a median of the others.
        med[v] = {n: (median([m[n] for m in ok]) if ok and not missed[v][n] else None) for n in names}
        med[v]["runs ok"] = len(ok)
    base = med.get(BASELINE, {})
    card = next((r["result"].get("device_name") for rs in raw.values() for r in rs if r["ok"]), None)
    print(f"\n## medians ({device}{', ' + card if card else ''}); ratio: against {BASELINE} (same measurement)\n")
    print("| variant | " + " | ".join(f"{n} | ratio" for n in names) + " | runs ok |")
    print("|---|" + "---|---|" * len(names) + "---|")
    for v in variants:
        cells = []
        for n in names:
            if missed[v][n]:
                cells += [f"not reached ({missed[v][n]}/{med[v]['runs ok']} runs)", ""]
                continue
            r = med[v][n] / base[n] if base.get(n) and med[v][n] is not None else None
            cells += [fmt(med[v][n]), fmt(r) + ("x" if r is not None else "")]
        print(f"| {v} | " + " | ".join(cells) + f" | {med[v]['runs ok']}/{len(raw[v])} |")

    failed = not all(med[v]["runs ok"] == len(raw[v]) for v in variants)
    print(f"\n## targets ({'cuda' if device.startswith('cuda') else 'cpu'})\n")
    for v, n, limit, against, baseline in TARGETS["cuda" if device.startswith("cuda") else "cpu"]:
        if v not in med:
            continue
        base = med.get(baseline, {})
        what = f"- {v} {n} / {baseline} {against}"
        if not med[v]["runs ok"]:
            print(f"{what}: no run finished (target <= {limit:.2f}x): NOT met")
            failed = True
        elif n not in names:
            print(f"{what}: not reached (every run stopped before it) (target <= {limit:.2f}x): NOT met")
            failed = True
        elif med[v][n] is None:
            print(
                f"{what}: not reached in {missed[v][n]} of {med[v]['runs ok']} runs (target <= {limit:.2f}x): NOT met"
            )
            failed = True
        elif not base.get(against):
            print(f"{what}: {med[v][n]:.2f} s, no {baseline} {against} to compare (target <= {limit:.2f}x): not judged")
        else:
            r = med[v][n] / base[against]
            print(f"{what}: {r:.2f}x (target <= {limit:.2f}x): {'met' if r <= limit else 'NOT met'}")
            failed |= r > limit
    loads = [r["loadavg_1m_before"] for rs in raw.values() for r in rs]
    print(
        f"\nload average (1 min) before each run: min {min(loads):.1f}, median {statistics.median(loads):.1f}, "
        f"max {max(loads):.1f} on {spec.get('cpus', '?')} CPUs"
    )
    if out_path:
        with open(out_path, "w") as f:
            json.dump({"spec": spec, "medians": med, "raw": raw}, f, indent=1, default=repr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

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

Every process first "loads data" for ``--load-s`` seconds (a sleep: what a job does before
its first step, and the time sandbox.warmup() has to warm the workers up), then builds the
model. The clock starts just before torch.compile.

Measurements (seconds from the clock's start; CUDA synchronized at each step's end)
  first step      the end of the first step (forward, backward, optimizer step)
  50 / 300 steps  the end of step 50 / 300
  compiled speed  the moment from which steps run at compiled speed: the start of the first step
                  from which every 10 steps in a row have their median within 1.5x of the run's
                  median step over its last 50 steps

Targets (printed with the medians): sandbox_async first step <= 0.15x inductor; sandbox (after
warmup) first step <= 0.7x; sandbox_async at compiled speed no later than 1.1x inductor's first
step; sandbox_async 300 steps no worse than inductor's.

Usage
  python bench/time_to_first_step.py                    # 3 repeats, all variants (~25 min on 2 cores)
  python bench/time_to_first_step.py --repeats 5 --out ttfs.json
  python bench/time_to_first_step.py --summarize ttfs.json   # the tables again, from a saved run
  python bench/time_to_first_step.py --quick            # 1 repeat, small model, 20 steps: the script runs
  python bench/time_to_first_step.py --device cuda      # default: cuda when available
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VARIANTS = ("inductor", "stock_async", "sandbox", "sandbox_2w", "sandbox_async")
BASELINE = "inductor"
SLOW = 1.5  # steps slower than this times the run's compiled-speed median are not at compiled speed
WINDOW = 10  # ... judged by the median of this many steps in a row
POINTS = (("first step", 1), ("50 steps", 50), ("300 steps", 300))
TARGETS = (  # (variant, measurement, max ratio, against which inductor measurement)
    ("sandbox_async", "first step", 0.15, "first step"),
    ("sandbox", "first step", 0.70, "first step"),
    ("sandbox_async", "compiled speed", 1.10, "first step"),
    ("sandbox_async", "300 steps", 1.00, "300 steps"),
)


# --- the child: one process, one variant -------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    t_start = time.time()
    variant = spec["variant"]
    sandboxed = variant.startswith("sandbox")
    if sandboxed:
        import sandbox

        sandbox.warmup(workers=2 if variant == "sandbox_2w" else 1)
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
    options = {"workers": 2} if variant == "sandbox_2w" else None

    t0 = time.time()
    fn = torch.compile(model, backend="sandbox" if sandboxed else "inductor", options=options)
    ends = []
    for _ in range(spec["steps"]):
        opt.zero_grad(set_to_none=True)
        loss = fn(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        sync()
        ends.append(time.time() - t0)
    out: dict[str, Any] = {
        "t_start": t_start,
        "t0": t0,
        "ends": ends,
        "loss_last": float(loss.item()),
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else None,
    }
    if sandboxed:
        import sandbox

        out["reports"] = [
            {k: r.to_dict()[k] for k in ("graph_kind", "outcome", "background", "eager_calls", "background_s")}
            | {"switched_s": r.switched_at - t0 if r.switched_at else None, "started_s": r.started_at - t0}
            for r in sandbox.reports()
        ]
        out["workers"] = [
            {k: w.get(k) for k in ("pid", "jobs", "warm_up_s", "start_to_ready_s")} for w in sandbox.workers()
        ]
    return out


# --- the parent ------------------------------------------------------------------------------------


def child_env(variant: str, cache_root: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in (
        "TORCHINDUCTOR_FX_COMPILE_MODE",
        "SANDBOX_ASYNC",
        "SANDBOX_WORKERS",
        "TORCHINDUCTOR_FX_GRAPH_CACHE",
        "TORCHINDUCTOR_AUTOGRAD_CACHE",
    ):
        env.pop(k, None)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if REPO not in parts:
        env["PYTHONPATH"] = os.pathsep.join([REPO, *parts])
    env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_root, "inductor")
    env["TRITON_CACHE_DIR"] = os.path.join(cache_root, "triton")
    env["SANDBOX_STORE"] = "off"
    if variant == "stock_async":
        env["TORCHINDUCTOR_FX_COMPILE_MODE"] = "async+subprocess"
        env["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
        env["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"
    if variant == "sandbox_async":
        env["SANDBOX_ASYNC"] = "1"
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


def measurements(ends: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, n in POINTS:
        out[name] = ends[n - 1] if len(ends) >= n else None
    steps = [b - a for a, b in zip([0.0, *ends], ends)]
    tail = steps[-50:] if len(steps) >= 60 else steps[len(steps) // 2 :]
    fast = statistics.median(tail) if tail else None
    # Robust to a single slow step (a busy machine): the first step from which every window of
    # WINDOW steps has its median within SLOW x the compiled median.
    start = None
    if fast is not None:
        # Only whole windows: a slow step among the run's last few says nothing about when it got fast.
        start = max(0, len(steps) - WINDOW + 1)
        for i in range(len(steps) - WINDOW, -1, -1):
            if statistics.median(steps[i : i + WINDOW]) > SLOW * fast:
                break
            start = i
        while start is not None and start < len(steps) and steps[start] > SLOW * fast:
            start += 1  # the window's first steps may still be the last slow ones
    out["compiled speed"] = (ends[start - 1] if start else 0.0) if start is not None else None
    out["step ms (compiled)"] = fast * 1000 if fast is not None else None
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
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--load-s", type=float, default=8.0, help="seconds the job 'loads data' before building the model")
    ap.add_argument("--d", type=int, default=128, help="model width")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--quick", action="store_true", help="1 repeat, d=32, 20 steps, no data loading: the script runs")
    ap.add_argument("--timeout-s", type=float, default=900.0)
    ap.add_argument("--out", help="write every raw measurement here (JSON)")
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
        return summarize(raw, list(raw), spec["steps"], spec["device"], None)
    if args.quick:
        args.repeats, args.d, args.steps, args.load_s = 1, 32, 20, 0.0
    device = args.device
    if device is None:
        probe = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True
        )
        device = "cuda" if probe.stdout.strip() == "True" else "cpu"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    spec = {
        "device": device,
        "steps": args.steps,
        "load_s": args.load_s,
        "d": args.d,
        "batch": args.batch,
        "seq": args.seq,
    }
    print(
        f"# time to first step: 2 transformer blocks d={args.d}, AdamW, batch {args.batch}x{args.seq}, "
        f"{args.steps} steps, device {device}, {os.cpu_count()} CPUs, {args.repeats} repeat(s), load "
        f"{args.load_s:.0f} s",
        flush=True,
    )
    raw: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            rec = run_child(dict(spec, variant=v), args.timeout_s)
            raw[v].append(rec)
            if rec["ok"]:
                m = measurements(rec["result"]["ends"])
                print(
                    f"  repeat {rep + 1} {v:14s} first step {fmt(m['first step'])} s, compiled speed at "
                    f"{fmt(m['compiled speed'])} s, {args.steps} steps {fmt(rec['result']['ends'][-1])} s "
                    f"(load avg {rec['loadavg_1m_before']:.1f} -> {rec['loadavg_1m_after']:.1f})",
                    flush=True,
                )
            else:
                print(
                    f"  repeat {rep + 1} {v:14s} FAILED ({rec.get('error') or 'rc ' + str(rec.get('rc'))}):\n"
                    + "\n".join("    | " + ln for ln in rec.get("stderr_tail", "").splitlines()[-15:]),
                    flush=True,
                )

    return summarize(raw, variants, args.steps, device, args.out, spec)


def summarize(
    raw: dict[str, list[dict[str, Any]]],
    variants: list[str],
    steps: int,
    device: str,
    out_path: str | None,
    spec: dict[str, Any] | None = None,
) -> int:
    names = [n for n, k in POINTS if k <= steps] + ["compiled speed", "step ms (compiled)"]
    med: dict[str, dict[str, float | None]] = {}
    for v in variants:
        ok = [measurements(r["result"]["ends"]) for r in raw[v] if r["ok"]]
        med[v] = {n: median([m[n] for m in ok]) for n in names}
        med[v]["runs ok"] = len(ok)
    base = med.get(BASELINE, {})
    card = next((r["result"].get("device_name") for rs in raw.values() for r in rs if r["ok"]), None)
    print(f"\n## medians ({device}{', ' + card if card else ''}); ratio: against {BASELINE} (same measurement)\n")
    print("| variant | " + " | ".join(f"{n} | ratio" for n in names) + " | runs ok |")
    print("|---|" + "---|---|" * len(names) + "---|")
    for v in variants:
        cells = []
        for n in names:
            r = med[v][n] / base[n] if base.get(n) and med[v][n] is not None else None
            cells += [fmt(med[v][n]), fmt(r) + ("x" if r is not None else "")]
        print(f"| {v} | " + " | ".join(cells) + f" | {med[v]['runs ok']}/{len(raw[v])} |")

    if BASELINE in med:
        print("\n## targets\n")
        for v, n, limit, against in TARGETS:
            if v not in med or med[v].get(n) is None or not base.get(against):
                continue
            r = med[v][n] / base[against]
            print(
                f"- {v} {n} / {BASELINE} {against}: {r:.2f}x (target <= {limit:.2f}x): "
                f"{'met' if r <= limit else 'NOT met'}"
            )
    loads = [r["loadavg_1m_before"] for rs in raw.values() for r in rs]
    print(
        f"\nload average (1 min) before each run: min {min(loads):.1f}, median {statistics.median(loads):.1f}, "
        f"max {max(loads):.1f} on {os.cpu_count()} CPUs"
    )
    if out_path:
        with open(out_path, "w") as f:
            json.dump({"spec": spec, "medians": med, "raw": raw}, f, indent=1, default=repr)
    return 0 if all(med[v]["runs ok"] for v in variants) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""What does profiling a chosen step cost (option ``profile_steps``, issue 23)?

Each measurement is a fresh Python process that compiles a LayerNorm + GELU MLP through
``backend="sandbox"`` and times every training step (forward and backward; on CUDA each step is
waited for). Two variants, alternating (off on, on off, ...), medians over ``--repeats``:

  off   no option: the compiled graphs run as they always do
  on    ``profile_steps=P``: call P of each graph runs under ``torch.profiler``; the calls before
        it pass through the counting wrapper, the calls after it do not (the wrapper is gone)

Printed:
  profiled step      step P against the median of the same process's other steps (option on):
                     what the one profiled step costs (the profiler, the attribution, the report
                     published again)
  before P, on/off   unprofiled steps while the wrapper counts calls, option on against off
  after P, on/off    unprofiled steps once the wrapper is gone, option on against off
  wrapper            within each process, steps before P against steps after P, option on, divided
                     by the same ratio of the option-off process: the counting wrapper's own cost,
                     free of the differences between processes

The processes share one Inductor cache folder (the first compiles, the others load) and write to a
store of their own in it, never the user's.

Usage
  python bench/profile_overhead.py                  # 3 repeats, 200 steps, step 100 profiled
  python bench/profile_overhead.py --quick          # 1 repeat, 60 steps, step 30 profiled
  python bench/profile_overhead.py --device cuda --width 1024 --repeats 5 --out profile.json
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

HERE = os.path.abspath(__file__)
MARK = "@@PROFILE-OVERHEAD@@"


def child(args: argparse.Namespace) -> None:
    import torch

    import sandbox

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wide = 2 * args.width
    model = torch.nn.Sequential(
        torch.nn.Linear(args.width, wide), torch.nn.LayerNorm(wide), torch.nn.GELU(), torch.nn.Linear(wide, args.width)
    ).to(args.device)
    x = torch.randn(args.batch, args.width, device=args.device)
    options: dict[str, Any] = {"run_name": f"profile-overhead-{args.child}"}
    if args.child == "on":
        options["profile_steps"] = args.profile_at
    compiled = torch.compile(model, backend="sandbox", options=options)
    cuda = args.device.startswith("cuda")
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        compiled(x).sum().backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    sandbox.flush()
    reports = sandbox.reports()
    profiled = [r.runtime for r in reports if r.runtime]
    print(MARK + json.dumps({"times": times, "profiled": len(profiled), "graphs": len(reports)}), flush=True)


def run_child(variant: str, args: argparse.Namespace, cache: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(TORCHINDUCTOR_CACHE_DIR=cache, SANDBOX_STORE=os.path.join(cache, "runs.db"))
    env.pop("SANDBOX_PROFILE_STEPS", None)
    command = [
        sys.executable,
        HERE,
        "--child",
        variant,
        "--steps",
        str(args.steps),
        "--profile-at",
        str(args.profile_at),
    ]
    command += ["--width", str(args.width), "--batch", str(args.batch), "--device", args.device]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{variant} child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(MARK) :])


def summarise(off: dict[str, Any], on: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    p = args.profile_at - 1  # index of the profiled step
    first = min(args.warmup, p)
    before = slice(first, p)
    after = slice(p + 1, args.steps)
    on_others = on["times"][first:p] + on["times"][p + 1 :]
    med = statistics.median
    return {
        "profiled_ms": on["times"][p] * 1e3,
        "other_steps_ms": med(on_others) * 1e3,
        "profiled_extra_ms": (on["times"][p] - med(on_others)) * 1e3,
        "profiled_ratio": on["times"][p] / med(on_others),
        "before_off_ms": med(off["times"][before]) * 1e3,
        "before_on_ms": med(on["times"][before]) * 1e3,
        "before_ratio": med(on["times"][before]) / med(off["times"][before]),
        "after_off_ms": med(off["times"][after]) * 1e3,
        "after_on_ms": med(on["times"][after]) * 1e3,
        "after_ratio": med(on["times"][after]) / med(off["times"][after]),
        # The wrapper in one process: before P (counting) against after P (gone), option on, divided
        # by the same ratio without the option (what the steps' position alone does).
        "wrapper_ratio": (med(on["times"][before]) / med(on["times"][after]))
        / (med(off["times"][before]) / med(off["times"][after])),
        "profiled_graphs": on["profiled"],
        "graphs": on["graphs"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--profile-at", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the medians at the start")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in each process: with more than one, a step on a shared machine waits for a "
        "descheduled thread at every parallel region, and its time says more about the machine than the step",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.repeats, args.steps, args.profile_at = 1, 60, 30
    if not 1 < args.profile_at < args.steps:
        raise SystemExit("--profile-at must fall inside the steps, after the first")
    cache = tempfile.mkdtemp(prefix="profile-overhead-")
    rows = []
    try:
        run_child("off", args, cache)  # compiles once: every measured process loads from the caches
        for repeat in range(args.repeats):
            order = ("off", "on") if repeat % 2 == 0 else ("on", "off")
            got = {variant: run_child(variant, args, cache) for variant in order}
            rows.append(summarise(got["off"], got["on"], args))
            r = rows[-1]
            print(
                f"repeat {repeat + 1} ({' '.join(order)}): profiled step {r['profiled_ms']:.2f} ms vs "
                f"{r['other_steps_ms']:.2f} ms; before P on/off {r['before_ratio']:.3f}; "
                f"after P on/off {r['after_ratio']:.3f}",
                flush=True,
            )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    med = statistics.median
    result = {
        "device": args.device,
        "steps": args.steps,
        "profile_at": args.profile_at,
        "repeats": args.repeats,
        "rows": rows,
        "median": {key: med(r[key] for r in rows) for key in rows[0] if key not in ("graphs",)},
    }
    m = result["median"]
    print(
        f"\nmedians over {args.repeats} repeat(s), {args.steps} steps, step {args.profile_at} profiled ({args.device}):"
    )
    print(
        f"  profiled step        {m['profiled_ms']:8.2f} ms  (other steps {m['other_steps_ms']:.2f} ms: "
        f"+{m['profiled_extra_ms']:.2f} ms, {m['profiled_ratio']:.2f}x; graphs profiled {m['profiled_graphs']:.0f})"
    )
    print(f"  before P, on / off   {m['before_on_ms']:8.3f} / {m['before_off_ms']:.3f} ms  = {m['before_ratio']:.3f}")
    print(f"  after P,  on / off   {m['after_on_ms']:8.3f} / {m['after_off_ms']:.3f} ms  = {m['after_ratio']:.3f}")
    print(f"  wrapper, in-process  (on before/after P) / (off before/after P) = {m['wrapper_ratio']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Where does a worker's start go? Each measurement in a fresh process, medians of --repeats.

  interpreter   python -c pass
  import_torch  python -c "import torch"
  phases        the worker's own warm-up steps, one after another in a fresh process, timed
                each (import torch, CUDA init, Inductor's async_compile, the rest of Inductor, Triton
                imports, compile pool started, compile pool ready)
  worker        sandbox.warmup(wait=True) in a fresh process: spawn to ready as the pool sees
                it, and the phases the worker reports

Usage: python bench/worker_start.py [--repeats 3] [--out start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PHASES = r"""
import json, os, time, sys, threading
t = {"main": time.time()}
import torch
t["import_torch"] = time.time()
cuda = torch.cuda.is_available()
if cuda:
    torch.cuda.init()
    torch.cuda.get_device_properties(0)
t["cuda_init"] = time.time()
import torch._inductor.async_compile
t["import_async_compile"] = time.time()
import torch._inductor.compile_fx, torch._inductor.codegen.cpp, torch._inductor.scheduler
import torch._inductor.lowering, torch._inductor.graph, torch._inductor.codegen.wrapper
import torch._inductor.fx_passes.post_grad
t["import_inductor"] = time.time()
if cuda:
    import torch._inductor.codegen.triton, torch._inductor.runtime.triton_heuristics
t["import_triton"] = time.time()
if cuda:
    from torch._inductor.async_compile import AsyncCompile
    AsyncCompile.warm_pool()
    AsyncCompile.process_pool()
    AsyncCompile.use_process_pool()
    t["pool_started"] = time.time()
    while not AsyncCompile.use_process_pool() and time.time() - t["pool_started"] < 60:
        time.sleep(0.01)
    t["pool_ready"] = time.time()
print(json.dumps(t))
"""

WORKER = r"""
import json, time
t0 = time.time()
import sandbox
from sandbox import runtime
sandbox.warmup(wait=True, timeout=300)
t1 = time.time()
print(json.dumps({"warmup_wait_s": t1 - t0, "workers": sandbox.workers()}))
"""


def run(code: str, env: dict[str, str]) -> tuple[float, str]:
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return time.time() - t, out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows: dict[str, list] = {"interpreter": [], "import_torch": [], "phases": [], "worker": []}
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(
                os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "i"), TRITON_CACHE_DIR=os.path.join(cache, "t")
            )
            rows["interpreter"].append(run("pass", env)[0])
            rows["import_torch"].append(run("import torch", env)[0])
            wall, line = run(PHASES, env)
            t = json.loads(line)
            keys = list(t)
            rows["phases"].append({"wall_s": wall, **{f"{b}_s": t[b] - t[a] for a, b in zip(keys, keys[1:])}})
        with tempfile.TemporaryDirectory() as cache:
            env = dict(
                os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "i"), TRITON_CACHE_DIR=os.path.join(cache, "t")
            )
            wall, line = run(WORKER, env)
            rows["worker"].append({"wall_s": wall, **json.loads(line)})
        print(f"repeat {r + 1}: {json.dumps({k: v[-1] for k, v in rows.items()})}", flush=True)
    med = statistics.median
    print(f"interpreter {med(rows['interpreter']):.2f} s, python -c 'import torch' {med(rows['import_torch']):.2f} s")
    for key in rows["phases"][0]:
        print(f"  phases {key:<18} {med([p[key] for p in rows['phases']]):.2f} s")
    w = rows["worker"]
    print(
        f"  sandbox.warmup(wait=True) {med([x['warmup_wait_s'] for x in w]):.2f} s; "
        f"worker start_to_ready {med([x['workers'][0]['start_to_ready_s'] for x in w]):.2f} s"
    )
    for key in w[0]["workers"][0].get("warm_up_phases") or {}:
        print(f"  worker phase {key:<22} {med([x['workers'][0]['warm_up_phases'][key] for x in w]):.2f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

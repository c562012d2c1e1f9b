#!/usr/bin/env python
"""The GPU checks, in one entry script (a CUDA machine; written against torch 2.11 +
Triton 3.6, the GPU machine's stack).

    python tests/gpu/run.py --out DIR          # every check; exit 1 if any fails
    python tests/gpu/run.py --only zoo,store   # some of them

Each scenario runs in a fresh process (the worker pool and dynamo's caches are
process-wide) on fresh cache directories, and prints one JSON line; this driver
checks what each returned and prints one PASS/FAIL line per check, then a JSON
summary (also written to DIR/gpu_checks.json).

Scenarios
  zoo       the model zoo on CUDA: outputs, losses, gradients equal eager's; every Triton
            kernel of every isolated graph has its report fields filled (launch configs,
            registers, spills, shared memory, compile time, autotune cache state, the
            config chosen at the first run), also in the stored copy; max-autotune records
            its template/extern choices with timings; no Triton compile pool and no CUDA
            context of the sandbox's making in the user's process, which prepared Triton for
            the first load while the worker compiled and ran no CPU-ISA probe; the worker
            initialised the CUDA driver beside its `import torch`
  cpu_graph a CPU graph, then a GPU graph, through one worker: the CPU graph starts no CUDA
            and no Triton compile pool in the worker (its C++ kernels compile on Inductor's
            threads); the GPU graph starts them (SANDBOX_WORKER_GPU_WARMUP=job)
  warm_gpu  sandbox.warmup() has the worker start its compile pool before any job; the GPU
            graph after it matches eager
  store     the same model compiled twice into one store (default mode, then
            mode="max-autotune-no-cudagraphs"), call 3 of each graph profiled (profile_steps):
            `sandbox diff` shows the kernel differences; every launched kernel has a runtime,
            their sum within 10% of the profiled call's device time; the store is left in
            DIR/gpu_store.sqlite (tests/data keeps a copy). A copy of it gets a third run with a
            batch WIDE_BATCH times as large (DIR/gpu_runtime_store.sqlite): its kernels run slower, and the
            verdict of `sandbox diff` against the default run names one first
  coverage  bench/coverage.py --device cuda (the CI subset, or --coverage "--shard i/n"): every
            graph through the sandbox crosses to a worker or has an allowed reason; no sample
            fails or mismatches through the sandbox that passes in in-process Inductor; the
            sweep's JSON is left in DIR/coverage_cuda.json
  failures  a Triton compile that hangs (past timeout_s) and one whose compiler crashes
            cost one graph each (eager fallback, one warning); the next compile succeeds
            on a fresh worker; the user's CUDA tensors and allocator are untouched
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MARK = "@@GPU-CHECK@@"
ZOO = ["mlp", "convnet", "transformer", "graph_breaks", "dynamic", "inplace", "max_autotune"]
WIDE_BATCH = 2048  # the store check's third run: its batch, as a multiple of the first two runs'
TOL = 1e-3  # fp32 on GPU with TF32 off; reductions reorder (Inductor's GPU tests loosen to 1e-3 and beyond)


# --- scenarios (each in its own process) -----------------------------------------------------


def _emit(obj: Any) -> None:
    print(MARK + json.dumps(obj, default=repr), flush=True)


def _close(a: Any, b: Any) -> str | None:
    import torch

    try:
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)
        return None
    except AssertionError as e:
        return str(e)[:400]


def _compare(eager: dict, compiled: dict) -> list[str]:
    problems = []
    for key in ("outputs", "losses"):
        for i, (a, b) in enumerate(zip(eager[key], compiled[key])):
            if (p := _close(b, a)) is not None:
                problems.append(f"{key}[{i}]: {p}")
    for name, g in eager["grads"].items():
        if name not in compiled["grads"]:
            problems.append(f"grad {name} missing")
        elif (p := _close(compiled["grads"][name], g)) is not None:
            problems.append(f"grads[{name}]: {p}")
    return problems


def _children(pid: int) -> list[dict[str, Any]]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append({"pid": int(entry), "cmd": cmd, "nice": int(fields[16])})
    return out


def _descendants(pid: int) -> list[dict[str, Any]]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out.extend(kids)
        todo.extend(k["pid"] for k in kids)
    return out


def scenario_zoo(names: list[str]) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import sandbox
    from sandbox import zoo
    from sandbox.store import open_store

    sandbox.warmup()
    cuda_initialised_by_warmup = torch.cuda.is_initialized()
    results = {}
    for name in names:
        eager = zoo.run(name, backend=None, steps=2, device="cuda")
        n0 = len(sandbox.reports())
        t0 = time.time()
        raised = None
        try:
            compiled = zoo.run(name, backend="sandbox", steps=2, device="cuda")
            problems = _compare(eager, compiled)
        except Exception as e:  # noqa: BLE001 - reported
            problems, raised = [], f"{type(e).__name__}: {e}"[:2000]
        results[name] = {
            "seconds": time.time() - t0,
            "problems": problems,
            "raised": raised,
            "reports": [r.to_dict() for r in sandbox.reports()[n0:]],
        }
        torch._dynamo.reset()
    sandbox.flush()
    from sandbox import runtime as sandbox_runtime

    store = open_store(os.environ["SANDBOX_STORE"], readonly=True)
    run_ids = {r.run_id for r in sandbox.reports()}
    stored = {r.report_id: r.to_dict() for run_id in run_ids for r in store.reports(run_id)}
    _emit(
        {
            "results": results,
            "stored": stored,
            "children": _children(os.getpid()),
            "workers": sandbox.workers(),
            "worker_helpers": {w["pid"]: _descendants(w["pid"]) for w in sandbox.workers()},
            "cuda_initialised_by_warmup": cuda_initialised_by_warmup,
            "parent_gpu_load_prep": sandbox_runtime.current().parent_warm_up.gpu_result,
            "parent_warm_up": sandbox_runtime.current().parent_warm_up.started(),
            "device": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
        }
    )


def scenario_cpu_graph() -> None:
    """A CPU graph, then a GPU graph, through one worker on the GPU machine."""
    import torch

    import sandbox
    from sandbox import zoo

    sandbox.warmup(workers=1, wait=True)
    out: dict[str, Any] = {}
    for device in ("cpu", "cuda"):
        eager = zoo.run("mlp", backend=None, steps=2, device=device)
        n0 = len(sandbox.reports())
        compiled = zoo.run("mlp", backend="sandbox", steps=2, device=device)
        torch._dynamo.reset()
        time.sleep(1.0)  # a compile's C++ compiler processes are gone by now
        workers = sandbox.workers()
        out[device] = {
            "problems": _compare(eager, compiled),
            "outcomes": sorted({r.outcome for r in sandbox.reports()[n0:]}),  # this device's graphs only
            "helpers": [h for w in workers for h in _descendants(w["pid"])],
            "workers": [w["pid"] for w in workers],
        }
    _emit(out)


def scenario_warm_gpu() -> None:
    """sandbox.warmup(), then wait (as a job loading its data) until the worker's compile pool is
    up, then one GPU model through the backend."""
    import sandbox
    from sandbox import zoo

    sandbox.warmup(workers=1)
    t0 = time.time()
    pool_after = None
    while time.time() - t0 < 60 and pool_after is None:
        workers = sandbox.workers()
        if any("compile_worker" in h["cmd"] for w in workers if w["alive"] for h in _descendants(w["pid"])):
            pool_after = time.time() - t0
        time.sleep(0.2)
    jobs_before = [w["jobs"] for w in sandbox.workers()]
    eager = zoo.run("mlp", backend=None, steps=2, device="cuda")
    compiled = zoo.run("mlp", backend="sandbox", steps=2, device="cuda")
    _emit(
        {
            "pool_after_s": pool_after,
            "jobs_before": jobs_before,
            "problems": _compare(eager, compiled),
            "outcomes": sorted({r.outcome for r in sandbox.reports()}),
        }
    )


PROFILED_CALL = 3  # the call of each graph profiled in the store runs (after autotuning's first call)


def scenario_store_run(mode: str, batch: str = "1") -> None:
    import torch

    import sandbox
    from sandbox import zoo

    entry = zoo.ZOO["transformer"]
    options = {"profile_steps": PROFILED_CALL} | ({"mode": mode} if mode != "default" else {})
    torch.manual_seed(0)
    model = entry.build().to("cuda")
    fn = torch.compile(model, backend="sandbox", options=options)
    x = torch.cat([entry.inputs(0)[0]] * int(batch)).to("cuda")
    for _ in range(PROFILED_CALL + 1):
        fn(x).sum().backward()
    torch.cuda.synchronize()
    sandbox.flush()
    _emit({"run_id": sandbox.reports()[0].run_id, "reports": [r.to_dict() for r in sandbox.reports()]})


def scenario_failures(kind: str) -> None:
    import warnings

    import torch

    import sandbox

    keep = torch.randn(1024, 1024, device="cuda")
    checksum = float(keep.sum())
    allocated = torch.cuda.memory_allocated()
    marker = os.environ["GPU_CHECK_FAULT_MARKER"]

    def faulty(x):
        return torch.sin(x) * 3 + x.cos()

    def healthy(x):
        return torch.tanh(x) * 5 - 1

    x = torch.randn(4096, device="cuda")
    options = {"timeout_s": 20} if kind == "hang" else {}
    try:
        sandbox.warmup(wait=True)
    except Exception as e:
        print("warm-up failed:", e, *(getattr(e, "log_tail", None) or []), sep="\n", file=sys.stderr)
        raise
    open(marker, "w").close()
    n0 = len(sandbox.reports())
    t0 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raised = None
        try:
            ok = _close(torch.compile(faulty, backend="sandbox", options=options)(x), faulty(x)) is None
        except Exception as e:  # noqa: BLE001
            ok, raised = False, f"{type(e).__name__}: {e}"[:2000]
            raised += "\n" + "\n".join(getattr(e, "log_tail", None) or [])
    seconds = time.time() - t0
    os.remove(marker)
    failed = [r.to_dict() for r in sandbox.reports()[n0:]]
    n1 = len(sandbox.reports())
    healthy_ok = _close(torch.compile(healthy, backend="sandbox")(x), healthy(x)) is None
    torch.cuda.synchronize()
    _emit(
        {
            "kind": kind,
            "ok": ok,
            "raised": raised,
            "seconds": seconds,
            "warnings": [str(w.message)[:500] for w in caught if str(w.message).startswith("sandbox")],
            "failed_reports": failed,
            "healthy_ok": healthy_ok,
            "healthy_reports": [r.to_dict() for r in sandbox.reports()[n1:]],
            "tensor_intact": float(keep.sum()) == checksum,
            "allocated_before": allocated,
            "allocated_after": torch.cuda.memory_allocated() - x.numel() * 4,
        }
    )


# --- the driver --------------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str], timeout: float = 900) -> tuple[dict[str, Any] | None, str]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    out = None
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            out = json.loads(line[len(MARK) :])
    return out, (proc.stdout + proc.stderr)[-6000:]


def _env(tmp: str, name: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("SANDBOX_", "TORCHINDUCTOR_", "TRITON_CACHE")):
            del env[k]
    cache = os.path.join(tmp, name)
    os.makedirs(cache, exist_ok=True)
    env.update(
        TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"),
        TRITON_CACHE_DIR=os.path.join(cache, "triton"),
        SANDBOX_STORE=os.path.join(cache, "store.sqlite"),
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Checks:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        self.rows.append({"check": name, "ok": bool(ok), "detail": detail if not ok else ""})
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + ("" if ok else f"\n      {str(detail)[:1500]}"), flush=True)
        return bool(ok)


_KERNEL_FIELDS = ("configs", "compile_time_s", "autotune_cache", "chosen")


def _missing_triton_fields(k: dict[str, Any]) -> list[str]:
    t = k.get("triton") or {}
    missing = [f for f in _KERNEL_FIELDS if t.get(f) in (None, [], {})]
    if not k.get("launchers"):
        missing.append("launchers")
    for launcher in k.get("launchers") or []:
        for f in ("n_regs", "n_spills", "shared", "num_warps", "num_stages"):
            if launcher.get(f) is None:
                missing.append(f"launcher.{f}")
    if not t.get("first_run"):
        missing.append("first_run")
    return missing


def check_zoo(c: Checks, tmp: str, out_dir: str) -> None:
    res, log = _run(["--scenario", "zoo", *ZOO], _env(tmp, "zoo"))
    if not c.check("zoo scenario ran", res is not None, log):
        return
    device = res["device"]
    print(f"      device: {device}, torch {res['torch']}")
    for w in res["workers"]:
        print(
            f"      worker {w.get('pid')}: "
            + json.dumps(
                {k: w.get(k) for k in ("warm_up_s", "warm_up_phases", "start_to_ready_s", "jobs")}, default=str
            )
        )
    for name, r in res["results"].items():
        c.check(
            f"zoo {name}: matches eager on CUDA ({r['seconds']:.1f} s)",
            not r["problems"] and not r["raised"],
            r["problems"] or r["raised"],
        )
        # A graph with nothing to compile (e.g. one that only returns its input) runs as is.
        outcomes = sorted({x["outcome"] for x in r["reports"] if not (x.get("reason") or "").startswith("empty graph")})
        c.check(
            f"zoo {name}: every graph isolated ({outcomes})",
            outcomes == ["isolated"],
            [(x["outcome"], x.get("reason")) for x in r["reports"]],
        )
        triton = [k for x in r["reports"] for k in x["kernels"] if k["kind"] in ("triton", "template")]
        bad = {k["name"]: _missing_triton_fields(k) for k in triton if _missing_triton_fields(k)}
        c.check(f"zoo {name}: {len(triton)} Triton kernels, every report field filled", triton and not bad, bad)
        done = [x for x in r["reports"] if any(k["kind"] in ("triton", "template") for k in x["kernels"])]
        c.check(
            f"zoo {name}: reports completed after the first run",
            all(x.get("completed_at") for x in done),
            [x["compile_id"] for x in done if not x.get("completed_at")],
        )
        for x in done:
            s = res["stored"].get(x["report_id"]) or {}
            missing = [
                k["name"]
                for k in s.get("kernels", [])
                if k["kind"] in ("triton", "template") and _missing_triton_fields(k)
            ]
            if missing or not s.get("completed_at"):
                c.check(
                    f"zoo {name}: the stored copy is the completed report",
                    False,
                    missing or "completed_at missing in the store",
                )
                break
        else:
            c.check(f"zoo {name}: the stored copy is the completed report", bool(done), "no report with Triton kernels")
        if name == "max_autotune":
            choices = [a for x in r["reports"] for a in x.get("autotune", [])]
            ok = choices and all(
                a["candidates"] and a["chosen"] and any(cand["ms"] for cand in a["candidates"]) for a in choices
            )
            c.check(f"zoo max_autotune: {len(choices)} tuned ops with their candidates' timings", ok, choices[:2])
            kinds = sorted({cand["kind"] for a in choices for cand in a["candidates"]})
            print(f"      candidate kinds: {kinds}; chosen: {[a['chosen'] for a in choices]}")
    pool_children = [p for p in res["children"] if "sandbox.isolation.worker" not in p["cmd"]]
    c.check("no compile pool (or other helper process) in the user's process", not pool_children, pool_children)
    c.check("sandbox.warmup() does not initialise CUDA in the user's process", not res["cuda_initialised_by_warmup"])
    c.check(
        "the worker warmed up at a lower priority (nice)",
        [w.get("warm_up_priority") for w in res["workers"]] == ["nice"] * len(res["workers"]),
        [w.get("warm_up_priority") for w in res["workers"]],
    )
    helpers = [h for hs in res["worker_helpers"].values() for h in hs]
    c.check(
        f"the worker's Triton compile pool ({len(helpers)} processes) runs at nice >= 10",
        helpers and all(h["nice"] >= 10 for h in helpers),
        helpers[:3],
    )
    prep = res.get("parent_gpu_load_prep")
    c.check(
        "the user's process prepared Triton for the first load while the worker compiled",
        prep is not None and not prep.get("failed"),
        prep,
    )
    c.check(
        "no CPU-ISA probe in the user's process for GPU graphs",
        res["parent_warm_up"] == {"cpu_isa_probe": False, "gpu_load": True},
        res["parent_warm_up"],
    )
    # The CUDA driver's initialisation ran beside the worker's `import torch`: torch's first
    # CUDA call waited for what was left of it, not for all of it.
    phases = [w.get("warm_up_phases") or {} for w in res["workers"]]
    c.check(
        "the worker initialised the CUDA driver beside its imports (torch's first CUDA call waited less than it took)",
        phases and all(p.get("cuda_driver_init_s") and p["cuda_available_s"] < p["cuda_driver_init_s"] for p in phases),
        phases,
    )
    example = next(
        (k for r in res["results"].values() for x in r["reports"] for k in x["kernels"] if k.get("triton")), None
    )
    with open(os.path.join(out_dir, "gpu_kernel_example.json"), "w") as f:
        json.dump(example, f, indent=1)


def check_store(c: Checks, tmp: str, out_dir: str) -> None:
    store_path = os.path.join(out_dir, "gpu_store.sqlite")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(store_path + suffix):
            os.remove(store_path + suffix)
    runs = {}
    for mode, run_name in (("default", "gpu-default"), ("max-autotune-no-cudagraphs", "gpu-max-autotune")):
        env = _env(tmp, f"store-{run_name}", SANDBOX_STORE=store_path, SANDBOX_RUN_NAME=run_name)
        res, log = _run(["--scenario", "store_run", mode], env)
        if not c.check(f"store: {run_name} run stored", res is not None, log):
            return
        runs[run_name] = res
    env = _env(tmp, "diff")
    cli = [sys.executable, "-c", "import sys; from sandbox.cli.main import main; sys.exit(main())"]
    cmd = [*cli, "diff", runs["gpu-default"]["run_id"], runs["gpu-max-autotune"]["run_id"], "--store", store_path]
    diff = subprocess.run(cmd, env=env, capture_output=True, text=True)
    print(diff.stdout[-4000:])
    kernels_a = {k["name"] for r in runs["gpu-default"]["reports"] for k in r["kernels"]}
    kernels_b = {k["name"] for r in runs["gpu-max-autotune"]["reports"] for k in r["kernels"]}
    c.check("store: the two modes generated different kernels", kernels_a != kernels_b, sorted(kernels_a ^ kernels_b))
    shown = [n for n in sorted(kernels_a ^ kernels_b) if n in diff.stdout]
    c.check(
        "store: `sandbox diff` shows the kernel differences",
        diff.returncode == 0 and shown,
        diff.stdout[-2000:] + diff.stderr[-2000:],
    )
    check_runtimes(c, runs)
    runtime_store = os.path.join(out_dir, "gpu_runtime_store.sqlite")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(runtime_store + suffix):
            os.remove(runtime_store + suffix)
    shutil.copy2(store_path, runtime_store)
    env = _env(tmp, "store-gpu-wide", SANDBOX_STORE=runtime_store, SANDBOX_RUN_NAME="gpu-wide")
    # Large enough that its kernels take microseconds more than launch-bound calls, past the
    # verdict's noise floor (analysis/runtime.MIN_DELTA_US); a batch of twice the size was not.
    res, log = _run(["--scenario", "store_run", "default", str(WIDE_BATCH)], env)
    if not c.check(f"runtime: the run with a batch {WIDE_BATCH} times as large stored", res is not None, log):
        return
    cmd = [*cli, "diff", runs["gpu-default"]["run_id"], res["run_id"], "--store", runtime_store, "--json"]
    wide = subprocess.run(cmd, env=_env(tmp, "diff-wide"), capture_output=True, text=True)
    verdict = json.loads(wide.stdout)["verdict"] if wide.returncode == 0 else []
    first = verdict[0] if verdict else {}
    print(f"      first cause: {first.get('text')}")
    c.check(
        "runtime: the verdict names a kernel that runs slower in the wider run first",
        first.get("cause") == "runtime_change" and " runs " in first.get("text", "") and "slower" in first["text"],
        [v.get("text") for v in verdict[:3]] or wide.stderr[-2000:],
    )


def check_runtimes(c: Checks, runs: dict[str, Any]) -> None:
    """Every launched kernel of a profiled call has a runtime; their sum is within 10% of the call's
    device time (what is left: memsets, copies, kernels the report does not list)."""
    for name, res in runs.items():
        profiled = [r for r in res["reports"] if r.get("runtime") and r["runtime"].get("steps")]
        c.check(f"runtime: {name}: every graph's call {PROFILED_CALL} profiled", len(profiled) == len(res["reports"]))
        missing, shares = [], []
        for r in profiled:
            rt = r["runtime"]
            missing += [
                f"{r['graph_kind']}:{k['name']}" for k in r["kernels"] if not (k.get("runtime") or {}).get("calls")
            ]
            shares.append((r["graph_kind"], rt["device"], round(rt["kernels_us"] / max(rt["graph_us"], 1e-9), 3)))
        c.check(f"runtime: {name}: every launched kernel has a runtime", not missing, missing)
        c.check(
            f"runtime: {name}: kernels within 10% of the profiled call's device time",
            shares and all(device == "cuda" and 0.9 <= share <= 1.0001 for _, device, share in shares),
            shares,
        )


_PTXAS = """#!/bin/sh
# Misbehaves while the marker file exists (the scenario creates it around one compile).
if [ -e "{marker}" ]; then
  case "{kind}" in
    hang) sleep 3600 ;;
    crash) kill -SEGV $PPID; sleep 5; exit 139 ;;
  esac
fi
exec "{real}" "$@"
"""


def _real_ptxas() -> str | None:
    try:
        import triton

        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
        return path if os.path.exists(path) else shutil.which("ptxas")
    except ImportError:
        return shutil.which("ptxas")


def check_failures(c: Checks, tmp: str, out_dir: str) -> None:
    real = _real_ptxas()
    if not c.check("failures: Triton's ptxas found", real is not None):
        return
    for kind in ("hang", "crash"):
        marker = os.path.join(tmp, f"fault-{kind}")
        wrapper = os.path.join(tmp, f"ptxas-{kind}")
        with open(wrapper, "w") as f:
            f.write(_PTXAS.format(marker=marker, kind=kind, real=real))
        os.chmod(wrapper, 0o755)
        env = _env(tmp, f"failures-{kind}", TRITON_PTXAS_PATH=wrapper, GPU_CHECK_FAULT_MARKER=marker)
        res, log = _run(["--scenario", "failures", kind], env)
        if not c.check(f"failures {kind}: scenario ran, the user's process survived", res is not None, log):
            continue
        failed = [r for r in res["failed_reports"] if r["outcome"] == "failed"]
        c.check(
            f"failures {kind}: one graph failed ({[r['failure']['kind'] for r in failed]}), ran eagerly and correctly "
            f"in {res['seconds']:.1f} s",
            res["ok"] and len(failed) == 1 and failed[0]["fallback"] == "eager" and len(res["warnings"]) == 1,
            res,
        )
        c.check(
            f"failures {kind}: the next compile succeeds in a fresh worker",
            res["healthy_ok"]
            and [r["outcome"] for r in res["healthy_reports"]] == ["isolated"]
            and res["healthy_reports"][0]["worker_pid"] != (failed[0]["failure"]["worker_pid"] if failed else None),
            res["healthy_reports"],
        )
        c.check(
            f"failures {kind}: the user's CUDA tensors and allocator untouched",
            res["tensor_intact"] and res["allocated_after"] == res["allocated_before"],
            {k: res[k] for k in ("tensor_intact", "allocated_before", "allocated_after")},
        )


def check_cpu_graph(c: Checks, tmp: str, out_dir: str) -> None:
    """A CPU graph on the GPU machine leaves CUDA and Triton's compile pool alone in the worker;
    the first GPU graph after it starts them."""
    # Left to the first GPU job: sandbox.warmup() would start CUDA and the pool at once (warm_gpu).
    res, log = _run(["--scenario", "cpu_graph"], _env(tmp, "cpu_graph", SANDBOX_WORKER_GPU_WARMUP="job"))
    if not c.check("cpu_graph scenario ran", res is not None, log):
        return
    cpu, gpu = res["cpu"], res["cuda"]
    cpu_ok = not cpu["problems"] and cpu["outcomes"] == ["isolated"]
    c.check("a CPU graph on the GPU machine matches eager", cpu_ok, cpu)
    c.check(
        "a CPU graph started no compile pool in the worker",
        not [h for h in cpu["helpers"] if "compile_worker" in h["cmd"]],
        cpu["helpers"][:3],
    )
    c.check("the GPU graph after it matches eager", not gpu["problems"] and gpu["outcomes"] == ["isolated"], gpu)
    c.check(
        "the GPU graph started the compile pool in the same worker",
        gpu["workers"] == cpu["workers"] and any("compile_worker" in h["cmd"] for h in gpu["helpers"]),
        {"workers": (cpu["workers"], gpu["workers"]), "helpers": gpu["helpers"][:3]},
    )


def check_warm_gpu(c: Checks, tmp: str, out_dir: str) -> None:
    """``sandbox.warmup()`` has the worker start Triton's compile pool before any job (the default,
    SANDBOX_WORKER_GPU_WARMUP=warmup); the GPU graph compiled after it matches eager."""
    res, log = _run(["--scenario", "warm_gpu"], _env(tmp, "warm_gpu"))
    if not c.check("warm_gpu scenario ran", res is not None, log):
        return
    c.check(
        "the worker started its compile pool before its first job",
        res["jobs_before"] == [0] and res["pool_after_s"] is not None,
        {k: res[k] for k in ("jobs_before", "pool_after_s")},
    )
    c.check(
        "the GPU graph after it matches eager and was isolated",
        not res["problems"] and res["outcomes"] == ["isolated"],
        {k: res[k] for k in ("problems", "outcomes")},
    )


# A graph may stay in the user's process only for these reasons (as tests/isolation/test_coverage.py
# allows on the CPU): one with nothing to compile runs as it is, in every variant.
COVERAGE_ALLOWED_IN_PROCESS = ("empty graph: nothing to compile",)


def check_coverage(c: Checks, tmp: str, out_dir: str, selection: str = "--ci") -> None:
    """``bench/coverage.py --device cuda`` over ``selection`` (the CI subset unless --coverage names
    another, e.g. "--shard 0/20"): every sandbox graph crosses or has an allowed reason; a sample
    fails or mismatches in the sandbox only where it does in in-process Inductor too."""
    out = os.path.join(out_dir, "coverage_cuda.json")
    cmd = [sys.executable, os.path.join(REPO, "bench", "coverage.py"), "--device", "cuda", *selection.split()]
    cmd += ["--variants", "sandbox,stock,inductor", "--jobs", str(max(1, min(4, (os.cpu_count() or 2) // 4)))]
    cmd += ["--out", out]
    proc = subprocess.run(cmd, env=_env(tmp, "coverage"), capture_output=True, text=True, timeout=3000)
    log = (proc.stdout + proc.stderr)[-6000:]
    if "expecttest" in proc.stderr and proc.returncode != 0:
        log = "torch's OpInfo databases need expecttest: carry its wheel and pip install it\n" + log
    if not c.check("coverage sweep on CUDA ran", proc.returncode == 0 and os.path.exists(out), log):
        return
    with open(out) as f:
        result = json.load(f)
    print("\n".join(proc.stdout.splitlines()[-40:]), flush=True)
    by = {(r["op"], r["variant"]): r for r in result["records"]}
    crashed = [r["op"] for r in result["records"] if "crashed" in r]
    c.check("no entry crashed in any variant", not crashed, crashed)
    reasons = result["totals"]["sandbox"].get("reasons", {})
    left = {
        k: v
        for k, v in reasons.items()
        if not k.startswith("failed") and not any(a in k for a in COVERAGE_ALLOWED_IN_PROCESS)
    }
    in_process = result["totals"]["sandbox"].get("graphs_in_process", 0)
    allowed = sum(v for k, v in reasons.items() if any(a in k for a in COVERAGE_ALLOWED_IN_PROCESS))
    c.check(
        "every sandbox graph crossed or has an allowed reason",
        not left and in_process == allowed,
        {"in_process": in_process, "reasons": reasons},
    )
    worse = []
    for name in result["entries"]:
        s, i = by.get((name, "sandbox"), {}), by.get((name, "inductor"), {})
        if "crashed" in s or "crashed" in i:
            continue
        if s.get("failed", 0) > i.get("failed", 0) or set(s.get("mismatched", [])) - set(i.get("mismatched", [])):
            worse.append({"entry": name, "sandbox": s.get("errors", [])[:2], "mismatched": s.get("mismatched")})
    c.check("no sample fails or mismatches through the sandbox that passes in-process", not worse, worse[:10])
    t = result["totals"]
    # The sweep's own paired sums: every variant over the entries all of them finished.
    paired = result["paired_seconds"]
    sandbox_s, inductor_s = paired["seconds"]["sandbox"], paired["seconds"]["inductor"]
    ratio = sandbox_s / inductor_s if inductor_s else None
    print(
        f"      coverage: sandbox {t['sandbox'].get('isolated_pct')}% isolated, stock "
        f"{t['stock'].get('isolated_pct')}%; over the {paired['entries']} entries every variant finished, "
        f"sandbox {sandbox_s} s against in-process {inductor_s} s" + (f" ({ratio:.2f}x)" if ratio else ""),
        flush=True,
    )


CHECKS = {
    "zoo": check_zoo,
    "cpu_graph": check_cpu_graph,
    "warm_gpu": check_warm_gpu,
    "store": check_store,
    "failures": check_failures,
    "coverage": check_coverage,
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--out", default=".")
    ap.add_argument("--only", default=",".join(CHECKS))
    ap.add_argument("--coverage", default="--ci", help="bench/coverage.py's selection for the coverage check")
    a = ap.parse_args()
    if a.scenario == "zoo":
        scenario_zoo(a.args)
        return 0
    if a.scenario == "store_run":
        scenario_store_run(*a.args)
        return 0
    if a.scenario == "cpu_graph":
        scenario_cpu_graph()
        return 0
    if a.scenario == "warm_gpu":
        scenario_warm_gpu()
        return 0
    if a.scenario == "failures":
        scenario_failures(a.args[0])
        return 0
    os.makedirs(a.out, exist_ok=True)
    c = Checks()
    with tempfile.TemporaryDirectory(prefix="sandbox-gpu-") as tmp:
        for name in a.only.split(","):
            t0 = time.time()
            try:
                if name == "coverage":
                    check_coverage(c, tmp, a.out, a.coverage)
                else:
                    CHECKS[name](c, tmp, a.out)
            except Exception as e:  # noqa: BLE001 - one broken check does not hide the others
                c.check(f"{name}: ran to the end", False, f"{type(e).__name__}: {e}")
            print(f"      ({name}: {time.time() - t0:.0f} s)", flush=True)
    with open(os.path.join(a.out, "gpu_checks.json"), "w") as f:
        json.dump(c.rows, f, indent=1)
    failed = [r for r in c.rows if not r["ok"]]
    print(f"\n{len(c.rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

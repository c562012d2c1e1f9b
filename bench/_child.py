"""One measurement, in a fresh Python process. Started by ``bench/compile_overhead.py``.

    python bench/_child.py --json SPEC --result FILE

SPEC (a JSON object) says what to run:

* ``kind="step"``: build one zoo model, ``torch.compile`` it with the variant's backend and
  run ``steps`` steps, timing each point (the cold and the warm measurement both use it;
  the cache dir the parent set in the environment decides which one this is).
* ``kind="overhead"``: once the backend is up (the sandbox's worker ready), compile a
  series of distinct graphs and time each; record idle memory.

The child writes its numbers to FILE as JSON and never judges them; the parent does.
Environment (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR, TORCHINDUCTOR_FX_COMPILE_MODE)
is set by the parent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from sandbox.isolation.processes import descendants

T_MAIN = time.time()


def _rss_bytes(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _descendants(pid: int) -> list[int]:
    return sorted(set(descendants(pid)))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:200]
    except OSError:
        return ""


def _descendant_info() -> list[dict]:
    return [{"pid": p, "rss_bytes": _rss_bytes(p), "cmdline": _cmdline(p)} for p in _descendants(os.getpid())]


def _counters() -> dict:
    from torch._dynamo.utils import counters

    keep = ("inductor", "aot_autograd")
    return {k: {kk: int(vv) for kk, vv in counters[k].items()} for k in keep if k in counters}


def _delta(before: dict, after: dict) -> dict:
    out: dict = {}
    for group, vals in after.items():
        for k, v in vals.items():
            d = v - before.get(group, {}).get(k, 0)
            if d:
                out.setdefault(group, {})[k] = d
    return out


OVERHEAD_STAGES = ("serialize", "wait_for_worker", "send", "transfer", "load")


def _reports() -> list[dict]:
    """Each report's outcome and the durations of the sandbox's own stages.

    The stages form a tree (the worker's Inductor passes nest under compile_in_worker);
    the overhead counts the parent-side stages named in OVERHEAD_STAGES, by name,
    wherever they sit in the tree, and never compile_in_worker.
    """
    if "sandbox" not in sys.modules:
        return []
    import sandbox

    out = []
    for r in sandbox.reports():
        stages: dict[str, float] = {}
        every: dict[str, float] = {}  # every stage, by origin:name
        for s in r.stages:
            key = f"{getattr(s, 'origin', 'parent')}:{s.name}"
            every[key] = every.get(key, 0.0) + (s.end - s.start)
            if s.name in OVERHEAD_STAGES and getattr(s, "origin", "parent") != "parent":
                continue  # a worker-side stage that happens to share a name
            if s.name in OVERHEAD_STAGES or s.name == "compile_in_worker":
                stages[s.name] = stages.get(s.name, 0.0) + (s.end - s.start)
        out.append(
            {
                "every_stage_s": every,
                "graph_index": r.graph_index,
                "graph_kind": r.graph_kind,
                "outcome": r.outcome,
                "reason": r.reason,
                "worker_pid": r.worker_pid,
                "duration_s": r.duration_s,
                "stages_s": stages,
                # None when the report lacks the stages the overhead is made of: no number beats a wrong one
                "overhead_s": sum(stages.get(n, 0.0) for n in OVERHEAD_STAGES)
                if all(n in stages for n in ("serialize", "send", "load"))
                else None,
                "stage_names": sorted({s.name for s in r.stages}),
                "failure": None if r.failure is None else {"kind": r.failure.kind, "message": r.failure.message},
            }
        )
    return out


def _workers() -> list[dict]:
    if "sandbox" not in sys.modules:
        return []
    import sandbox

    return sandbox.workers()


def _backend(variant: str) -> str:
    return "sandbox" if variant.startswith("sandbox") else "inductor"


def _device_info(device: str) -> dict:
    import platform

    import torch

    info = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        try:
            import triton  # type: ignore[import-not-found]

            info["triton"] = triton.__version__
        except Exception:
            info["triton"] = None
    else:
        info["device_name"] = info.get("cpu_model", platform.processor() or "cpu")
    return info


# --- kind="step": cold / warm first call ---------------------------------------------------------


def run_step(spec: dict) -> dict:
    t = {"spawn": spec["t_spawn"], "main": T_MAIN}
    variant = spec["variant"]
    device = spec["device"]

    import torch

    if variant.startswith("sandbox"):
        import sandbox
    t["imported"] = time.time()
    if variant == "sandbox_warmup":
        sandbox.warmup()  # right after the imports, before anything else: the worker starts now
        t["warmup_called"] = time.time()

    from sandbox import zoo

    if spec.get("setup_s"):
        time.sleep(spec["setup_s"])  # stands in for the program's own set-up (data, config)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    entry = zoo.entry(spec["model"])
    torch.manual_seed(0)
    model = entry.build().to(device)
    model.train(entry.train)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2) if entry.train else None
    torch.manual_seed(1)
    all_inputs = [[x.to(device) for x in entry.inputs(step)] for step in range(spec["steps"])]
    sync()
    t["model_built"] = time.time()

    before = _counters()
    kwargs = dict(entry.compile_kwargs)
    if entry.mode:
        kwargs["mode"] = entry.mode
    prof = None
    if spec.get("cprofile"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t["compile_call"] = time.time()
    fn = torch.compile(model, backend=_backend(variant), **kwargs)
    t["compile_returned"] = time.time()
    step_end = []
    losses = []
    for step, inputs in enumerate(all_inputs):
        if entry.dynamic:
            for x in inputs:
                torch._dynamo.mark_dynamic(x, 0)
        if entry.train:
            opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            out = fn(*inputs)
            if step == 0:
                sync()
                t["first_forward"] = time.time()
            loss = out.float().pow(2).mean()
            loss.backward()
            opt.step()  # type: ignore[union-attr]
            losses.append(loss.detach().item())
        else:
            with torch.no_grad():
                out = fn(*inputs)
            if step == 0:
                sync()
                t["first_forward"] = time.time()
            losses.append(float(out.float().pow(2).mean()))
        sync()
        step_end.append(time.time())
        if prof is not None and step == 0:
            prof.disable()
    t["first_step"] = step_end[0]
    if prof is not None:
        os.makedirs(spec["cprofile"], exist_ok=True)
        prof.dump_stats(os.path.join(spec["cprofile"], "parent.prof"))
    t["steps_done"] = step_end[-1]
    counters = _delta(before, _counters())
    reports = _reports()
    workers = _workers()
    descendants = _descendant_info()
    t["end"] = time.time()
    return {
        "times": t,
        "first_forward_s": t["first_forward"] - t["compile_call"],
        "first_step_s": t["first_step"] - t["compile_call"],
        "all_steps_s": t["steps_done"] - t["compile_call"],
        "import_s": t["imported"] - t["main"],
        "losses": losses,
        "counters": counters,
        "reports": reports,
        "workers": workers,
        "parent_gpu_load_prep": getattr(
            getattr(sys.modules.get("sandbox.runtime"), "parent_warm_up", None), "gpu_result", None
        ),
        "descendants_at_end": descendants,
        "parent_rss_bytes": _rss_bytes(),
        "info": _device_info(device),
    }


# --- kind="overhead": per graph once the backend is up ------------------------------------------


def _make_fn(i: int):
    """A distinct small function per ``i`` (its own code object: no guard or cache sharing)."""
    ops = ["torch.sin", "torch.cos", "torch.tanh", "torch.sigmoid", "torch.relu", "torch.exp"]
    body = ["    y = x @ w"]
    for k in range(3 + i % 5):
        op = ops[(i + k) % len(ops)]
        body.append(f"    y = {op}(y) * {1.0 + 0.01 * (i + 1) * (k + 1)!r} + {0.001 * i!r}")
    body.append("    return y.sum(dim=-1)")
    src = f"def graph_{i}(x, w):\n" + "\n".join(body) + "\n"
    ns: dict = {}
    exec(compile(src, f"<bench graph {i}>", "exec"), {"torch": __import__("torch")}, ns)
    return ns[f"graph_{i}"]


def run_overhead(spec: dict) -> dict:
    variant = spec["variant"]
    device = spec["device"]
    import torch

    if variant.startswith("sandbox"):
        import sandbox
    from sandbox import zoo

    backend = _backend(variant)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    out: dict = {"info": _device_info(device)}
    t = time.time()
    if variant.startswith("sandbox"):
        sandbox.warmup(wait=True)
    out["warmup_wait_s"] = time.time() - t
    out["parent_rss_bytes_idle"] = _rss_bytes()
    out["workers_idle"] = _workers()
    out["descendants_idle"] = _descendant_info()

    x = torch.randn(64, 64, device=device)
    w = torch.randn(64, 64, device=device)

    def one_fn(i: int) -> float:
        f = _make_fn(i)
        t0 = time.time()
        with torch.no_grad():
            torch.compile(f, backend=backend)(x, w)
        sync()
        return time.time() - t0

    def one_model(name: str) -> float:
        t0 = time.time()
        zoo.run(name, backend=backend, steps=1, device=device)
        sync()
        return time.time() - t0

    # Warm-up (not counted): the first compiles of a process pay one-time costs in the parent
    # for every variant (lazy imports, the stock mode's worker start), inference and training.
    warm = [one_fn(1000 + i) for i in range(spec["warmup_graphs"])]
    warm.append(one_model("inplace"))
    n_reports_before = len(_reports())
    fn_times = [one_fn(i) for i in range(spec["graphs"])]
    model_times = {name: one_model(name) for name in spec["overhead_models"]}
    sync()
    out.update(
        {
            "warmup_compile_s": warm,
            "fn_compile_s": fn_times,
            "model_compile_s": model_times,
            "reports": _reports()[n_reports_before:],
            "reports_warmup": _reports()[:n_reports_before],
            "workers_after": _workers(),
            "parent_rss_bytes_after": _rss_bytes(),
            "descendants_after": _descendant_info(),
        }
    )
    # Idle memory of the stock mode's helpers (sidecar + worker), if any were started.
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    spec = json.loads(args.json)
    if spec["kind"] == "step":
        result = run_step(spec)
    elif spec["kind"] == "overhead":
        result = run_overhead(spec)
    else:
        raise SystemExit(f"unknown kind {spec['kind']!r}")
    result["spec"] = spec
    result["pid"] = os.getpid()
    with open(args.result + ".tmp", "w") as f:
        json.dump(result, f, default=str)
    os.replace(args.result + ".tmp", args.result)
    # Descendants at the moment the child is done; the parent checks they go away after exit.
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""What does compiling through the sandbox cost, against in-process Inductor?

Every measurement runs in a fresh Python process (``bench/_child.py``); every cold
measurement gets fresh, empty ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR``.
Variants alternate one process at a time: each repeat runs every variant's cold process
(ABCD BCDA CDAB ...: each repeat starts one further on), then the warm processes in rounds
of one per variant (each round one further on), so a drift in the machine's speed lands on
every variant alike. Medians are printed, ratios are against the in-process Inductor median
of the same model.

Variants
  inductor        torch.compile(backend="inductor"), compiled in the user's process
  stock           the same with TORCHINDUCTOR_FX_COMPILE_MODE=subprocess (PyTorch's own mode)
  sandbox         torch.compile(backend="sandbox"), first call right after torch.compile; the
                  workers start at `import torch`, as in a script that names the backend
                  (SANDBOX_PRESTART=import: _child.py names it only at run time)
  sandbox_warmup  the same, and sandbox.warmup() right after the imports, before the model is built
  BASE+TAG        BASE with environment variables of --variant-env, e.g.
                  sandbox+at_compile:SANDBOX_PRESTART=compile (workers started by torch.compile)

Measurements
  cold      a process on an empty cache dir: seconds from just before torch.compile to the
            end of the first step (forward, backward, optimizer step; synchronized on CUDA),
            and the whole process's wall time (spawn to exit, interpreter start included)
  warm      a second process on the same, now populated cache dir (every graph a cache hit)
  overhead  per graph, once the backend is up (the sandbox's worker ready), FX graph and
            AOTAutograd caches off: the sandbox's report stages serialize + wait_for_worker +
            send + transfer + load (compile_in_worker excluded), median ms per graph; and the
            wall-time difference against in-process Inductor on the same graphs
  memory    an idle, ready worker's RSS (with its children) and the parent's RSS, MiB

Usage
  python bench/compile_overhead.py                       # default: mlp, 3 repeats, ~10 min on 2 cores
  python bench/compile_overhead.py --quick               # 1 repeat, mlp, cold only (~1-2 min)
  python bench/compile_overhead.py --repeats 5 --models mlp,transformer --out bench.json
  python bench/compile_overhead.py --device cuda --models transformer
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _paths import checkout_first  # bench/, the script's own folder, is first on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_child.py")
VARIANTS = ("inductor", "stock", "sandbox", "sandbox_warmup")
BASELINE = "inductor"

# target: (variant, phase, max ratio vs in-process Inductor)
RATIO_TARGETS = (
    ("sandbox", "cold", 1.20),
    ("sandbox_warmup", "cold", 1.05),
    ("sandbox", "warm", 1.03),
    ("sandbox_warmup", "warm", 1.03),
)
OVERHEAD_TARGET_MS = 20.0
MIB = 2**20


# --- running one child ---------------------------------------------------------------------------


def _session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``: a child's helpers stay in its session
    (workers, compile pools, their children), also once re-parented after the child's exit."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(sid) and fields[0] not in ("Z", "X"):
            out.append(int(name))
    return out


def child_env(variant: str, cache_root: str, device: str, caches_off: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TORCHINDUCTOR_FX_COMPILE_MODE", None)
    if variant == "stock":
        env["TORCHINDUCTOR_FX_COMPILE_MODE"] = "subprocess"
    # A user's script that names the backend (backend="sandbox") has its workers started at
    # `import torch` (sandbox/prestart.py). _child.py picks its backend at run time, so it
    # asks for that explicitly; the other variants start no worker.
    env["SANDBOX_PRESTART"] = "import" if variant.startswith("sandbox") else "off"
    # The children import this checkout's package (zoo, warmup) even where it is not on sys.path.
    env["PYTHONPATH"] = checkout_first(env.get("PYTHONPATH"))
    env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_root, "inductor")
    env["TRITON_CACHE_DIR"] = os.path.join(cache_root, "triton")
    # A run store beside the caches (unless SANDBOX_STORE names one): the sandbox's children
    # neither fill the default store (~/.cache/torch-compile-sandbox) nor share one.
    env.setdefault("SANDBOX_STORE", os.path.join(cache_root, "runs.db"))
    if caches_off:
        env["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
        env["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"
    if device.startswith("cuda"):
        env.setdefault("CUDA_MODULE_LOADING", "LAZY")
    return env


def _sandbox_backend_registered(python: str) -> bool:
    code = (
        "from importlib.metadata import entry_points; "
        "print('sandbox' in entry_points(group='torch_dynamo_backends').names)"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "True"


def run_child(python: str, spec: dict, env: dict[str, str], timeout_s: float, workdir: str) -> dict[str, Any]:
    """Run one child; returns its result plus wall time, or ok=False with the stderr tail."""
    fd, result_path = tempfile.mkstemp(prefix="result-", suffix=".json", dir=workdir)
    os.close(fd)
    os.unlink(result_path)
    load_before = os.getloadavg()[0]
    t_spawn = time.time()
    spec = dict(spec, t_spawn=t_spawn)
    cmd = [python, CHILD, "--json", json.dumps(spec), "--result", result_path]
    rec: dict[str, Any] = {"ok": False, "loadavg_1m_before": load_before}
    # A session of its own: whatever the child leaves running (a worker, a compile pool, their
    # children, re-parented or not) is found by session id and waited for before the next child.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout_s)
        t_exit = time.time()
        rec["rc"] = proc.returncode
        stderr = err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        t_exit = time.time()
        rec["rc"] = None
        stderr = (err or b"").decode("utf-8", "replace") + f"\n[bench] child timed out after {timeout_s:.0f} s"
    deadline = t_exit + 10.0
    left = _session_members(proc.pid)
    rec["left_at_exit"] = len(left)
    while left and time.time() < deadline:
        time.sleep(0.02)
        left = _session_members(proc.pid)
    # How long the processes the child left behind took to go (a killed GPU process frees its
    # context in the driver meanwhile); the next child starts only after.
    rec["lingering_after_exit_s"] = round(time.time() - t_exit, 3)
    rec["lingering_pids"] = left
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    rec["process_s"] = t_exit - t_spawn
    rec["loadavg_1m_after"] = os.getloadavg()[0]
    rec["stderr_tail"] = stderr[-3000:]
    if rec["rc"] == 0 and os.path.exists(result_path):
        with open(result_path) as f:
            rec["result"] = json.load(f)
        os.unlink(result_path)
        rec["ok"] = True
        r = rec["result"]
        rec["exit_s"] = t_exit - r["times"]["end"] if "times" in r else None
    else:
        rec["error"] = f"child exited with {rec['rc']}" if rec["rc"] is not None else "child timed out"
    return rec


def _tail(text: str, n: int = 25) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join("    | " + ln for ln in lines[-n:])


def _report_failure(label: str, rec: dict) -> None:
    print(f"  !! {label} FAILED ({rec.get('error')}); stderr tail:", flush=True)
    print(_tail(rec.get("stderr_tail", "")) or "    | (empty)", flush=True)


# --- judging one child's result ------------------------------------------------------------------


def _outcomes(result: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in result.get("reports", []):
        out[r["outcome"]] = out.get(r["outcome"], 0) + 1
    return out


def _cache_misses(result: dict) -> int:
    c = result.get("counters", {})
    return int(c.get("inductor", {}).get("fxgraph_cache_miss", 0)) + int(
        c.get("aot_autograd", {}).get("autograd_cache_miss", 0)
    )


def _count_files(root: str) -> int:
    """Files under a child's cache root (caches and run store): a warm process that adds
    files on every run shows here."""
    return sum(len(files) for _, _, files in os.walk(root))


def summarize_step(rec: dict, variant: str, phase: str) -> dict[str, Any]:
    """The raw numbers of one cold/warm child; failures and caveats are marked, never hidden."""
    row: dict[str, Any] = {
        "ok": rec["ok"],
        "process_s": rec["process_s"],
        "loadavg_1m_before": rec["loadavg_1m_before"],
    }
    if not rec["ok"]:
        row["error"] = rec.get("error")
        return row
    r = rec["result"]
    outcomes = _outcomes(r)
    row.update(
        {
            "first_call_s": r["first_step_s"],
            "first_forward_s": r["first_forward_s"],
            "all_steps_s": r["all_steps_s"],
            "import_s": r["import_s"],
            "exit_s": rec.get("exit_s"),
            "outcomes": outcomes,
            "cache_misses": _cache_misses(r),
            "counters": r.get("counters", {}),
            "helpers_at_end": len(r.get("descendants_at_end", [])),
            "lingering_pids": rec.get("lingering_pids", []),
            "lingering_after_exit_s": rec.get("lingering_after_exit_s"),
            "left_at_exit": rec.get("left_at_exit"),
            "loss_first": r["losses"][0] if r.get("losses") else None,
        }
    )
    if variant.startswith("sandbox"):
        stages: dict[str, float] = {}
        for rep in r.get("reports", []):
            for k, v in rep["stages_s"].items():
                stages[k] = stages.get(k, 0.0) + v
        row["stages_s"] = stages
        row["workers"] = [
            {k: w.get(k) for k in ("pid", "ready", "jobs", "rss_bytes", "warm_up_s", "start_to_ready_s")}
            for w in r.get("workers", [])
        ]
        failed = [rep for rep in r.get("reports", []) if rep["outcome"] == "failed"]
        if failed:
            # A graph that fell back to eager makes the timing meaningless: count the run as failed.
            row["ok"] = False
            row["error"] = "sandbox compile failed: " + "; ".join(
                f"{f['graph_kind']}: {(f.get('failure') or {}).get('message')}" for f in failed
            )
        elif phase == "cold" and outcomes.get("in_process"):
            row["caveat"] = f"{outcomes['in_process']} graph(s) compiled in-process, not isolated"
        if phase == "warm" and any(o != "cache_hit" for o in outcomes):
            row["caveat"] = f"warm run was not all cache hits: {outcomes}"
    if phase == "warm" and row["cache_misses"]:
        row["caveat"] = (row.get("caveat", "") + f" warm run had {row['cache_misses']} cache miss(es)").strip()
    if rec.get("lingering_pids"):
        row["caveat"] = (
            row.get("caveat", "") + f" helper pids {rec['lingering_pids']} outlived the process by 10 s"
        ).strip()
    return row


def summarize_overhead(rec: dict, variant: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ok": rec["ok"],
        "process_s": rec["process_s"],
        "loadavg_1m_before": rec["loadavg_1m_before"],
    }
    if not rec["ok"]:
        row["error"] = rec.get("error")
        return row
    r = rec["result"]
    row.update(
        {
            "warmup_wait_s": r["warmup_wait_s"],
            "warmup_compile_s": r["warmup_compile_s"],
            "fn_compile_s": r["fn_compile_s"],
            "model_compile_s": r["model_compile_s"],
            "parent_rss_mib_idle": r["parent_rss_bytes_idle"] / MIB,
            "parent_rss_mib_after": r["parent_rss_bytes_after"] / MIB,
            "helpers_after": [
                {"pid": d["pid"], "rss_mib": d["rss_bytes"] / MIB, "cmdline": d["cmdline"]}
                for d in r.get("descendants_after", [])
            ],
        }
    )
    if variant.startswith("sandbox"):
        reps = r.get("reports", [])
        row["outcomes"] = _outcomes(r)
        isolated = [rep for rep in reps if rep["outcome"] == "isolated"]
        row["graph_overhead_ms"] = [rep["overhead_s"] * 1000 for rep in isolated if rep["overhead_s"] is not None]
        if len(row["graph_overhead_ms"]) < len(isolated):
            row["caveat"] = (
                f"{len(isolated) - len(row['graph_overhead_ms'])} isolated graph(s) lack the serialize/send/load "
                f"stages; stage names seen: {sorted({n for rep in isolated for n in rep.get('stage_names', [])})}"
            )
        row["graph_stage_ms"] = [
            {k: v * 1000 for k, v in rep["stages_s"].items()} | {"graph_kind": rep["graph_kind"]} for rep in reps
        ]
        row["worker_idle_rss_mib"] = [w["rss_bytes"] / MIB for w in r.get("workers_idle", []) if w.get("ready")]
        row["worker_after_rss_mib"] = [w["rss_bytes"] / MIB for w in r.get("workers_after", [])]
        row["workers_idle"] = r.get("workers_idle", [])
        failed = [rep for rep in reps if rep["outcome"] != "isolated"]
        if any(rep["outcome"] == "failed" for rep in failed):
            row["ok"] = False
            row["error"] = f"sandbox compile failed: {row['outcomes']}"
        elif failed:
            row["caveat"] = (row.get("caveat", "") + f" not every graph was isolated: {row['outcomes']}").strip()
    else:
        row["helpers_rss_mib_after"] = sum(h["rss_mib"] for h in row["helpers_after"])
    return row


# --- statistics and printing ---------------------------------------------------------------------


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def ratio(x: float | None, base: float | None) -> float | None:
    return None if x is None or not base else x / base


def print_step_table(model: str, runs: dict, variants: list[str], phases: list[str]) -> dict:
    """One markdown table per model; returns the medians."""
    med: dict[str, dict[str, Any]] = {}
    for v in variants:
        med[v] = {}
        for phase in phases:
            rows = runs.get((model, v, phase), [])
            ok = [r for r in rows if r["ok"]]
            med[v][phase] = {
                "first_call_s": median([r["first_call_s"] for r in ok]),
                "process_s": median([r["process_s"] for r in ok]),
                "n_ok": len(ok),
                "n_failed": len(rows) - len(ok),
            }
    base = med.get(BASELINE, {})
    for v in variants:
        for phase in phases:
            m = med[v][phase]
            b = base.get(phase, {})
            m["first_call_ratio"] = ratio(m["first_call_s"], b.get("first_call_s"))
            m["process_ratio"] = ratio(m["process_s"], b.get("process_s"))

    hdr = ["variant"]
    for phase in phases:
        hdr += [f"{phase} first call s", "ratio", f"{phase} process s", "ratio"]
    hdr += ["runs ok/failed"]
    print(f"\n### {model}\n")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for v in variants:
        cells = [v]
        okf = []
        for phase in phases:
            m = med[v][phase]
            cells += [
                fmt(m["first_call_s"]),
                fmt(m["first_call_ratio"], ".2f") + ("x" if m["first_call_ratio"] else ""),
                fmt(m["process_s"]),
                fmt(m["process_ratio"], ".2f") + ("x" if m["process_ratio"] else ""),
            ]
            okf.append(f"{phase} {m['n_ok']}/{m['n_failed']}")
        cells.append(", ".join(okf))
        print("| " + " | ".join(cells) + " |")

    # Where the time goes (medians): helps read the ratios above.
    print(
        "\nbreakdown, medians (s): import = interpreter start to torch imported; exit = end of main to process gone; "
        "left after exit = processes of the child's session still running when it exited (most), and how long until "
        "the last was gone"
    )
    print(
        "\n| variant | phase | import | first forward | first call | exit | helper processes at end | left after "
        "exit | sandbox stages (sum over graphs) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        for phase in phases:
            ok = [r for r in runs.get((model, v, phase), []) if r["ok"]]
            if not ok:
                continue
            stages = ""
            if v.startswith("sandbox"):
                names = ("serialize", "wait_for_worker", "send", "compile_in_worker", "transfer", "load")
                stages = ", ".join(
                    f"{n} {fmt(median([r['stages_s'].get(n, 0.0) for r in ok]))}"
                    for n in names
                    if any(n in r["stages_s"] for r in ok)
                )
                ready = median(
                    [w["start_to_ready_s"] for r in ok for w in r["workers"] if w.get("start_to_ready_s") is not None]
                )
                if ready is not None:
                    stages = "; ".join(x for x in (stages, f"worker spawn to ready {fmt(ready)}") if x)
            print(
                f"| {v} | {phase} | {fmt(median([r['import_s'] for r in ok]))} | "
                f"{fmt(median([r['first_forward_s'] for r in ok]))} | "
                f"{fmt(median([r['first_call_s'] for r in ok]))} | {fmt(median([r['exit_s'] for r in ok]))} | "
                f"{max(r['helpers_at_end'] for r in ok)} | "
                f"{max(r.get('left_at_exit') or 0 for r in ok)}, "
                f"{fmt(median([r.get('lingering_after_exit_s') or 0.0 for r in ok]))} | "
                f"{stages or '-'} |"
            )
    return med


def overhead_summary(rows_by_variant: dict[str, list[dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = [t for r in rows_by_variant.get(BASELINE, []) if r["ok"] for t in r["fn_compile_s"]]
    base_med = median(base)
    base_models: dict[str, list[float]] = {}
    for r in rows_by_variant.get(BASELINE, []):
        if r["ok"]:
            for k, t in r["model_compile_s"].items():
                base_models.setdefault(k, []).append(t)
    for v, rows in rows_by_variant.items():
        ok = [r for r in rows if r["ok"]]
        fn = [t for r in ok for t in r["fn_compile_s"]]
        s: dict[str, Any] = {
            "n_ok": len(ok),
            "n_failed": len(rows) - len(ok),
            "fn_compile_median_s": median(fn),
            "fn_wall_delta_ms": None if median(fn) is None or base_med is None else (median(fn) - base_med) * 1000,
            "parent_rss_mib_idle": median([r["parent_rss_mib_idle"] for r in ok]),
            "parent_rss_mib_after": median([r["parent_rss_mib_after"] for r in ok]),
        }
        models: dict[str, list[float]] = {}
        for r in ok:
            for k, t in r["model_compile_s"].items():
                models.setdefault(k, []).append(t)
        s["model_compile_median_s"] = {k: median(t) for k, t in models.items()}
        s["model_wall_delta_ms"] = {
            k: (median(t) - median(base_models[k])) * 1000 for k, t in models.items() if base_models.get(k)
        }
        if v.startswith("sandbox"):
            ms = [x for r in ok for x in r["graph_overhead_ms"]]
            s["graph_overhead_median_ms"] = median(ms)
            s["graph_overhead_max_ms"] = max(ms) if ms else None
            s["graphs"] = len(ms)
            stage_names = ("serialize", "wait_for_worker", "send", "transfer", "load", "compile_in_worker")
            s["stage_median_ms"] = {
                n: median([g.get(n, 0.0) for r in ok for g in r["graph_stage_ms"]]) for n in stage_names
            }
            s["worker_idle_rss_mib"] = median([x for r in ok for x in r["worker_idle_rss_mib"]])
            s["worker_after_rss_mib"] = median([x for r in ok for x in r["worker_after_rss_mib"]])
        else:
            s["helpers_rss_mib_after"] = median([r["helpers_rss_mib_after"] for r in ok])
            s["helpers_after"] = max((len(r["helpers_after"]) for r in ok), default=0)
        out[v] = s
    return out


def print_overhead(summary: dict[str, Any]) -> None:
    print("\n### per graph, once the backend is up (FX graph and AOTAutograd caches off)\n")
    print(
        "| variant | small graph compile, median s | vs inductor, ms | zoo models, s (vs inductor, ms) | stage "
        "overhead per graph, median ms (max) | RSS parent idle / after, MiB | RSS helpers, MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for v, s in summary.items():
        models = ", ".join(
            f"{k} {fmt(t)} ({fmt(s['model_wall_delta_ms'].get(k), '+.0f')})"
            for k, t in s["model_compile_median_s"].items()
        )
        if v.startswith("sandbox"):
            ov = (
                f"{fmt(s['graph_overhead_median_ms'], '.1f')} ({fmt(s['graph_overhead_max_ms'], '.1f')}), "
                f"{s['graphs']} graphs"
            )
            helpers = (
                f"worker idle {fmt(s['worker_idle_rss_mib'], '.0f')}, "
                f"after jobs {fmt(s['worker_after_rss_mib'], '.0f')}"
            )
        else:
            ov = "-"
            helpers = (
                "-"
                if not s["helpers_after"]
                else f"{s['helpers_after']} process(es), {fmt(s['helpers_rss_mib_after'], '.0f')} after jobs"
            )
        print(
            f"| {v} | {fmt(s['fn_compile_median_s'], '.3f')} | {fmt(s['fn_wall_delta_ms'], '+.0f')} | {models} | "
            f"{ov} | "
            f"{fmt(s['parent_rss_mib_idle'], '.0f')} / {fmt(s['parent_rss_mib_after'], '.0f')} | {helpers} |"
        )
    sb = summary.get("sandbox")
    if sb:
        st = ", ".join(f"{k} {fmt(v, '.1f')}" for k, v in sb["stage_median_ms"].items())
        print(f"\nsandbox stage medians per graph (ms): {st}")


def judge(medians: dict[str, dict], overhead: dict | None, variants: list[str], phases: list[str]) -> list[dict]:
    results = []
    for model, med in medians.items():
        for v, phase, limit in RATIO_TARGETS:
            if v not in variants or phase not in phases or BASELINE not in variants:
                continue
            m = med[v][phase]
            for metric, label in (("first_call_ratio", "first call"), ("process_ratio", "process wall")):
                r = m.get(metric)
                status = "FAIL" if r is None or r > limit else "PASS"
                results.append(
                    {
                        "model": model,
                        "variant": v,
                        "phase": phase,
                        "metric": label,
                        "value": r,
                        "limit": limit,
                        "status": status,
                        "primary": metric == "first_call_ratio",
                        "note": "no data (no run finished)" if r is None else "",
                    }
                )
    if overhead is not None and "sandbox" in overhead:
        val = overhead["sandbox"].get("graph_overhead_median_ms")
        n = overhead["sandbox"].get("graphs") or 0
        results.append(
            {
                "model": "small graphs + zoo",
                "variant": "sandbox",
                "phase": "overhead",
                "metric": "stage overhead per graph, ms",
                "value": val,
                "limit": OVERHEAD_TARGET_MS,
                "status": "FAIL" if val is None or val > OVERHEAD_TARGET_MS else "PASS",
                "primary": True,
                "note": "no data (no isolated graph carried serialize/send/load stages)"
                if val is None
                else f"(median of {n} graphs)",
            }
        )
    return results


def print_targets(results: list[dict]) -> None:
    print("\n### targets\n")
    for t in results:
        val = fmt(t["value"], ".2f") + (
            "x" if t["phase"] != "overhead" and t["value"] is not None else " ms" if t["value"] is not None else ""
        )
        lim = f"{t['limit']:.2f}x" if t["phase"] != "overhead" else f"{t['limit']:.0f} ms"
        tag = "" if t["primary"] else "  (informational: whole-process wall time)"
        print(
            (
                f"{t['status']}  {t['model']}: {t['variant']} {t['phase']} {t['metric']} "
                f"{val} <= {lim}{tag} {t['note']}"
            ).rstrip()
        )


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="cold/warm repeats per variant (default 3)")
    ap.add_argument("--models", default="mlp", help="comma-separated zoo models (default mlp)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--steps", type=int, default=2, help="steps per cold/warm process (default 2)")
    ap.add_argument(
        "--warm-repeats",
        type=int,
        default=1,
        help="warm processes per cold one (default 1): a warm first call is ~2 s and spreads by tenths; "
        "more samples steady its median",
    )
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-cache processes")
    ap.add_argument("--no-overhead", action="store_true", help="skip the per-graph overhead and memory processes")
    ap.add_argument("--overhead-repeats", type=int, default=1, help="overhead processes per variant (default 1)")
    ap.add_argument(
        "--overhead-variants",
        default="inductor,sandbox",
        help="variants of the overhead/memory processes (default inductor,sandbox; add stock for its per-graph "
        "time and its helpers' memory)",
    )
    ap.add_argument(
        "--overhead-graphs", type=int, default=8, help="distinct small graphs per overhead process (default 8)"
    )
    ap.add_argument(
        "--overhead-models",
        default="mlp",
        help="zoo models trained one step in the overhead process (default mlp; '' for none)",
    )
    ap.add_argument(
        "--setup-s",
        type=float,
        default=0.0,
        help="seconds of simulated program set-up before the model is built (default 0)",
    )
    ap.add_argument(
        "--child-timeout", type=float, default=600.0, help="seconds before a child is killed and counted as failed"
    )
    ap.add_argument("--python", default=sys.executable, help="interpreter for the children (default: this one)")
    ap.add_argument("--keep-caches", action="store_true", help="keep the temporary cache dirs")
    ap.add_argument(
        "--cprofile",
        metavar="DIR",
        help="diagnostic: cProfile each cold/warm child from torch.compile to the end of its first step "
        "(DIR/MODEL-VARIANT-PHASE-REPEAT/parent.prof) and each job in the sandbox's worker "
        "(worker-PID-job-N.prof beside it); the profiler slows both, so the times are not comparable",
    )
    ap.add_argument("--out", help="write the JSON (raw numbers and each child's details) to this file")
    ap.add_argument(
        "--variant-env",
        action="append",
        default=[],
        metavar="BASE+TAG:VAR=VALUE[,VAR=VALUE]",
        help="an extra variant: BASE (one of the variants) with these environment variables, measured "
        "beside the others under the name BASE+TAG (repeatable), e.g. "
        "'sandbox+late_cuda:SANDBOX_WORKER_EARLY_CUDA=0'",
    )
    ap.add_argument(
        "--no-rotate",
        dest="rotate",
        action="store_false",
        help="visit the variants in the same order in every repeat and warm round "
        "(default: each starts one further on)",
    )
    ap.add_argument(
        "--settle-s", type=float, default=0.0, help="seconds of pause before each cold/warm child (default 0)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, mlp, cold only, no overhead")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=0.0,
        help="start no new child after this many seconds; report what was measured (default: no limit)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.models, args.no_warm, args.no_overhead = 1, "mlp", True, True
    args.models = [m for m in args.models.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    args.overhead_models = [m for m in args.overhead_models.split(",") if m]
    args.overhead_variants = [v for v in args.overhead_variants.split(",") if v and v != "sandbox_warmup"]
    args.extra_env = {}
    for item in args.variant_env:
        name, _, assignments = item.partition(":")
        base, plus, tag = name.partition("+")
        pairs = [a.split("=", 1) for a in assignments.split(",") if a]
        if base not in VARIANTS or not plus or not tag or not pairs or any(len(p) != 2 or not p[0] for p in pairs):
            ap.error(
                f"--variant-env {item!r}: expected BASE+TAG:VAR=VALUE[,VAR=VALUE] with BASE one of {list(VARIANTS)}"
            )
        args.extra_env[name] = dict(pairs)
        args.variants.append(name)
    bad = [v for v in args.variants + args.overhead_variants if v.partition("+")[0] not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, os.path.dirname(HERE))
    try:
        from sandbox import zoo  # noqa: E402 - only to validate names early

        names = set(zoo.ZOO) | set(zoo.BENCH)
    except ImportError:  # this interpreter lacks torch; the children will say what is wrong
        names = set(args.models + args.overhead_models)
    bad = [m for m in args.models + args.overhead_models if m not in names]
    if bad:
        print(f"unknown model(s) {bad}; the zoo has {sorted(names)}", file=sys.stderr)
        return 2
    if any(v.startswith("sandbox") for v in args.variants + args.overhead_variants) and not _sandbox_backend_registered(
        args.python
    ):
        print(
            f"backend 'sandbox' is not registered for {args.python} (no torch_dynamo_backends entry point): install "
            "the "
            f"package into that interpreter first, e.g. `{args.python} -m pip install --no-deps --no-build-isolation "
            "-e .`",
            file=sys.stderr,
        )
        return 2
    phases = ["cold"] if args.no_warm else ["cold", "warm"]
    t_start = time.time()
    workroot = tempfile.mkdtemp(prefix="compile-overhead-")
    print(
        f"# compile_overhead: models {args.models}, variants {args.variants}, device {args.device}, "
        f"repeats {args.repeats}, phases {phases}, overhead {'off' if args.no_overhead else 'on'}",
        flush=True,
    )
    print(f"# children: {args.python} {CHILD}; cache dirs under {workroot}", flush=True)
    if args.repeats < 3 and not args.quick:
        print("# note: fewer than 3 repeats; medians are not robust", flush=True)

    runs: dict[tuple, list[dict]] = {}
    children: list[dict] = []
    info: dict | None = None
    n_failed = 0
    stopped = None

    def out_of_time() -> bool:
        nonlocal stopped
        if args.budget_s and not stopped and time.time() - t_start > args.budget_s:
            stopped = (
                f"stopped after {time.time() - t_start:.0f} s (--budget-s {args.budget_s:g}); later children not run"
            )
            print(f"# {stopped}", flush=True)
        return stopped is not None

    def run_one(rep: int, model: str, variant: str, phase: str, env: dict[str, str], cache_root: str) -> bool:
        nonlocal info, n_failed
        base = variant.partition("+")[0]
        spec = {
            "kind": "step",
            "variant": base,
            "model": model,
            "device": args.device,
            "steps": args.steps,
            "setup_s": args.setup_s,
            "phase": phase,
        }
        if args.cprofile:
            n = len(runs.get((model, variant, phase), []))
            spec["cprofile"] = os.path.join(args.cprofile, f"{model}-{variant}-{phase}-{n}")
            env = dict(env, SANDBOX_WORKER_CPROFILE=spec["cprofile"])
        if args.settle_s:
            time.sleep(args.settle_s)  # the last child's exit (its GPU context, its helpers) settles
        rec = run_child(args.python, spec, env, args.child_timeout, workroot)
        row = summarize_step(rec, variant, phase)
        row.update(model=model, variant=variant, phase=phase, repeat=rep, cache_files=_count_files(cache_root))
        runs.setdefault((model, variant, phase), []).append(row)
        children.append({"model": model, "variant": variant, "phase": phase, "repeat": rep, **rec})
        label = f"[{rep + 1}/{args.repeats}] {model:<12} {variant:<15} {phase:<4}"
        if row["ok"]:
            info = info or rec["result"].get("info")
            print(
                f"{label} first call {row['first_call_s']:7.2f} s  process {row['process_s']:7.2f} s  "
                f"graphs {row['outcomes'] or '-'}  cache misses {row['cache_misses']}  "
                f"load {row['loadavg_1m_before']:.1f}  cache files {row['cache_files']}"
                + (
                    f"  left {row['left_at_exit']} for {row['lingering_after_exit_s']:.2f} s"
                    if row.get("left_at_exit")
                    else ""
                )
                + (f"  !! {row['caveat']}" if row.get("caveat") else ""),
                flush=True,
            )
            return True
        n_failed += 1
        _report_failure(label, {**rec, "error": row.get("error") or rec.get("error")})
        return False

    try:
        for rep in range(args.repeats):
            for model in args.models:
                # ABCD BCDA CDAB ...: each repeat visits every variant once, each repeat one
                # place further on, so no variant always runs right after the same other one.
                order = (
                    args.variants[rep % len(args.variants) :] + args.variants[: rep % len(args.variants)]
                    if args.rotate
                    else args.variants
                )
                # Cold first, one process per variant; then the warm processes, one round at a
                # time, each round visiting every variant once (one place further on each round):
                # a drift of the machine's speed over a block of processes then lands on every
                # variant alike, and no variant's warm processes run back to back.
                roots: dict[str, str] = {}
                envs: dict[str, dict[str, str]] = {}
                for variant in order:
                    if out_of_time():
                        break
                    roots[variant] = os.path.join(workroot, f"{model}-{variant}-{rep}")
                    os.makedirs(roots[variant])
                    envs[variant] = dict(
                        child_env(variant.partition("+")[0], roots[variant], args.device),
                        **args.extra_env.get(variant, {}),
                    )
                    if not run_one(rep, model, variant, "cold", envs[variant], roots[variant]):
                        del envs[variant]  # no warm run on a cache a failed cold run left behind
                rounds = args.warm_repeats if "warm" in phases else 0
                live = [v for v in order if v in envs]  # those whose cold process succeeded
                for rnd in range(rounds):
                    turn = rnd % len(live) if live and args.rotate else 0
                    for variant in live[turn:] + live[:turn]:
                        if out_of_time():
                            break
                        run_one(rep, model, variant, "warm", envs[variant], roots[variant])
                if not args.keep_caches:
                    for root in roots.values():
                        shutil.rmtree(root, ignore_errors=True)

        overhead_rows: dict[str, list[dict]] = {}
        if not args.no_overhead:
            ov_variants = args.overhead_variants
            for rep in range(args.overhead_repeats):
                for variant in ov_variants:
                    if out_of_time():
                        break
                    cache_root = os.path.join(workroot, f"overhead-{variant}-{rep}")
                    os.makedirs(cache_root)
                    env = child_env(variant, cache_root, args.device, caches_off=True)
                    spec = {
                        "kind": "overhead",
                        "variant": variant,
                        "device": args.device,
                        "graphs": args.overhead_graphs,
                        "warmup_graphs": 2,
                        "overhead_models": args.overhead_models,
                    }
                    rec = run_child(args.python, spec, env, args.child_timeout, workroot)
                    row = summarize_overhead(rec, variant)
                    row.update(variant=variant, repeat=rep)
                    overhead_rows.setdefault(variant, []).append(row)
                    children.append({"variant": variant, "phase": "overhead", "repeat": rep, **rec})
                    label = f"[{rep + 1}/{args.overhead_repeats}] overhead     {variant:<15}"
                    if row["ok"]:
                        info = info or rec["result"].get("info")
                        extra = ""
                        if variant.startswith("sandbox"):
                            overhead_ms = row["graph_overhead_ms"]
                            extra = (
                                f"  stage overhead median {fmt(median(overhead_ms), '.1f')} ms "
                                f"over {len(overhead_ms)} graphs"
                            )
                        print(
                            f"{label} small graphs median {fmt(median(row['fn_compile_s']), '.3f')} s{extra}  "
                            f"process {row['process_s']:.1f} s"
                            + (f"  !! {row['caveat']}" if row.get("caveat") else ""),
                            flush=True,
                        )
                    else:
                        n_failed += 1
                        _report_failure(label, {**rec, "error": row.get("error") or rec.get("error")})
                    if not args.keep_caches:
                        shutil.rmtree(cache_root, ignore_errors=True)
    finally:
        if not args.keep_caches:
            shutil.rmtree(workroot, ignore_errors=True)

    wall = time.time() - t_start
    print("\n## results\n")
    if info:
        desc = info.get("device_name")
        print(
            f"device: {args.device} - {desc}; cpu cores {info.get('cpu_count')} (affinity {info.get('affinity')}); "
            f"torch {info.get('torch')}"
            + (f", triton {info.get('triton')}" if info.get("triton") else "")
            + f"; python {info.get('python')}"
        )
    else:
        print(f"device: {args.device} - unknown (no child succeeded)")
    print(
        "cold/warm: medians over repeats; 'first call' = just before torch.compile to the end of the first training "
        "step; "
        "'process' = whole child process, spawn to exit; ratios vs in-process inductor."
    )
    medians = {model: print_step_table(model, runs, args.variants, phases) for model in args.models}
    overhead = None
    if not args.no_overhead:
        overhead = overhead_summary(overhead_rows)
        print_overhead(overhead)
    targets = judge(medians, overhead, args.variants, phases)
    print_targets(targets)
    caveats = [
        f"{r['model']} {r['variant']} {r['phase']} #{r['repeat']}: {r['caveat']}"
        for rows in runs.values()
        for r in rows
        if r.get("caveat")
    ]
    if caveats:
        print("\ncaveats:\n" + "\n".join("  " + c for c in caveats))
    loads = [r["loadavg_1m_before"] for rows in runs.values() for r in rows]
    if loads and max(loads) > (info or {}).get("cpu_count", 2) * 0.75 + 0.5:
        print(
            f"\nnote: 1-minute load average before children ranged {min(loads):.1f}-{max(loads):.1f} "
            f"on {(info or {}).get('cpu_count')} cores: other work shared the CPU; alternating order spreads it "
            "across variants"
        )
    if stopped:
        print(f"\n{stopped}")
    print(f"\nchildren failed: {n_failed}; wall time {wall:.0f} s")

    raw = {
        "args": {k: v for k, v in vars(args).items()},
        "info": info,
        "wall_s": wall,
        "stopped": stopped,
        "failed_children": n_failed,
        "medians": medians,
        "overhead": overhead,
        "targets": targets,
        "runs": [r for rows in runs.values() for r in rows],
        "overhead_runs": [r for rows in (overhead_rows if not args.no_overhead else {}).values() for r in rows],
    }
    print("\n```json")
    print(json.dumps(raw, default=str, sort_keys=True))
    print("```")
    if args.out:
        full = dict(raw, children=[{k: v for k, v in c.items()} for c in children])
        with open(args.out, "w") as f:
            json.dump(full, f, default=str, indent=1, sort_keys=True)
        print(f"wrote {args.out}")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())

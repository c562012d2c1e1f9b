#!/usr/bin/env python
"""What a torchrun job's compile costs the host: in-process Inductor against the sandbox.

Each run is a real ``torchrun --standalone --nproc-per-node N`` job (``_job_rank.py``: two
transformer blocks, one training step over gloo, gradients all-reduced) on fresh, empty
Inductor and Triton caches and a fresh compile-service folder. Variants alternate within each
repeat (one place further on each repeat); medians are printed.

Variants
  eager        no compile: the job's own CPU (imports, rendezvous, the step), subtracted below
  inductor     torch.compile(backend="inductor"): every rank compiles in its own process
  sandbox      backend="sandbox" as a job gets it: the ranks of the host share one compile
               service (one pool of workers), and a graph several ranks need compiles once
  sandbox_off  backend="sandbox" with SANDBOX_SERVICE=off: each rank its own worker

Measurements
  CPU s          CPU-seconds of every process of the job, torchrun, ranks, workers, the service
                 and the compilers they ran, to the last one's exit: the bench is their child
                 subreaper, so orphans (a service outliving its last rank) are counted too
  compile CPU s  CPU s less eager's median for the same number of ranks
  first step     seconds from the job's launch to the end of the slowest rank's first step
  sandbox RSS    the largest sum, over 0.2 s samples, of the resident memory of the sandbox's
                 Python processes (service, workers, their compile pools), against one idle
                 worker's (``sandbox.warmup(wait=True)`` in a lone process, measured the same way);
                 the C++ compilers and instruction-set probes they run are shown apart
                 ("compilers": in-process Inductor runs the same); judged by the sum of their
                 proportional set sizes (PSS), which counts a page shared by a compile pool's
                 forked processes once
  compiles       graphs compiled on the host (reports whose single_flight role is not
                 "waited"); waited: graphs a rank got from another rank's compile

Targets: the sandbox's compile CPU s with N > 1 ranks <= 1.2x its own with 1 rank; its RSS
<= 1.5x one idle worker's; its slowest first step <= 0.5x in-process with 8 ranks or more, and
no worse than in-process (<= 1.0x) with fewer. ``--two-hosts`` runs two jobs at once as two
hosts (separate caches and services) sharing one Redis with Inductor's FX graph remote cache
on: target, no graph compiled on both.

Usage
  python bench/job_compile.py                         # 1 and 2 ranks, 3 repeats (~15 min on 2 cores)
  python bench/job_compile.py --ranks 1,8 --repeats 1 --variants eager,inductor,sandbox
  python bench/job_compile.py --two-hosts --ranks 2 --repeats 1 --variants inductor,sandbox
  python bench/job_compile.py --device cuda --ranks 2   # ranks share the GPU(s) there are
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from _paths import checkout_first  # bench/, the script's own folder, is first on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("eager", "inductor", "sandbox", "sandbox_off")
SANDBOX_CMDS = ("sandbox.isolation.worker", "sandbox.isolation.service")
PR_SET_CHILD_SUBREAPER = 36
TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.2


# --- processes ---------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command line, its own CPU seconds so far) for every process visible now."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(name)] = (int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


# What each process of a job is, by its command line: the first match names it.
KINDS = (
    ("_job_rank.py", "ranks"),
    ("sandbox.isolation.worker", "workers"),
    ("sandbox.isolation.service", "service"),
    ("compile_worker", "compile pools"),
    ("torch.distributed.run", "torchrun"),
    ("cdll.LoadLibrary", "ISA probes"),  # Inductor's CPU instruction-set checks: one process per check
)
COMPILERS = ("cc1plus", "g++", "g++-real", "gcc", "c++", "cc1", "collect2", "ld", "as")


def _kind(cmd: str) -> str:
    program = os.path.basename(cmd.split(" ", 1)[0])
    if program in COMPILERS:
        return "C++ compilers"
    return next((kind for part, kind in KINDS if part in cmd), "other")


def _children(table: dict[int, tuple[int, str, float]]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    return children


def _descendants(children: dict[int, list[int]], root: int) -> set[int]:
    ours, stack = set(), [root]
    while stack:
        for c in children.get(stack.pop(), []):
            ours.add(c)
            stack.append(c)
    return ours


def _kb(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sandbox_memory(
    root: int, table: dict[int, tuple[int, str, float]] | None = None
) -> tuple[float, float, float, list[str]]:
    """(RSS MiB, PSS MiB, the rest's RSS MiB, one line per process) of the sandbox's processes
    below ``root``: every service and worker and their compile pools. What they run for a
    moment (C++ compilers, Inductor's instruction-set probes) counts apart: in-process Inductor
    runs the same."""
    table = _proc_table() if table is None else table
    children = _children(table)
    ours = _descendants(children, root)
    picked, stack = set(), [p for p in ours if any(c in table[p][1] for c in SANDBOX_CMDS)]
    while stack:
        p = stack.pop()
        if p not in picked:
            picked.add(p)
            stack.extend(children.get(p, []))
    rss = {p: _kb(f"/proc/{p}/status", "VmRSS:") for p in picked}
    python = {p for p in picked if any(c in table[p][1] for c in (*SANDBOX_CMDS, "compile_worker"))}
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in python)
    lines = [f"{rss[p] / 1024:.0f} MiB {table[p][1][:100]}" for p in sorted(picked)]
    own = sum(rss[p] for p in python) / 1024
    return own, pss / 1024, sum(rss[p] for p in picked - python) / 1024, lines


class Sampler:
    """The peak of the sandbox's memory below this process, and each process's CPU seconds by
    its kind as last seen (where a job's CPU goes: a process that lived less than a sample's
    interval is not seen, and its seconds show only in the job's total), sampled until stopped."""

    def __init__(self) -> None:
        self.rss = self.pss = self.compilers = 0.0
        self.procs: list[str] = []
        self.cpu: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            table = _proc_table()
            for pid in _descendants(_children(table), os.getpid()):
                kind = _kind(table[pid][1])
                if kind == "other" and pid in self.cpu:  # an exited process's command line is empty
                    kind = self.cpu[pid][0]
                self.cpu[pid] = (kind, table[pid][2])
            rss, pss, compilers, lines = sandbox_memory(os.getpid(), table)
            self.compilers = max(self.compilers, compilers)
            if rss > self.rss:
                self.rss, self.pss, self.procs = rss, pss, lines

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {
            "rss_mb": round(self.rss, 1),
            "pss_mb": round(self.pss, 1),
            "compilers_mb": round(self.compilers, 1),
            "sandbox_procs": self.procs,
            "cpu_by_kind": self.cpu_by_kind(),
        }

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, cpu in self.cpu.values():
            out[kind] = out.get(kind, 0.0) + cpu
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def _children_cpu() -> float:
    import resource  # Unix only, as is the rest of the bench

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


KEEP: set[int] = set()  # children that outlive the jobs (the Redis of --two-hosts)


def reap_all(limit_s: float) -> int:
    """Wait for every descendant left (orphans come to this subreaper) but ``KEEP``; kill what
    is left after ``limit_s`` and return how many there were."""
    deadline = time.time() + limit_s
    left = 0
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return left
        mine = [p for p, (ppid, _, _) in _proc_table().items() if ppid == os.getpid() and p not in KEEP]
        if not mine:
            return left
        if time.time() > deadline:
            left = max(left, len(mine))
            for p in mine:
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)


# --- one job -------------------------------------------------------------------------------------


def _env(variant: str, folder: str, spec: dict[str, Any], extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHINDUCTOR_", "SANDBOX_", "TRITON_"))}
    env.update(
        PYTHONPATH=checkout_first(os.environ.get("PYTHONPATH"), HERE),
        TORCHINDUCTOR_CACHE_DIR=os.path.join(folder, "inductor"),
        TRITON_CACHE_DIR=os.path.join(folder, "triton"),
        SANDBOX_STORE=os.path.join(folder, "runs.sqlite"),
        SANDBOX_SERVICE_DIR=os.path.join(folder, "services"),
        SANDBOX_SERVICE_GRACE_S="1",
        JOB_BENCH_SPEC=json.dumps(spec),
    )
    env.update(extra)
    if variant == "sandbox_off":
        env["SANDBOX_SERVICE"] = "off"
    return env


def run_job(args: argparse.Namespace, variant: str, ranks: int, hosts: int, redis_port: int | None) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix=f"job-{variant}-{ranks}-")
    procs, outs = [], []
    extra = {}
    if redis_port is not None:
        extra = {
            "TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE": "1",
            "TORCHINDUCTOR_REDIS_HOST": "127.0.0.1",
            "TORCHINDUCTOR_REDIS_PORT": str(redis_port),
        }
    cpu0 = _children_cpu()
    sampler = Sampler()
    t0 = time.time()
    for h in range(hosts):
        folder = os.path.join(root, f"host{h}")
        out = os.path.join(folder, "out")
        os.makedirs(out)
        spec = {
            "variant": variant,
            "device": args.device,
            "d": args.d,
            "heads": args.heads,
            "batch": args.batch,
            "seq": args.seq,
            "out": out,
        }
        env = _env(variant, folder, spec, {**extra, "JOB_BENCH_T0": repr(t0)})
        cmd = [args.python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
        log = open(os.path.join(folder, "torchrun.log"), "wb")  # noqa: SIM115 - closed after the wait
        procs.append(
            (subprocess.Popen([*cmd, os.path.join(HERE, "_job_rank.py")], env=env, stdout=log, stderr=log), log)
        )
        outs.append(out)
    rcs = []
    for p, log in procs:
        try:
            rcs.append(p.wait(args.job_timeout_s))
        except subprocess.TimeoutExpired:
            p.kill()
            rcs.append(p.wait())
        log.close()
    wall = time.time() - t0
    left = reap_all(args.grace_limit_s)
    memory = sampler.stop()
    cpu = _children_cpu() - cpu0
    row: dict[str, Any] = {"variant": variant, "ranks": ranks, "hosts": hosts, "wall_s": round(wall, 2)}
    row.update(cpu_s=round(cpu, 2), left=left, **memory)
    results = []
    for h, out in enumerate(outs):
        for r in range(ranks):
            path = os.path.join(out, f"rank-{r}.json")
            if os.path.exists(path):
                with open(path) as f:
                    results.append({**json.load(f), "host": h})
    if len(results) < ranks * hosts or any(rcs):
        tails = []
        for h in range(hosts):
            with open(os.path.join(root, f"host{h}", "torchrun.log"), errors="replace") as f:
                tails.append(f.read()[-3000:])
        row["error"] = f"exit codes {rcs}, {len(results)} of {ranks * hosts} ranks reported\n" + "\n".join(tails)
    if results:
        row["first_step_s"] = round(max(r["first_step_s"] for r in results), 2)
    graphs = [{**g, "host": r["host"], "rank": r["rank"]} for r in results for g in r["graphs"]]
    if variant.startswith("sandbox"):
        row["compiles"] = sum(1 for g in graphs if g["role"] != "waited" and g["outcome"] != "cache_hit")
        row["waited"] = sum(1 for g in graphs if g["role"] == "waited")
        row["cache_hits"] = sum(1 for g in graphs if g["outcome"] == "cache_hit")
        row["roles"] = sorted(
            {f"{g['role']}/{g['via']}" + (f"/lease {g['lease']}" if g["lease"] else "") for g in graphs}
        )
        by_key: dict[str, set[int]] = {}
        for g in graphs:
            if g["role"] != "waited" and g["outcome"] != "cache_hit" and g["key"]:
                by_key.setdefault(g["key"], set()).add(g["host"])
        row["compiled_on_both_hosts"] = sum(1 for hs in by_key.values() if len(hs) > 1)
        row["alone_reasons"] = sorted({g["reason"] for g in graphs if g["role"] == "alone" and g["reason"]})
    if args.keep:
        row["folder"] = root
    else:
        shutil.rmtree(root, ignore_errors=True)
    return row


def idle_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One idle, warmed worker's memory: the yardstick of the RSS target."""
    code = (
        "import sys, sandbox; sandbox.warmup(workers=1, wait=True, timeout=300);"
        "print('ready', flush=True); sys.stdin.read()"
    )
    folder = tempfile.mkdtemp(prefix="job-idle-")
    # As warm as a worker gets before its first job: on a GPU machine warmup() would start CUDA
    # and a compile pool too, which the CPU ranks' graphs never need.
    extra = {"SANDBOX_SERVICE": "off", "SANDBOX_STORE": "off", "SANDBOX_WORKER_GPU_WARMUP": "job"}
    env = _env("sandbox", folder, {}, extra)
    p = subprocess.Popen([args.python, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdin is not None
    ready = p.stdout.readline().strip() == "ready"
    time.sleep(2.0)  # the worker settled after its warm-up
    rss, pss, _, n = sandbox_memory(os.getpid())
    p.stdin.close()
    p.wait(60)
    reap_all(args.grace_limit_s)
    shutil.rmtree(folder, ignore_errors=True)
    if not ready or not n:
        return {"error": "the worker never became ready"}
    return {"rss_mb": round(rss, 1), "pss_mb": round(pss, 1), "sandbox_procs": n}


# --- the tables ----------------------------------------------------------------------------------


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None and not r.get("error")]
    return statistics.median(values) if values else None


def _fmt(x: float | None, unit: str = "") -> str:
    return "not reached" if x is None else f"{x:.2f}{unit}"


def summarize(result: dict[str, Any]) -> bool:
    """Print the medians and the targets; True when every target was met."""
    rows, idle = result["rows"], result.get("idle") or []
    ok = True
    head = ["ranks", "hosts", "variant", "runs", "CPU s", "compile CPU s", "slowest first step s"]
    head += ["sandbox RSS MiB (PSS)", "compilers MiB", "compiles / waited"]
    print("\n| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["ranks"], r["hosts"], r["variant"]), []).append(r)
    med: dict[tuple[int, int, str], dict[str, float | None]] = {}
    for (n, h, v), rs in sorted(groups.items()):
        eager = _median(groups.get((n, h, "eager"), []), "cpu_s")
        cpu = _median(rs, "cpu_s")
        m = {
            "cpu": cpu,
            "compile_cpu": None if cpu is None or eager is None or v == "eager" else cpu - eager,
            "first": _median(rs, "first_step_s"),
            "rss": _median(rs, "rss_mb"),
            "pss": _median(rs, "pss_mb"),
            "compilers": _median(rs, "compilers_mb"),
        }
        med[(n, h, v)] = m
        flights = "-"
        if v.startswith("sandbox"):
            flights = " ".join(f"{r.get('compiles')}/{r.get('waited')}" for r in rs)
        errors = sum(1 for r in rs if r.get("error"))
        memory = "-" if not m["rss"] else f"{m['rss']:.0f} ({m['pss']:.0f})"
        print(
            f"| {n} | {h} | {v} | {len(rs)}{f' ({errors} failed)' if errors else ''} | {_fmt(m['cpu'])} | "
            f"{_fmt(m['compile_cpu'])} | {_fmt(m['first'])} | {memory} | {m['compilers'] or 0:.0f} | {flights} |"
        )
    print("\nCPU s by process kind, as last sampled (short-lived processes only in the total):")
    for r in rows:
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("cpu_by_kind") or {}).items())
        print(f"  {r['ranks']} rank(s) x{r['hosts']} {r['variant']}: total {r['cpu_s']:.1f}; {kinds or 'none seen'}")
    for r in rows:
        if r.get("error"):
            print(f"\nfailed: {r['variant']} x{r['ranks']}: {r['error'][:2000]}")
    idle_rss = (
        statistics.median([i["rss_mb"] for i in idle if "rss_mb" in i]) if any("rss_mb" in i for i in idle) else None
    )
    print(f"\nidle worker: RSS {_fmt(idle_rss, ' MiB')} ({len(idle)} measured)")
    print("\ntargets:")

    def judge(label: str, value: float | None, limit: float) -> None:
        nonlocal ok
        met = value is not None and value <= limit
        ok = ok and met
        print(f"  {label}: {_fmt(value, 'x')} (<= {limit}x): {'met' if met else 'NOT MET'}")

    asked = result.get("args") or {}
    if "sandbox" in str(asked.get("variants", "")).split(","):
        for n in (int(x) for x in str(asked.get("ranks", "")).split(",") if x.strip()):
            if (n, 1, "sandbox") not in med:
                judge(f"sandbox, {n} rank(s), every target (no job ran)", None, 1.0)
    for (n, h, v), m in sorted(med.items()):
        if v != "sandbox" or h != 1:
            continue
        alone = med.get((1, 1, "sandbox"), {}).get("compile_cpu")
        if n > 1 and alone:
            judge(
                f"sandbox compile CPU s, {n} ranks / 1 rank",
                None if m["compile_cpu"] is None else m["compile_cpu"] / alone,
                1.2,
            )
            ind, ind1 = (
                med.get((n, 1, "inductor"), {}).get("compile_cpu"),
                med.get((1, 1, "inductor"), {}).get("compile_cpu"),
            )
            if ind is not None and ind1:
                print(f"    (in-process Inductor, {n} ranks / 1 rank: {ind / ind1:.2f}x)")
        if idle_rss:
            # PSS: a compile pool's forked processes share most of their pages, which RSS counts once each.
            judge(
                f"sandbox memory (PSS), {n} rank(s) / one idle worker's RSS",
                None if m["pss"] is None else m["pss"] / idle_rss,
                1.5,
            )
        base = med.get((n, 1, "inductor"), {}).get("first")
        if base:
            limit = 0.5 if n >= 8 else 1.0
            judge(
                f"slowest first step, {n} rank(s), sandbox / in-process",
                None if m["first"] is None else m["first"] / base,
                limit,
            )
    for r in rows:
        if r["hosts"] > 1 and r["variant"].startswith("sandbox"):
            both = r.get("compiled_on_both_hosts")
            met = both == 0 and not r.get("error")
            ok = ok and met
            print(
                f"  two hosts, {r['ranks']} ranks each, {r['variant']}: graphs compiled on both hosts "
                f"{'not reached' if both is None else both} (roles {', '.join(r.get('roles') or [])}): "
                f"{'met' if met else 'NOT MET'}"
            )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2", help="comma-separated numbers of ranks (default 1,2)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument(
        "--two-hosts", action="store_true", help="also run each sandbox/inductor job as two hosts sharing one Redis"
    )
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--job-timeout-s", type=float, default=900.0)
    ap.add_argument("--grace-limit-s", type=float, default=30.0, help="how long to wait for processes a job left")
    ap.add_argument("--budget-s", type=float, default=None, help="start no new job after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep each job's folder (caches, store, logs)")
    ap.add_argument("--out", help="write every row as JSON here")
    ap.add_argument("--summarize", metavar="JSON", help="print the tables of a saved run")
    args = ap.parse_args()
    if args.summarize:
        with open(args.summarize) as f:
            return 0 if summarize(json.load(f)) else 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("job_compile: cannot become the jobs' subreaper; orphans' CPU would be lost", file=sys.stderr)
        return 2
    ranks = [int(n) for n in args.ranks.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    redis = None
    redis_port = None
    if args.two_hosts:
        import socket  # only for the Redis of --two-hosts

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            redis_port = s.getsockname()[1]
        redis_dir = tempfile.mkdtemp(prefix="job-redis-")
        redis = subprocess.Popen(
            [args.redis_server, "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", redis_dir, "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        KEEP.add(redis.pid)
        deadline = time.time() + 20
        while True:  # up once it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", redis_port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or redis.poll() is not None:
                    print("job_compile: redis-server did not start", file=sys.stderr)
                    return 2
                time.sleep(0.1)
    result: dict[str, Any] = {"args": vars(args), "rows": [], "idle": []}
    start = time.time()
    try:
        for rep in range(args.repeats):
            if any(v.startswith("sandbox") for v in variants):
                result["idle"].append(idle_worker(args))
            plan = [(n, 1) for n in ranks]
            if args.two_hosts:
                plan += [(n, 2) for n in ranks]
            for n, hosts in plan:
                order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
                for v in order:
                    if hosts > 1 and v not in ("inductor", "sandbox"):
                        continue
                    if args.budget_s is not None and time.time() - start > args.budget_s:
                        print(f"budget of {args.budget_s:.0f} s spent: no new job", flush=True)
                        raise StopIteration
                    row = run_job(args, v, n, hosts, redis_port if hosts > 1 else None)
                    result["rows"].append(row)
                    print(json.dumps({k: v for k, v in row.items() if k not in ("error", "sandbox_procs")}), flush=True)
                    if args.out:
                        with open(args.out, "w") as f:
                            json.dump(result, f, indent=1)
    except StopIteration:
        pass
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
    return 0 if summarize(result) else 1


if __name__ == "__main__":
    sys.exit(main())

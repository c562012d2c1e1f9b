"""The process boundary: what crosses it (custom ops), the pool's life (pre-start,
parallel compiles, forks, the parent's death, exit) and the caches it shares.

Each scenario runs in a fresh process (``tests/helpers/script_*.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import HELPERS, MARK, kill_quietly, pid_alive, run_script, script_env, wait_gone

# --- what crosses ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def coverage(module_cache_dir) -> dict:
    return run_script("script_coverage.py", cache_dir=module_cache_dir)


def test_custom_op_from_importable_module_is_isolated(coverage) -> None:
    assert coverage["importable_correct"] is True
    (report,) = coverage["importable"]
    assert report["outcome"] == "isolated", report["reason"]
    assert report["worker_pid"] not in (None, coverage["pid"])


def test_custom_op_from_main_compiles_in_process_with_reason(coverage) -> None:
    assert coverage["main_correct"] is True
    (report,) = coverage["main"]
    assert report["outcome"] == "in_process"
    assert report["worker_pid"] is None
    reason = report["reason"] or ""
    assert "sandbox_tests_main::shifted_relu" in reason and "__main__" in reason, reason


def test_custom_op_from_main_with_unpicklable_error_raises(coverage) -> None:
    raised = coverage["strict_raised"]
    assert raised is not None, "unpicklable='error' did not raise"
    assert coverage["strict_is_unpicklable_error"] is True, raised["chain"]
    assert coverage["strict_raised_itself"] is True, raised["chain"]  # not wrapped in dynamo's BackendCompilerFailed
    assert "sandbox_tests_main::shifted_relu" in raised["message"]
    assert "uses_main_op_strict" in raised["message"]  # names the graph's code
    (report,) = coverage["strict"]
    assert report["outcome"] == "failed" and report["fallback"] is None
    assert report["failure"]["kind"] == "error"


def test_coverage_workers_end_with_their_process(coverage) -> None:
    assert wait_gone(coverage["pool_processes"], within=5) == []


# --- pre-start and parallel compiles -----------------------------------------------


@pytest.fixture(scope="module")
def threads(module_cache_dir) -> dict:
    return run_script("script_threads.py", cache_dir=module_cache_dir)


def test_warmup_wait_makes_workers_ready(threads) -> None:
    workers = threads["workers_after_warmup"]
    assert len(workers) == 2
    assert all(w["ready"] and w["alive"] for w in workers), workers
    assert len({w["pid"] for w in workers}) == 2
    assert all(w["rss_bytes"] > 0 for w in workers)
    # A CPU machine: the warm-up ran in the idle scheduling class (GPU machines: nice, tests/gpu).
    assert [w["warm_up_priority"] for w in workers] == ["idle", "idle"], workers


def _stage(report: dict, name: str) -> dict:
    matches = [s for s in report["stages"] if s["name"] == name]
    assert len(matches) == 1, [s["name"] for s in report["stages"]]
    return matches[0]


def test_two_threads_compile_in_parallel_in_two_workers(threads) -> None:
    assert threads["correct"] == {"wide": True, "deep": True}
    reports = threads["reports"]
    assert [r["outcome"] for r in reports] == ["isolated", "isolated"], [(r["outcome"], r["failure"]) for r in reports]
    a, b = reports
    assert a["worker_pid"] != b["worker_pid"]
    assert {a["worker_pid"], b["worker_pid"]} == {w["pid"] for w in threads["workers_after_warmup"]}
    sa, sb = _stage(a, "compile_in_worker"), _stage(b, "compile_in_worker")
    overlap = min(sa["end"], sb["end"]) - max(sa["start"], sb["start"])
    assert overlap > 0, (sa, sb)
    # Other stages the report promises.
    for r in reports:
        names = [s["name"] for s in r["stages"]]
        for name in ("serialize", "wait_for_worker", "send", "compile_in_worker", "transfer", "load"):
            assert name in names, (name, names)


def test_thread_workers_end_with_their_process(threads) -> None:
    assert wait_gone(threads["pool_processes"], within=5) == []


# --- forks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fork(module_cache_dir) -> dict:
    return run_script("script_fork.py", cache_dir=module_cache_dir)


def test_forked_child_sees_no_workers_and_leaves_the_pool_alone(fork) -> None:
    (first,) = fork["first"]["reports"]
    assert first["outcome"] == "isolated"
    worker = first["worker_pid"]
    assert fork["fork_child"]["workers"] == []
    assert fork["fork_child"]["pid"] != fork["pid"]
    assert fork["fork_child_exit"] == 0
    # After the child exited through sys.exit (atexit ran there), the parent's worker
    # is still alive and compiles the next graph.
    after = fork["after_fork"]
    assert after["correct"] is True
    assert [(r["outcome"], r["worker_pid"]) for r in after["reports"]] == [("isolated", worker)]
    assert [w["pid"] for w in after["workers"]] == [worker] and after["workers"][0]["alive"]


def test_dataloader_fork_worker_sees_no_workers_and_leaves_the_pool_alone(fork) -> None:
    worker = fork["first"]["reports"][0]["worker_pid"]
    items = fork["dataloader"]
    assert len(items) == 2
    assert all(item["workers"] == [] for item in items)
    assert all(item["pid"] != fork["pid"] for item in items)
    after = fork["after_dataloader"]
    assert after["correct"] is True
    assert [(r["outcome"], r["worker_pid"]) for r in after["reports"]] == [("isolated", worker)]
    assert after["workers"][0]["jobs"] == 3


def test_fork_workers_end_with_their_process(fork) -> None:
    assert wait_gone(fork["pool_processes"], within=5) == []


# --- the parent's death ------------------------------------------------------------------


def test_no_worker_outlives_a_parent_killed_with_sigkill(cache_dir) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "script_parent_killed.py")],
        cwd=str(HELPERS),
        env=script_env(cache_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    result = None
    pool: list[int] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(MARK):
                result = json.loads(line[len(MARK) :])
                break
        assert result is not None, f"no result from the parent (rc {proc.poll()}):\n{proc.stderr.read()[-4000:]}"
        workers = result["workers"]
        pool = result["pool_processes"]
        assert len(workers) == 2 and all(w["ready"] for w in workers), workers
        assert all(pid_alive(p) for p in pool)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        left = wait_gone(pool, within=5)
        assert left == [], f"processes of the pool outlived their SIGKILLed parent: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_quietly([p for p in pool if pid_alive(p)])  # never leave strays behind, even on failure


# --- caches ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caches(module_cache_dir, tmp_path_factory) -> dict:
    fresh_parent = tmp_path_factory.mktemp("fresh-cache-parent")
    result = run_script("script_caches.py", str(fresh_parent), cache_dir=module_cache_dir)
    result["fresh_parent"] = str(fresh_parent)
    return result


def _job_lines(caches: dict) -> dict[int, str]:
    (report,) = caches["crash"]["reports"]
    assert report["outcome"] == "failed", report
    lines = {}
    for line in report["failure"]["log_tail"]:
        if "] job " in line:
            n = int(line.split("] job ", 1)[1].split(":", 1)[0])
            lines[n] = line
    return lines


def test_compiles_around_cache_clears_succeed_isolated(caches) -> None:
    pids = set()
    for name in ("f1", "f2", "f3", "f4", "f5"):
        step = caches[name]
        assert step["correct"] is True, name
        assert [r["outcome"] for r in step["reports"]] == ["isolated"], (name, step["reports"])
        pids.add(step["reports"][0]["worker_pid"])
    assert len(pids) == 1 and caches["pid"] not in pids  # one worker served them all


def test_worker_builds_kernels_in_the_parents_cache_dir(caches) -> None:
    assert any(f.endswith(".so") for f in caches["new_kernel_files_f1"]), caches["new_kernel_files_f1"]
    assert any(f.endswith(".so") for f in caches["new_kernel_files_f5"]), caches["new_kernel_files_f5"]


def test_worker_follows_fresh_cache(caches) -> None:
    fresh = caches["fresh_dir"]
    assert fresh.startswith(caches["fresh_parent"])
    assert any(f.endswith(".so") for f in caches["fresh_dir_kernel_files"]), caches["fresh_dir_kernel_files"]


def test_worker_clears_in_memory_caches_only_after_the_parent_did(caches) -> None:
    lines = _job_lines(caches)
    assert sorted(lines)[:4] == [1, 2, 3, 4], lines
    assert "cleared" not in lines[1] and "cleared" not in lines[2], lines  # no clear before them
    assert "cleared" in lines[3], lines  # clear_caches() came before job 3
    assert "cleared" in lines[4], lines  # fresh_cache() clears on entry
    assert "cleared" not in lines[max(lines)], lines  # nothing cleared before the last job


def test_cache_workers_end_with_their_process(caches) -> None:
    assert wait_gone(caches["pool_processes"], within=5) == []


def test_warm_up_priority_nice_is_reported_and_unknown_falls_back(tmp_path) -> None:
    """SANDBOX_WORKER_WARMUP=nice (the GPU machines' default) warms up at nice 10 and says
    so; a value it does not know warms up at normal priority rather than failing."""
    code = (
        "import json, sandbox; sandbox.warmup(workers=1, wait=True, timeout=240); "
        "print(json.dumps([w['warm_up_priority'] for w in sandbox.workers()]))"
    )
    for value, expected in (("nice", ["nice"]), ("bogus", ["normal"])):
        env = script_env(tmp_path / value, {"SANDBOX_WORKER_WARMUP": value})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout.strip().splitlines()[-1]) == expected


def test_a_starved_idle_warm_up_gets_a_normal_priority_worker_beside_it(tmp_path) -> None:
    """A core kept busy at normal priority: a worker warming up on it in the idle class (a CPU
    machine's default) gets no CPU, and an unprivileged process cannot leave that class. After
    SANDBOX_WORKER_RESCUE_S a second worker starts at normal priority; the graph compiles there,
    and the starved one is ended."""
    # A compiled sin near -1 differs from eager's by a float32 ulp, and 1 + sin there is small
    # enough that the default relative tolerance failed on about 1 random input in 18.
    code = (
        "import json, torch, sandbox; "
        "f = torch.compile(lambda x: x.sin() + 1, backend='sandbox'); x = torch.randn(8); "
        "ok = bool(torch.allclose(f(x), x.sin() + 1, atol=1e-6)); r = sandbox.reports()[-1]; "
        "print(json.dumps({'ok': ok, 'outcome': r.outcome, 'worker_pid': r.worker_pid, "
        "'workers': sandbox.workers()}))"
    )
    # One core, kept busy: the script, its workers and the spinner share it, and the other cores
    # stay free for the rest of the suite (a test beside this one may time things).
    core = max(os.sched_getaffinity(0))

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)]
    try:
        env = script_env(tmp_path / "starved", {"SANDBOX_WORKER_RESCUE_S": "3"})
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=400, preexec_fn=pin
        )
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["ok"] and seen["outcome"] == "isolated", seen
    (worker,) = seen["workers"]  # the starved worker was ended once its rescue was ready
    assert worker["pid"] == seen["worker_pid"] and worker["warm_up_priority"] == "normal", worker
    starved = worker["rescue_of"]
    assert starved and not pid_alive(starved), worker
    assert f"worker {starved} has not warmed up" in out.stderr, out.stderr[-3000:]


def test_async_option_alone_sets_the_warm_up_priority(tmp_path) -> None:
    """``options={"async": True}`` without SANDBOX_ASYNC in the environment: the workers the
    compile starts warm up at normal priority (an idle-class warm-up would starve behind the
    eager steps), as with the variable set."""
    code = (
        "import json, torch, sandbox; "
        "f = torch.compile(lambda x: x.sin() + 1, backend='sandbox', options={'async': True}); "
        "x = torch.randn(8); [f(x) for _ in range(3)]; sandbox.warmup(wait=True, timeout=240); "
        "print(json.dumps([w['warm_up_priority'] for w in sandbox.workers()]))"
    )
    env = script_env(tmp_path / "async", {"SANDBOX_PRESTART": "off"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["normal"]


def test_warmup_imports_the_compile_front_end_in_the_background(tmp_path) -> None:
    """sandbox.warmup() imports this process's share of a compile (Inductor's compile_fx)
    on a background thread, before anything is compiled (by default where there is no
    NVIDIA GPU); SANDBOX_WARMUP_IMPORTS=0 does not, =1 does."""
    code = (
        "import json, sys, time, sandbox; from sandbox import runtime; sandbox.warmup(workers=1); "
        "t = runtime.current()._frontend; t is not None and t.join(120); "
        "print(json.dumps({'started': t is not None, 'compile_fx': 'torch._inductor.compile_fx' in sys.modules}))"
    )
    seen = {}
    for value in ("1", "0", ""):
        env = script_env(tmp_path / (value or "default"), {"SANDBOX_WARMUP_IMPORTS": value} if value else {})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        seen[value] = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["1"] == {"started": True, "compile_fx": True}, seen
    assert seen["0"] == {"started": False, "compile_fx": False}, seen
    # The default: on where no NVIDIA GPU is present (off on GPU machines, tests/gpu).
    from sandbox.isolation.sizing import gpu_machine

    assert seen[""]["started"] is (not gpu_machine()), seen


def test_warmup_in_async_mode_prepares_the_first_compile_in_the_background(tmp_path) -> None:
    """In async mode the first step is this process's share of a compile: sandbox.warmup()'s
    thread also registers the joint-graph patterns for the likely device (here the CPU), which
    the partitioner would otherwise do inside that step; in blocking mode it does not (a run
    of cache hits never needs them), unless SANDBOX_WARMUP_IMPORTS=prepare asks for it."""
    code = (
        "import json, sandbox; from sandbox import runtime; sandbox.warmup(workers=1); "
        "t = runtime.current()._frontend; t is not None and t.join(120); "
        "from torch._inductor.fx_passes import joint_graph; "
        "print(json.dumps({'started': t is not None, 'patterns': joint_graph.lazy_init.cache_info().currsize}))"
    )
    seen = {}
    for mode, imports in (("1", "1"), ("0", "1"), ("0", "prepare")):
        env = script_env(tmp_path / f"{mode}{imports}", {"SANDBOX_ASYNC": mode, "SANDBOX_WARMUP_IMPORTS": imports})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        seen[mode + imports] = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["11"] == {"started": True, "patterns": 1}, seen
    assert seen["01"] == {"started": True, "patterns": 0}, seen
    assert seen["0prepare"] == {"started": True, "patterns": 1}, seen


def test_first_cpu_compile_probes_the_cpu_isa_in_the_background_and_prepares_no_gpu_load(tmp_path) -> None:
    """While a CPU graph compiles in the worker, the user's process prepares its CPU-ISA
    probe in the background (the load that follows needs it) and nothing for a GPU load
    (tests/gpu checks the opposite for CUDA graphs). It takes the answers the worker recorded
    on the shared cache dir: no probe process starts in the user's process, where each one
    imports torch on older releases (one per check, ten on an AMX machine)."""
    code = (
        "import json, torch, sandbox; from sandbox import runtime; "
        "from torch._inductor import cpu_vec_isa; probes = []; real = cpu_vec_isa.VecISA._probe_load; "
        "cpu_vec_isa.VecISA._probe_load = lambda self, path: probes.append(str(self)) or real(self, path); "
        "f = torch.compile(lambda x: (x * 2).sin(), backend='sandbox'); f(torch.randn(8)); "
        "warm = runtime.current().parent_warm_up; "
        "print(json.dumps({'started': warm.started(), 'gpu': warm.gpu_result, 'probes': probes, "
        "'isa': str(cpu_vec_isa.pick_vec_isa()), 'outcomes': [r.outcome for r in sandbox.reports()]}))"
    )
    env = script_env(tmp_path, {})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["outcomes"] == ["isolated"], seen
    assert seen["started"] == {"cpu_isa_probe": True, "gpu_load": False}, seen
    assert seen["gpu"] is None, seen
    assert seen["probes"] == [], seen
    record = json.loads((tmp_path / "sandbox" / "cpu-isa-probed").read_text())
    assert any(record["checks"].values()) == bool(seen["isa"]), (record, seen)


def test_a_cpu_graph_loaded_from_aotautograds_cache_starts_no_probe_process(tmp_path) -> None:
    """A rank that waited at the graph's gate, like any process of a warm job, loads its CPU
    graphs from AOTAutograd's cache without a compile: it takes the probe's answers a worker
    recorded on the cache dir, so no probe process starts in it either (on a 16-core GPU host, 8
    ranks probing cost 83 CPU-s before this)."""
    code = (
        "import json, torch, sandbox; "
        "from torch._inductor import cpu_vec_isa; probes = []; real = cpu_vec_isa.VecISA._probe_load; "
        "cpu_vec_isa.VecISA._probe_load = lambda self, path: probes.append(str(self)) or real(self, path); "
        "w = torch.randn(8, requires_grad=True); "
        "f = torch.compile(lambda x: (x * w).sin().sum(), backend='sandbox'); f(torch.randn(8)).backward(); "
        "print(json.dumps({'probes': probes, 'reasons': [r.reason for r in sandbox.reports()]}))"
    )
    env = script_env(tmp_path, {})
    seen = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        seen.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert seen[0]["probes"] == [], seen  # the first: the background probe took the worker's answers
    assert seen[1] == {"probes": [], "reasons": ["aot_autograd_cache", "aot_autograd_cache"]}, seen


def test_torch_compile_right_after_warmup_beside_its_import_thread(tmp_path) -> None:
    """torch.compile right after warmup() imports torch._dynamo and the backend registry on
    the program's thread while warmup()'s thread imports the compile front end; the two
    must never hand each other a half-initialised module (once seen as ImportError: cannot
    import name 'IndentedBuffer'; a first fix that only reordered the thread's imports
    failed here with a deadlock between torch._dynamo and torch._inductor). Five fresh
    processes, each compiling at once."""
    code = (
        "import json, sys, torch, sandbox; from sandbox import runtime; sandbox.warmup(workers=1); "
        "started = runtime.current()._frontend is not None; "
        "f = torch.compile(lambda x: x.cos() + 1, backend='sandbox'); ok = bool((f(torch.zeros(4)) == 2).all()); "
        "print(json.dumps({'started': started, 'ok': ok}))"
    )
    for i in range(5):
        env = script_env(tmp_path / str(i), {"SANDBOX_WARMUP_IMPORTS": "1"})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        assert seen == {"started": True, "ok": True}, seen

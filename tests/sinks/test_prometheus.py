"""Prometheus metrics, alert rules and their exposition (issue 6, points 1-4).

* The metrics from reports (``sandbox/sinks/prometheus.py``), on synthetic reports: values,
  bounded label sets, naming, the per-report cost.
* The exposition in a fresh process without a compile: the endpoint on 127.0.0.1 at the base
  port + LOCAL_RANK, a port already taken (one warning, no crash), the application's own
  registry, a Pushgateway that is down (one warning at exit, bounded).
* ``prometheus/``: ``promtool check rules``, ``promtool test rules`` (a firing and a
  non-firing case for every alert, checked here), ``promtool check config`` of the example.
* A real Prometheus (Debian's) on a free loopback port, with the shipped rules plus
  test-only copies of the alerts with short ``for:`` and low thresholds, scraping a process
  that compiles through the sandbox and waits between steps; and a real Pushgateway that
  process pushes to at exit, which Prometheus scrapes too. Everything is checked over
  Prometheus's HTTP API against the reports the process printed.

Prometheus, promtool and the Pushgateway come from Debian (``apt-get install -y
--no-install-recommends prometheus prometheus-pushgateway``); missing, the tests that need
them skip locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import HELPERS, IN_CI, MARK, ROOT, fresh_cache_dir, script_env

from sandbox.isolation.processes import descendants

RULES = ROOT / "prometheus"
RULE_FILES = [RULES / "recording.rules.yml", RULES / "alerts.rules.yml"]
ALERT_TESTS = RULES / "tests" / "alerts.test.yml"
INSTALL_HINT = "apt-get install -y --no-install-recommends prometheus prometheus-pushgateway"

ALERTS = (
    "SandboxCompileLatencyHigh",
    "SandboxCompileFailures",
    "SandboxCacheHitRatioDropped",
    "SandboxCompileStuck",
    "SandboxWorkerRestarts",
)


def _unavailable(why: str) -> None:
    message = f"{why}; install it with `{INSTALL_HINT}`"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if path is None:
        _unavailable(f"{name} is not installed")
    return path  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the rules, with promtool ----------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    proc = subprocess.run([_tool("promtool"), "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_FILES), proc.stdout


def test_promtool_test_rules() -> None:
    proc = subprocess.run(
        [_tool("promtool"), "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, cwd=RULES
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_every_alert_has_a_firing_and_a_non_firing_case() -> None:
    shipped = [
        r["alert"]
        for g in yaml.safe_load((RULES / "alerts.rules.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    assert sorted(shipped) == sorted(ALERTS)
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for t in case.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    assert firing == set(shipped), f"alerts without a firing case: {set(shipped) - firing}"
    assert quiet == set(shipped), f"alerts without a non-firing case: {set(shipped) - quiet}"


def test_promtool_check_example_config() -> None:
    proc = subprocess.run(
        [_tool("promtool"), "check", "config", str(RULES / "prometheus.example.yml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_use_only_metrics_the_sandbox_exports() -> None:
    """Every sandbox_* name in the rules is one the sink exposes (a typo would never fire)."""
    import re

    from prometheus_client import CollectorRegistry, generate_latest

    from sandbox.sinks.prometheus import Metrics

    reg = CollectorRegistry()
    Metrics().register(reg)
    exposed = {
        line.split("{")[0].split(" ")[0]
        for line in generate_latest(reg).decode().splitlines()
        if line and not line.startswith("#")
    }
    exposed |= {line.split()[2] for line in generate_latest(reg).decode().splitlines() if line.startswith("# TYPE")}
    used = set()
    for f in RULE_FILES:
        used |= set(re.findall(r"(?<![:\w])sandbox_[a-z_]+(?![:\w])", f.read_text()))
    assert used, "no sandbox metric in the rules"
    assert used <= exposed, f"metrics in the rules that the sandbox does not export: {sorted(used - exposed)}"


# --- the metrics from reports -----------------------------------------------------------------------


def _report(**kw: Any) -> Any:
    from sandbox.record.report import CompileReport, Failure, Stage

    t = 1_700_000_000.0
    stages = kw.pop("stages", None)
    if stages is None:
        stages = [
            Stage("inductor_compile", t, t + 3.0),
            Stage("cache_lookup", t, t + 0.002, parent="inductor_compile"),
            Stage("serialize", t + 0.01, t + 0.05),
            Stage("wait_for_worker", t + 0.05, t + 0.25),
            Stage("send", t + 0.25, t + 0.2503),
            Stage("compile_in_worker", t + 0.26, t + 2.5, origin="worker"),
            Stage("GraphLowering.run", t + 0.3, t + 0.5, origin="worker"),
            Stage("pass.post_grad_passes.some_pass_of_the_day", t + 0.3, t + 0.31, origin="worker"),
            Stage("transfer", t + 2.5, t + 2.51),
            Stage("load", t + 2.51, t + 2.9),
        ]
    failure = kw.pop("failure", None)
    base = dict(
        run_id="r" * 32,
        compile_id="0/0",
        graph_kind="forward",
        outcome="isolated",
        duration_s=3.0,
        stages=stages,
        worker_pid=123,
    )
    base.update(kw)
    r = CompileReport(**base)
    if failure:
        r.failure = Failure(failure, "boom", worker_pid=123)
    return r


def _registry_with(reports: list[Any]) -> Any:
    from prometheus_client import CollectorRegistry

    from sandbox.sinks.prometheus import Metrics

    m = Metrics()
    reg = CollectorRegistry()
    m.register(reg)
    for r in reports:
        m(r)
    return reg


def test_metrics_from_reports() -> None:
    cpp = {"kind": "cpp", "source": 'extern "C" void kernel(...)'}
    extern = {"kind": "extern", "source": ""}
    reports = [
        _report(
            caches={
                "fx_graph": {"state": "miss"},
                "aot_autograd": {"state": "miss"},
                "async_compile": {"hit": 2, "miss": 3},
            },
            kernels=[cpp, cpp, extern],
        ),
        # The backward of the same AOTAutograd lookup: its aot state is not a second lookup.
        _report(
            graph_kind="backward",
            caches={"fx_graph": {"state": "hit"}, "aot_autograd": {"state": "miss"}},
            kernels=[cpp],
            outcome="cache_hit",
            stages=[],
            duration_s=0.02,
        ),
        _report(
            graph_kind="inference",
            outcome="failed",
            failure="timeout",
            duration_s=40.0,
            kernels=[],
            stages=[_report().stages[2], type(_report().stages[0])("wait_for_worker", 0.0, 40.0)],
        ),
        _report(
            graph_kind="inference",
            outcome="in_process",
            caches={"fx_graph": {"state": "bypass"}},
            stages=[],
            kernels=[extern],
        ),
        _report(
            graph_kind="mystery",
            outcome="isolated",
            caches={"fx_graph": {"state": "strange"}},
            stages=[],
            kernels=[{"kind": "new"}],
        ),
    ]
    reg = _registry_with(reports)
    v = reg.get_sample_value

    def duration_count(kind: str, outcome: str) -> float:
        return (
            v("sandbox_compile_duration_seconds_count", {"graph_kind": kind, "outcome": outcome, "device_type": "cpu"})
            or 0.0
        )

    assert duration_count("forward", "isolated") == 1
    assert duration_count("backward", "cache_hit") == 1
    assert duration_count("inference", "failed") == 1
    assert duration_count("inference", "in_process") == 1
    assert duration_count("other", "isolated") == 1, "an unknown graph kind maps to 'other'"
    assert (
        v(
            "sandbox_compile_duration_seconds_sum",
            {"graph_kind": "inference", "outcome": "failed", "device_type": "cpu"},
        )
        == 40.0
    )
    # 10 ms .. 30 min buckets
    assert (
        v(
            "sandbox_compile_duration_seconds_bucket",
            {"graph_kind": "forward", "outcome": "isolated", "device_type": "cpu", "le": "0.01"},
        )
        == 0
    )
    assert (
        v(
            "sandbox_compile_duration_seconds_bucket",
            {"graph_kind": "forward", "outcome": "isolated", "device_type": "cpu", "le": "5.0"},
        )
        == 1
    )
    assert (
        v(
            "sandbox_compile_duration_seconds_bucket",
            {"graph_kind": "forward", "outcome": "isolated", "device_type": "cpu", "le": "1800.0"},
        )
        == 1
    )

    # Stages: the fixed set only; a failed graph's wait is not a wait.
    assert v("sandbox_compile_stage_duration_seconds_count", {"stage": "compile_in_worker"}) == 1
    assert v("sandbox_compile_stage_duration_seconds_sum", {"stage": "compile_in_worker"}) == pytest.approx(2.24)
    assert v("sandbox_compile_stage_duration_seconds_count", {"stage": "GraphLowering.run"}) == 1
    assert v("sandbox_compile_stage_duration_seconds_count", {"stage": "serialize"}) == 2
    assert v("sandbox_compile_stage_duration_seconds_count", {"stage": "wait_for_worker"}) == 1
    assert (
        v("sandbox_compile_stage_duration_seconds_count", {"stage": "pass.post_grad_passes.some_pass_of_the_day"})
        is None
    )
    assert v("sandbox_compile_stage_duration_seconds_count", {"stage": "other"}) is None
    assert v("sandbox_worker_wait_seconds_count") == 1
    assert v("sandbox_worker_wait_seconds_sum") == pytest.approx(0.2)

    def lookups(cache: str, result: str) -> float | None:
        return v("sandbox_cache_lookups_total", {"cache": cache, "result": result})

    assert (
        lookups("fx_graph", "miss"),
        lookups("fx_graph", "hit"),
        lookups("fx_graph", "bypass"),
        lookups("fx_graph", "other"),
    ) == (1, 1, 1, 1)
    assert (lookups("aot_autograd", "miss"), lookups("aot_autograd", "hit")) == (1, 0)
    assert (lookups("async_compile", "hit"), lookups("async_compile", "miss")) == (2, 3)

    assert v("sandbox_compile_failures_total", {"kind": "timeout"}) == 1
    assert all(v("sandbox_compile_failures_total", {"kind": k}) == 0 for k in ("crash", "oom", "error"))
    # Kernels of compiled graphs; the cache hit's kernel was not generated.
    assert v("sandbox_kernels_generated_total", {"kind": "cpp"}) == 2
    assert v("sandbox_kernels_generated_total", {"kind": "extern"}) == 2
    assert v("sandbox_kernels_generated_total", {"kind": "triton"}) == 0
    assert v("sandbox_kernels_generated_total", {"kind": "other"}) == 1

    import importlib.metadata

    info = [s for m in reg.collect() if m.name == "sandbox_build_info" for s in m.samples]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels["torch"] == importlib.metadata.version("torch")
    assert set(info[0].labels) == {"version", "torch", "triton", "python"}


def test_single_flight_compiles_and_waits() -> None:
    """A graph served by another rank's compile is a single-flight hit and its wait goes to
    single_flight_wait_seconds, not to worker_wait (it waited for a compile, not a free worker)."""
    from sandbox.record.report import Stage

    t = 1_700_000_000.0
    served = [_report().stages[2], Stage("wait_for_worker", t + 0.05, t + 7.05), Stage("load", t + 7.05, t + 7.2)]
    reports = [
        _report(single_flight={"role": "compiled", "via": "service", "served": [{"rank": 1}]}),
        _report(single_flight={"role": "waited", "via": "service", "waited_s": 7.0}, stages=served, worker_pid=None),
        _report(single_flight={"role": "waited", "via": "redis", "waited_s": 40.0}, stages=served, worker_pid=None),
        _report(single_flight={"role": "alone", "via": None, "reason": "no FX graph cache key"}),
        _report(single_flight={"role": "mystery", "via": "carrier pigeon"}),
        _report(),  # nothing shared: no single_flight entry
    ]
    v = _registry_with(reports).get_sample_value
    count = "sandbox_single_flight_compiles_total"
    assert v(count, {"role": "compiled", "via": "service"}) == 1
    assert v(count, {"role": "waited", "via": "service"}) == 1
    assert v(count, {"role": "waited", "via": "redis"}) == 1
    assert v(count, {"role": "alone", "via": "none"}) == 1
    assert v(count, {"role": "other", "via": "none"}) == 1  # unknown values stay within the label set
    assert v(count, {"role": "compiled", "via": "redis"}) == 0  # exists from the start
    assert v("sandbox_single_flight_wait_seconds_count", {"via": "service"}) == 1
    assert v("sandbox_single_flight_wait_seconds_sum", {"via": "redis"}) == 40.0
    assert v("sandbox_single_flight_wait_seconds_bucket", {"via": "service", "le": "10.0"}) == 1
    # Four reports waited for a worker (0.2 s each); the two that waited for a compile did not.
    assert v("sandbox_worker_wait_seconds_count") == 4


def test_device_type() -> None:
    from sandbox.sinks.prometheus import device_type

    triton = (
        "@triton_heuristics.pointwise("
        "triton_meta={'signature': {}, 'device': DeviceProperties(type='cuda', index=0, cc=90)})"
    )
    assert device_type(_report(kernels=[{"kind": "extern"}, {"kind": "cpp", "source": "..."}])) == "cpu"
    assert device_type(_report(kernels=[{"kind": "triton", "source": triton}])) == "cuda"
    assert device_type(_report(kernels=[{"kind": "triton", "source": triton.replace("'cuda'", "'xpu'")}])) == "xpu"
    assert device_type(_report(kernels=[{"kind": "triton", "source": triton.replace("'cuda'", "'weird'")}])) == "other"
    assert device_type(_report(kernels=[])) == "cpu"  # no kernels, no CUDA initialised here


def test_names_and_labels_follow_prometheus_conventions() -> None:
    reg = _registry_with([_report(caches={"fx_graph": {"state": "miss"}}, kernels=[{"kind": "cpp"}])])
    families = {m.name: m for m in reg.collect()}
    assert set(families) == {
        "sandbox_compile_duration_seconds",
        "sandbox_compile_stage_duration_seconds",
        "sandbox_worker_wait_seconds",
        "sandbox_cache_lookups",
        "sandbox_compile_failures",
        "sandbox_kernels_generated",
        "sandbox_worker_restarts",
        "sandbox_compiles_in_flight",
        "sandbox_oldest_compile_in_flight_start_time_seconds",
        "sandbox_build_info",
        "sandbox_remote_cache_saved_seconds",
        "sandbox_single_flight_compiles",
        "sandbox_single_flight_wait_seconds",
    }
    for name, m in families.items():
        if m.type == "histogram":
            assert name.endswith("_seconds"), name
        if m.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in m.samples), name
        assert m.documentation, name
        for s in m.samples:
            assert not {"report_id", "run_id", "graph_index", "compile_id", "worker_pid", "pid"} & set(s.labels), (
                name,
                s.labels,
            )
    # Bounded label values: every value comes from a fixed list (plus "other").
    from sandbox.sinks import prometheus as P

    allowed = {
        "graph_kind": {*P.GRAPH_KINDS, "other"},
        "outcome": {*P.OUTCOMES, "other"},
        "device_type": {*P.DEVICE_TYPES, "other"},
        "stage": set(P.STAGES),
        "cache": set(P.CACHE_RESULTS),
        "kind": {*P.KERNEL_KINDS, "crash", "timeout", "oom", "error", "other"},
    }
    for m in families.values():
        for s in m.samples:
            for label, value in s.labels.items():
                if label in allowed:
                    assert value in allowed[label], (m.name, label, value)


# A report's metrics must cost well under 1 ms (the report's budget in all is < 1 ms).
PER_REPORT_BUDGET_S = 0.0005


def test_cost_per_report() -> None:
    from sandbox.record.report import Stage
    from sandbox.sinks.prometheus import STAGES, Metrics

    t = time.time()
    # A large graph's report: 150 stages (Inductor's passes included), 60 kernels with sources.
    stages = [Stage(name, t, t + 0.1, "worker") for name in STAGES] + [
        Stage(f"pass.post_grad_passes.p{i}", t, t + 0.01, "worker") for i in range(130)
    ]
    kernels = [{"kind": "cpp", "source": "x" * 4000} for _ in range(40)] + [
        {"kind": "extern", "source": ""} for _ in range(20)
    ]
    report = _report(
        stages=stages,
        kernels=kernels,
        caches={
            "fx_graph": {"state": "miss"},
            "aot_autograd": {"state": "miss"},
            "async_compile": {"hit": 3, "miss": 40},
        },
    )
    m = Metrics()
    samples = []
    for _ in range(30):
        t0 = time.perf_counter()
        for _ in range(50):
            m(report)
        samples.append((time.perf_counter() - t0) / 50)
    per_report = statistics.median(samples)
    print(f"metrics per report: {per_report * 1e6:.0f} us ({len(stages)} stages, {len(kernels)} kernels)")
    assert per_report < PER_REPORT_BUDGET_S, f"{per_report * 1e6:.0f} us per report"


def test_live_values_follow_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """In flight and the oldest start come from the pool (read by the runtime, handed to the
    sink); restarts add up across pools."""
    from prometheus_client import CollectorRegistry

    from sandbox.isolation import pool
    from sandbox.runtime import Runtime
    from sandbox.sinks.prometheus import Metrics

    class FakePool:
        def __init__(self, restarts: int, starts: list[float]) -> None:
            self.restarts, self.starts = restarts, starts

        def in_flight(self) -> list[float]:
            return list(self.starts)

    first = FakePool(2, [100.0, 50.0])
    monkeypatch.setattr(pool, "_pool", first)
    reg = CollectorRegistry()
    Metrics(Runtime().pool_stats).register(reg)
    assert reg.get_sample_value("sandbox_worker_restarts_total") == 2
    assert reg.get_sample_value("sandbox_compiles_in_flight") == 2
    assert reg.get_sample_value("sandbox_oldest_compile_in_flight_start_time_seconds") == 50.0
    first.restarts, first.starts = 3, []
    assert reg.get_sample_value("sandbox_compiles_in_flight") == 0
    assert reg.get_sample_value("sandbox_oldest_compile_in_flight_start_time_seconds") is None  # absent, not 0
    monkeypatch.setattr(pool, "_pool", FakePool(1, []))  # the pool was shut down and a new one started
    assert reg.get_sample_value("sandbox_worker_restarts_total") == 4
    monkeypatch.setattr(pool, "_pool", None)
    assert reg.get_sample_value("sandbox_worker_restarts_total") == 4
    assert reg.get_sample_value("sandbox_compiles_in_flight") == 0


def test_pool_tracks_jobs_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pool.in_flight() holds a job from run() until it is back, failed ones included."""
    from sandbox.isolation import pool

    p = pool.Pool.__new__(pool.Pool)  # no workers: drive run() with a stand-in worker
    p._lock, p._in_flight, p._job_seq, p.closed, p.restarts = threading.Lock(), {}, 0, False, 0
    p.compile_threads = None  # the whole machine: no share to send
    p._idle = queue.Queue()
    seen: list[list[float]] = []

    class W:
        ready = {"op": "ready"}
        pid = 1
        job_w = -1
        jobs = 0
        kept = None  # no rescue was started beside it

        def log_tail(self) -> list[str]:
            return []

        def send(self, message: Any) -> None:  # WorkerProcess.send: one frame on the job pipe
            pool.protocol.send(self.job_w, message)

    p._idle.put(W())

    def fake_send(fd: int, job: Any) -> None:
        seen.append(p.in_flight())
        raise OSError("broken pipe")

    p._death = lambda w: pool.WorkerFailure("crash", "gone")  # type: ignore[method-assign]
    p._retire = lambda w, replace: None  # type: ignore[method-assign]
    monkeypatch.setattr(pool.protocol, "send", fake_send)
    t0 = time.time()
    with pytest.raises(pool.WorkerFailure):
        p.run({"op": "compile"}, None, None)
    assert len(seen) == 1 and len(seen[0]) == 1 and t0 - 1 <= seen[0][0] <= time.time()
    assert p.in_flight() == []


def test_metrics_options() -> None:
    from sandbox.options import OptionError, Options

    assert (
        Options.resolve(env={}).metrics_port,
        Options.resolve(env={}).metrics_addr,
        Options.resolve(env={}).pushgateway,
    ) == (None, "127.0.0.1", None)
    o = Options.resolve(
        env={"SANDBOX_METRICS_PORT": "9780", "SANDBOX_METRICS_ADDR": "0.0.0.0", "SANDBOX_PUSHGATEWAY": "pg:9091"}
    )
    assert (o.metrics_port, o.metrics_addr, o.pushgateway) == (9780, "0.0.0.0", "pg:9091")
    assert Options.resolve(options={"metrics_port": 9781}, env={"SANDBOX_METRICS_PORT": "9780"}).metrics_port == 9781
    for off in ("0", "off", ""):
        assert Options.resolve(env={"SANDBOX_METRICS_PORT": off}).metrics_port is None
    for bad in ("abc", "70000", "-1", "1.5"):
        with pytest.raises(OptionError, match="SANDBOX_METRICS_PORT"):
            Options.resolve(env={"SANDBOX_METRICS_PORT": bad})
    with pytest.raises(OptionError, match="metrics_port"):
        Options.resolve(options={"metrics_port": True})
    with pytest.raises(OptionError, match="SANDBOX_METRICS_ADDR"):
        Options.resolve(env={"SANDBOX_METRICS_ADDR": " "})


# --- exposition in a process (no compile) --------------------------------------------------------

EXPOSITION = r"""
import json, os, socket, sys, time, urllib.request, warnings
warnings.simplefilter("always")
from prometheus_client import REGISTRY, generate_latest
import sandbox
from sandbox import runtime
from sandbox.options import Options
from sandbox.sinks import prometheus as P
from sandbox.record.report import CompileReport

out = {}
def report(kind):
    return CompileReport(run_id="r", compile_id="0/0", graph_kind=kind, outcome="isolated", duration_s=1.5)

runtime.current().publish(report("forward"))  # before metrics are on: counted once they are

taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen()
port = taken.getsockname()[1]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):  # as on every compile: one warning in all
        runtime.current().configure(Options.resolve(options={"metrics_port": port, "store": False}))
out["taken_warnings"] = [str(w.message) for w in caught]

os.environ["LOCAL_RANK"] = "2"
base = int(sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    reg = sandbox.enable_metrics(registry=REGISTRY, port=base, pushgateway="127.0.0.1:" + sys.argv[2])
out["enable_warnings"] = [str(w.message) for w in caught]
runtime.current().publish(report("backward"))
sink = runtime.current().sink("prometheus")
out["servers"] = [[addr, port, list(s.server_address[:2])] for (addr, port), s in sink.servers.items()]
body = urllib.request.urlopen(f"http://127.0.0.1:{base + 2}/metrics", timeout=10).read().decode()
out["endpoint"] = [
    line
    for line in body.splitlines()
    if line.startswith("sandbox_compile_duration_seconds_count") and not line.endswith(" 0.0")
]
out["app_registry"] = [l for l in generate_latest(REGISTRY).decode().splitlines()
                       if l.startswith("sandbox_compile_duration_seconds_count") and not l.endswith(" 0.0")]
out["same_registry"] = reg is sink.registry
out["grouping_key"] = P.grouping_key()
out["hostname"] = socket.gethostname()
out["exiting_at"] = time.time()
print("@@RESULT@@" + json.dumps(out), flush=True)
"""


def test_exposition_port_scheme_taken_port_app_registry_and_dead_pushgateway(tmp_path: Path) -> None:
    rank2 = _free_port()
    dead = _free_port()  # bound, then closed: nothing listens there
    env = script_env(tmp_path, {"SANDBOX_STORE": str(tmp_path / "runs.db")})
    for name in ("LOCAL_RANK", "SANDBOX_METRICS_PORT", "SANDBOX_METRICS_ADDR", "SANDBOX_PUSHGATEWAY"):
        env.pop(name, None)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", EXPOSITION, str(rank2 - 2), str(dead)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    done = time.time()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    (line,) = [s for s in proc.stdout.splitlines() if s.startswith("@@RESULT@@")]
    out = json.loads(line[len("@@RESULT@@") :])

    # A port already taken: one clear warning, no exception, the process goes on.
    (warning,) = out["taken_warnings"]
    assert "could not start" in warning and "already in use" in warning and "SANDBOX_METRICS_PORT" in warning, warning
    assert out["enable_warnings"] == []
    # Base port + LOCAL_RANK, bound to 127.0.0.1 by default.
    assert [s for s in out["servers"] if s[1] == rank2] == [["127.0.0.1", rank2, ["127.0.0.1", rank2]]]
    # The report published before metrics were on is counted, and the later one.
    assert sorted(out["endpoint"]) == sorted(
        [
            'sandbox_compile_duration_seconds_count{device_type="cpu",graph_kind="backward",outcome="isolated"} 1.0',
            'sandbox_compile_duration_seconds_count{device_type="cpu",graph_kind="forward",outcome="isolated"} 1.0',
        ]
    )
    assert out["app_registry"] == out["endpoint"], "the application's registry holds the same metrics"
    assert out["same_registry"]
    assert out["grouping_key"] == {"instance": out["hostname"], "local_rank": "2"}
    # The Pushgateway is down: one warning at exit, no traceback, a bounded exit.
    assert proc.stderr.count("could not push compile metrics to the Pushgateway") == 1, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert done - out["exiting_at"] < 10, f"exit took {done - out['exiting_at']:.1f} s"
    print(f"exposition process: {done - t0:.1f} s, exit {done - out['exiting_at']:.1f} s")


# --- a real Prometheus and Pushgateway ------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{name} exited with {self.proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.time() > deadline:
                self.stop()
                pytest.fail(
                    f"{name} was not ready on 127.0.0.1:{port} within 30 s:\n{log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url(path) + query, timeout=10) as r:
            body = r.read().decode()
        return json.loads(body) if path.startswith("/api/") else body

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Prometheus(Server):
    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["status"] == "success", data
        return data["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for a in self.get("/api/v1/alerts")["data"]["alerts"]:
            if a["state"] == "firing":
                out.setdefault(a["labels"]["alertname"], []).append(a["labels"])
        return out

    def wait_until(self, what: str, check: Any, within: float = 60.0) -> Any:
        deadline = time.time() + within
        last: Any = None
        while True:
            try:
                last = check()
            except (AssertionError, KeyError, TypeError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if last:
                    return last
            if time.time() > deadline:
                pytest.fail(f"Prometheus: {what} not seen within {within:.0f} s (last: {last})")
            time.sleep(0.5)


class Child:
    """The scenario script, step by step: its result lines arrive on a queue."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.stderr = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HELPERS / "script_metrics.py")],
                cwd=str(HELPERS),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self.lines.put(json.loads(line[len(MARK) :]))

    def phase(self, name: str, within: float = 400.0) -> dict[str, Any]:
        try:
            result = self.lines.get(timeout=within)
        except queue.Empty:
            self.kill()
            pytest.fail(
                f"the child did not reach phase {name!r} within {within} "
                f"s:\n{self.stderr.read_text(errors='replace')[-6000:]}"
            )
        assert result["phase"] == name, result["phase"]
        return result

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# Test-only copies of the shipped alerts: short `for:`, thresholds a few-second test can reach.
# (alert -> (fragment of the shipped expression, its replacement)). SandboxCacheHitRatioDropped
# needs a day of history: the promtool tests cover it. SandboxCompileFailures runs as shipped.
FAST = {
    "SandboxCompileLatencyHigh": ("> 600", "> 0.001"),
    "SandboxCompileStuck": ("> 900", "> 3"),
    "SandboxWorkerRestarts": ("> 2", "> 0"),
}


def _test_rules() -> dict[str, Any]:
    rules = []
    for group in yaml.safe_load((RULES / "alerts.rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in FAST:
                old, new = FAST[rule["alert"]]
                assert old in rule["expr"], (rule["alert"], rule["expr"])
                rules.append(
                    {**rule, "alert": rule["alert"] + "Test", "expr": rule["expr"].replace(old, new), "for": "1s"}
                )
    return {"groups": [{"name": "sandbox-alerts-test", "rules": rules}]}


def _expected(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """What the metrics must say about these reports (the sink's rules, restated)."""
    outcomes: dict[str, int] = {}
    lookups: dict[tuple[str, str], int] = {}
    kernels: dict[str, int] = {}
    for r in reports:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        fx = (r["caches"].get("fx_graph") or {}).get("state")
        if fx:
            lookups["fx_graph", fx] = lookups.get(("fx_graph", fx), 0) + 1
        aot = (r["caches"].get("aot_autograd") or {}).get("state")
        if aot and r["graph_kind"] != "backward":
            lookups["aot_autograd", aot] = lookups.get(("aot_autograd", aot), 0) + 1
        if r["outcome"] != "cache_hit":
            for k in r["kernels"]:
                kernels[k["kind"]] = kernels.get(k["kind"], 0) + 1
    return {"outcomes": outcomes, "lookups": lookups, "kernels": kernels, "isolated": outcomes.get("isolated", 0)}


@pytest.fixture
def stack(tmp_path: Path, probe_seed: Path) -> Iterator[dict[str, Any]]:
    prometheus_bin, pushgateway_bin = _tool("prometheus"), _tool("prometheus-pushgateway")
    servers: list[Server] = []
    child: Child | None = None
    try:
        pg_port = _free_port()
        # Debian's Pushgateway persists to /var/lib/prometheus by default: keep each run's own.
        pushgateway = Server(
            "pushgateway",
            [
                pushgateway_bin,
                f"--web.listen-address=127.0.0.1:{pg_port}",
                f"--persistence.file={tmp_path / 'pushgateway.data'}",
            ],
            pg_port,
            tmp_path / "pushgateway.log",
        )
        servers.append(pushgateway)
        rank1_port = _free_port()  # the child is local rank 1: it serves on base + 1
        (tmp_path / "test.rules.yml").write_text(yaml.safe_dump(_test_rules(), sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [*map(str, RULE_FILES), str(tmp_path / "test.rules.yml")],
            "scrape_configs": [
                {"job_name": "sandbox-child", "static_configs": [{"targets": [f"127.0.0.1:{rank1_port}"]}]},
                {
                    "job_name": "pushgateway",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{pg_port}"]}],
                },
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        prom_port = _free_port()
        prom = Prometheus(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            prom_port,
            tmp_path / "prometheus.log",
        )
        servers.append(prom)
        env = script_env(
            fresh_cache_dir(tmp_path / "cache", probe_seed),
            {
                "PYTHONPATH": os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH", "")) if p),
                "SANDBOX_METRICS_PORT": str(rank1_port - 1),
                "LOCAL_RANK": "1",
                "SANDBOX_PUSHGATEWAY": f"127.0.0.1:{pg_port}",
                "SANDBOX_RUN_NAME": "metrics-test",
                "SANDBOX_STORE": str(tmp_path / "runs.db"),
                "SANDBOX_TRACE": "0",
            },
        )
        env.pop("SANDBOX_METRICS_ADDR", None)
        child = Child(env, tmp_path / "child.err")
        yield {"prometheus": prom, "pushgateway": pushgateway, "child": child, "rank1_port": rank1_port}
    finally:
        if child is not None:
            child.kill()
        for s in reversed(servers):
            s.stop()


def test_real_prometheus_and_pushgateway(stack: dict[str, Any]) -> None:
    prom: Prometheus = stack["prometheus"]
    pushgateway: Server = stack["pushgateway"]
    child: Child = stack["child"]
    job = '{job="sandbox-child"}'
    t_start = time.time()

    # 1. Two graphs compiled in a worker, then the same ones from the caches.
    compiled = child.phase("compiled")
    reports = compiled["reports"]
    exp = _expected(reports)
    assert exp["isolated"] == 2 and exp["outcomes"].get("cache_hit", 0) >= 1, exp
    (worker,) = compiled["workers"]

    # The target is the base port + LOCAL_RANK (1), and up.
    prom.wait_until("the child's endpoint scraped", lambda: prom.value(f"up{job}") == 1)
    (target,) = [
        t for t in prom.get("/api/v1/targets")["data"]["activeTargets"] if t["labels"]["job"] == "sandbox-child"
    ]
    assert target["scrapeUrl"] == f"http://127.0.0.1:{stack['rank1_port']}/metrics"

    n = len(reports)
    prom.wait_until(f"{n} compiles", lambda: prom.value(f"sum(sandbox_compile_duration_seconds_count{job})") == n)
    by_outcome = {
        r["metric"]["outcome"]: float(r["value"][1])
        for r in prom.query(f"sum by (outcome) (sandbox_compile_duration_seconds_count{job})")
    }
    assert {k: v for k, v in by_outcome.items() if v} == exp["outcomes"]
    assert {r["metric"]["device_type"] for r in prom.query(f"sandbox_compile_duration_seconds_count{job} > 0")} == {
        "cpu"
    }
    lookups = {
        (r["metric"]["cache"], r["metric"]["result"]): float(r["value"][1])
        for r in prom.query("sandbox_cache_lookups_total{job='sandbox-child',cache!='async_compile'} > 0")
    }
    assert lookups == exp["lookups"], (lookups, exp["lookups"])
    kernels = {
        r["metric"]["kind"]: float(r["value"][1]) for r in prom.query(f"sandbox_kernels_generated_total{job} > 0")
    }
    assert kernels == exp["kernels"]
    assert (
        prom.value("sandbox_compile_stage_duration_seconds_count{job='sandbox-child',stage='compile_in_worker'}")
        == exp["isolated"]
    )
    assert prom.value(f"sandbox_worker_wait_seconds_count{job}") == exp["isolated"]
    worker_compile = sum(
        s["end"] - s["start"] for r in reports for s in r["stages"] if s["name"] == "compile_in_worker"
    )
    assert prom.value(
        "sandbox_compile_stage_duration_seconds_sum{job='sandbox-child',stage='compile_in_worker'}"
    ) == pytest.approx(worker_compile, rel=1e-6)
    assert prom.value(f"sandbox_compiles_in_flight{job}") == 0
    assert prom.value(f"sandbox_worker_restarts_total{job}") == 0
    import torch

    (info,) = prom.query(f"sandbox_build_info{job}")
    assert info["metric"]["torch"] == torch.__version__ and info["value"][1] == "1"
    # The shipped recording rule feeds the (test-threshold) latency alert.
    p95 = prom.wait_until(
        "the p95 recording rule",
        lambda: prom.value("job:sandbox_compile_duration_seconds:p95_rate30m{job='sandbox-child'}"),
    )
    assert 0 < p95 < 1800
    prom.wait_until("SandboxCompileLatencyHighTest firing", lambda: "SandboxCompileLatencyHighTest" in prom.firing())
    assert "SandboxCompileFailures" not in prom.firing()

    # 2. A compile that hangs in the worker: in flight, then stuck.
    child.send("hang")
    hanging = child.phase("hanging")
    prom.wait_until("a compile in flight", lambda: prom.value(f"sandbox_compiles_in_flight{job}") == 1)
    oldest = prom.value(f"sandbox_oldest_compile_in_flight_start_time_seconds{job}")
    assert oldest is not None and hanging["at"] - 1 <= oldest <= time.time()
    prom.wait_until("SandboxCompileStuckTest firing", lambda: "SandboxCompileStuckTest" in prom.firing())
    # End the hang: kill the worker (and what it started), as a crash would.
    for pid in [*descendants(worker["pid"]), worker["pid"]]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    failed = child.phase("failed", within=120)
    assert failed["correct"] is True and len(failed["warnings"]) == 1, failed
    last = failed["reports"][-1]
    assert (last["outcome"], last["failure"]["kind"], last["fallback"]) == ("failed", "crash", "eager")
    n = len(failed["reports"])
    assert n == len(reports) + 1

    prom.wait_until(f"{n} compiles", lambda: prom.value(f"sum(sandbox_compile_duration_seconds_count{job})") == n)
    assert prom.value("sandbox_compile_failures_total{job='sandbox-child',kind='crash'}") == 1
    assert prom.value(f"sum(sandbox_compile_failures_total{job})") == 1
    prom.wait_until("the restart", lambda: prom.value(f"sandbox_worker_restarts_total{job}") == 1)
    prom.wait_until("nothing in flight", lambda: prom.value(f"sandbox_compiles_in_flight{job}") == 0)
    assert prom.value(f"sandbox_oldest_compile_in_flight_start_time_seconds{job}") is None
    firing = prom.wait_until(
        "SandboxCompileFailures firing (the shipped rule)",
        lambda: prom.firing() if "SandboxCompileFailures" in prom.firing() else None,
    )
    assert [(a["job"], a["kind"]) for a in firing["SandboxCompileFailures"]] == [("sandbox-child", "crash")]
    prom.wait_until("SandboxWorkerRestartsTest firing", lambda: "SandboxWorkerRestartsTest" in prom.firing())

    # 3. Exit: the child pushes its metrics to the Pushgateway.
    child.send("exit")
    assert child.proc.wait(60) == 0, child.stderr.read_text(errors="replace")[-4000:]
    assert "could not push" not in child.stderr.read_text(errors="replace")
    from prometheus_client.parser import text_string_to_metric_families

    pushed = {}
    for family in text_string_to_metric_families(pushgateway.get("/metrics")):
        for s in family.samples:
            if s.name.startswith("sandbox_") and s.labels.get("job") == "metrics-test":
                pushed.setdefault(s.name, []).append(s)
    hostname = socket.gethostname()
    counts = pushed["sandbox_compile_duration_seconds_count"]
    assert {(s.labels["instance"], s.labels["local_rank"]) for s in counts} == {(hostname, "1")}
    assert sum(s.value for s in counts) == n
    assert [s.value for s in pushed["sandbox_compile_failures_total"] if s.labels["kind"] == "crash"] == [1.0]
    assert [s.value for s in pushed["sandbox_worker_restarts_total"]] == [1.0]
    # ... and Prometheus scrapes them from there with the pushed job and instance.
    pushed_sel = f'{{job="metrics-test",instance="{hostname}",local_rank="1"}}'
    prom.wait_until(
        "the pushed metrics", lambda: prom.value(f"sum(sandbox_compile_duration_seconds_count{pushed_sel})") == n
    )
    assert prom.value(f"sum(sandbox_compile_failures_total{pushed_sel})") == 1
    print(f"real Prometheus + Pushgateway: {time.time() - t_start:.1f} s, {n} reports")

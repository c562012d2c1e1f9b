"""OTLP export (issue 3, point 7), end to end into a real receiver.

A ``rotel`` collector (PyPI ``rotel``, its ``rotel-agent`` binary: ``tests/otlp_receiver.py``,
started by the ``receiver`` fixture of ``tests/conftest.py``) listens on free loopback ports for
the whole module and prints every span it receives (trace id, parent id, attributes). Each
case is one fresh process that trains a small model one step through the sandbox with tracing
on, on an empty cache dir (so both graphs are compiled in a worker and the worker's stages
exist):

* ``app_grpc``: the application set its own TracerProvider (OTLP/gRPC exporter) and
  compiles inside its own span, tracing on through ``options={"trace": True}``: the
  sandbox must use that provider, and hang the graph spans under the user's span.
* ``env_http``: no provider, ``SANDBOX_TRACE=1`` and ``OTEL_EXPORTER_OTLP_*`` (http/protobuf):
  the sandbox exports through its own provider; the caller's context is a W3C
  ``traceparent`` extracted from upstream (no SDK span in this process): the spans
  carry its trace id and hang under its span id.
* ``env_grpc``: the same over gRPC with no caller context at all: each graph span is
  the root of its own trace.

A dead collector (a closed port) must cost a bounded time, one warning at most, no
exception, and leave the reports intact.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from support import HELPERS, free_port, fresh_cache_dir, run_script

# Worker-side Inductor stages every compiled graph has on CPU.
WORKER_STAGES = ("GraphLowering.run", "Scheduler.codegen", "PythonWrapperCodegen.generate")
SANDBOX_STAGES = (
    "inductor_compile",
    "cache_lookup",
    "fx_codegen_and_compile",
    "serialize",
    "wait_for_worker",
    "send",
    "compile_in_worker",
    "transfer",
    "load",
)
EXPORT_WARNING = "sandbox: could not export compile spans"

CHILD = r"""
import os, sys, time

case = sys.argv[1]  # app_grpc | env_http | env_grpc | off | dead
for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SDK_DISABLED"):
    os.environ.pop(name, None)  # from whoever runs pytest; the test sets the generic ones
from opentelemetry import context as otel_context, trace

if case == "app_grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "user-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
elif case == "env_http":
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    otel_context.attach(TraceContextTextMapPropagator().extract({"traceparent": os.environ["TEST_TRACEPARENT"]}))

import torch
import common
import sandbox

out = {"pid": os.getpid()}


def train_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    options = {"trace": True} if case == "app_grpc" else None
    step = torch.compile(model, backend="sandbox", options=options)
    step(torch.randn(8, 16)).pow(2).mean().backward()


t0 = time.time()
if case == "app_grpc":
    tracer = trace.get_tracer("user")
    with tracer.start_as_current_span("user-train-step") as span:
        ctx = span.get_span_context()
        out["user_trace_id"] = format(ctx.trace_id, "032x")
        out["user_span_id"] = format(ctx.span_id, "016x")
        train_step()
    # The application's next span: its id must not repeat one the sandbox made.
    with tracer.start_as_current_span("user-after-compile") as after:
        out["user_after_span_id"] = format(after.get_span_context().span_id, "016x")
else:
    train_step()
out["compile_s"] = time.time() - t0
out["reports"] = common.reports()
out["run_id"] = out["reports"][0]["run_id"] if out["reports"] else None
if case == "app_grpc":
    provider.shutdown()  # the application flushes its own provider
out["emitted_at"] = time.time()  # what follows is the exit: atexit handlers, the sandbox's span flush
common.emit(out)
"""


# --- running a case -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def child_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("otel-child") / "otel_child.py"
    path.write_text(CHILD)
    return path


def _run(case: str, script: Path, tmp_path: Path, probe_seed: Path, env: dict[str, str]) -> Any:
    pythonpath = os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH", "")) if p)
    base = {
        "PYTHONPATH": pythonpath,
        "OTEL_SERVICE_NAME": f"sandbox-test-{case}",
        "SANDBOX_TRACE": "0",  # not inherited from whoever runs pytest; cases turn it on
        "SANDBOX_STORE": str(tmp_path / "runs.db"),  # the run store stays on, but not the user's
    }
    cache = fresh_cache_dir(tmp_path / f"cache-{case}", probe_seed)
    return run_script(str(script), case, cache_dir=cache, env={**base, **env})


def _check_reports(reports: list[dict[str, Any]]) -> None:
    assert sorted(r["graph_kind"] for r in reports) == ["backward", "forward"]
    for r in reports:
        assert r["outcome"] == "isolated", (r["graph_kind"], r["outcome"], r["failure"])
        names = {s["name"] for s in r["stages"]}
        assert set(SANDBOX_STAGES) <= names and set(WORKER_STAGES) <= names, sorted(names)


def _check_trace(spans: list[dict[str, Any]], result: dict[str, Any], parent_span_id: str | None) -> None:
    """The spans of one child's compile: a graph span per report (under
    ``parent_span_id``, or a root) and, under it, a span per stage."""
    by_id: dict[str, dict[str, Any]] = {}
    for s in spans:
        assert s["span_id"] not in by_id, (
            f"span id {s['span_id']} used twice: {by_id[s['span_id']]['name']!r} and {s['name']!r}"
        )
        by_id[s["span_id"]] = s
    graphs = {s["attributes"]["sandbox.report_id"]: s for s in spans if s["name"].startswith("torch.compile ")}
    reports = {r["report_id"]: r for r in result["reports"]}
    assert set(graphs) == set(reports), (sorted(graphs), sorted(reports))
    for report_id, g in graphs.items():
        r = reports[report_id]
        assert g["name"] == f"torch.compile {r['graph_kind']} graph"
        if parent_span_id is None:
            assert g["parent_id"] == "", g
        else:
            assert g["parent_id"] == parent_span_id, g
        a = g["attributes"]
        assert a["sandbox.outcome"] == "isolated"
        assert a["sandbox.graph_kind"] == r["graph_kind"]
        assert a["sandbox.run_id"] == result["run_id"]
        assert a["torch.compile.compile_id"] == r["compile_id"] == "0/0"
        assert a["sandbox.worker_pid"] == r["worker_pid"]
        assert a["torch.compile.fx_graph_cache"] == "miss"
        assert a["torch.compile.graph.nodes"] == r["graph"]["nodes"]

        def ancestors(s: dict[str, Any]) -> list[str]:
            chain = []
            while s["parent_id"] in by_id:
                s = by_id[s["parent_id"]]
                chain.append(s["span_id"])
            return chain

        stages = [s for s in spans if g["span_id"] in ancestors(s)]
        for s in stages:
            assert s["trace_id"] == g["trace_id"], s
            assert s["attributes"]["sandbox.graph_kind"] == r["graph_kind"]
            assert s["attributes"]["sandbox.stage.origin"] in ("parent", "worker")
        assert len(stages) == len(r["stages"]), (len(stages), len(r["stages"]))
        names = {s["name"]: s for s in stages}
        assert set(SANDBOX_STAGES) <= set(names), sorted(names)
        # Worker stages: children (at some depth) of the worker's job, inside the graph span.
        job = names["compile_in_worker"]
        for name in WORKER_STAGES:
            s = names[name]
            assert s["attributes"]["sandbox.stage.origin"] == "worker", s
            assert job["span_id"] in ancestors(s), f"{name} is not inside compile_in_worker"


# --- the cases ------------------------------------------------------------------------------------


def test_application_provider_over_grpc(receiver, child_script, tmp_path, probe_seed) -> None:
    result = _run(
        "app_grpc",
        child_script,
        tmp_path,
        probe_seed,
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("grpc"),
        },
    )
    _check_reports(result["reports"])
    trace_id = result["user_trace_id"]
    for r in result["reports"]:
        assert (r["trace_id"], r["parent_span_id"]) == (trace_id, result["user_span_id"])
    receiver.wait_for(
        lambda s: s["name"] == "user-after-compile" and s["trace_id"] != trace_id, "application span after the compile"
    )
    receiver.wait_for(lambda s: s["trace_id"] == trace_id and s["name"] == "user-train-step", "user span")
    spans = [s for s in receiver.spans() if s["trace_id"] == trace_id]
    user = [s for s in spans if s["name"] == "user-train-step"]
    assert len(user) == 1 and user[0]["span_id"] == result["user_span_id"]
    _check_trace([s for s in spans if s is not user[0]], result, parent_span_id=result["user_span_id"])
    # The sandbox's spans came through the application's provider, not a second one.
    assert {s["service"] for s in spans} == {"user-app"}
    after = [s for s in receiver.spans() if s["name"] == "user-after-compile"]
    assert [s["span_id"] for s in after] == [result["user_after_span_id"]]
    assert result["user_after_span_id"] not in {s["span_id"] for s in spans}


def test_own_exporter_over_http_under_a_remote_parent(receiver, child_script, tmp_path, probe_seed) -> None:
    trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
    result = _run(
        "env_http",
        child_script,
        tmp_path,
        probe_seed,
        {
            "SANDBOX_TRACE": "1",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("http"),
            "TEST_TRACEPARENT": f"00-{trace_id}-{parent}-01",
        },
    )
    _check_reports(result["reports"])
    for r in result["reports"]:
        assert (r["trace_id"], r["parent_span_id"]) == (trace_id, parent)
    # The child exported at exit (the sandbox's provider flushes then): all there by now.
    spans = receiver.wait_for(lambda s: s["trace_id"] == trace_id, "span of the compile", within=10)
    assert len(spans) == sum(1 + len(r["stages"]) for r in result["reports"])
    assert {s["service"] for s in spans} == {"sandbox-test-env_http"}  # OTEL_SERVICE_NAME
    _check_trace(spans, result, parent_span_id=parent)


def test_own_exporter_over_grpc_without_caller_context(receiver, child_script, tmp_path, probe_seed) -> None:
    result = _run(
        "env_grpc",
        child_script,
        tmp_path,
        probe_seed,
        {
            "SANDBOX_TRACE": "1",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("grpc"),
        },
    )
    _check_reports(result["reports"])
    graphs = receiver.wait_for(
        lambda s: s["attributes"].get("sandbox.run_id") == result["run_id"], "graph span", within=10
    )
    assert len(graphs) == 2
    trace_ids = {g["trace_id"] for g in graphs}
    assert len(trace_ids) == 2, "each graph's spans are a trace of their own"
    spans = [s for s in receiver.spans() if s["trace_id"] in trace_ids]
    assert len(spans) == sum(1 + len(r["stages"]) for r in result["reports"])
    _check_trace(spans, result, parent_span_id=None)


# A dead collector never blocks a compile: spans are queued and exported by the
# BatchSpanProcessor's thread. Where it could cost time is the exit: the sandbox's own provider
# is given SANDBOX_OTLP_EXIT_S (1 s by default) to deliver the last spans, then the process goes.
DEAD_COLLECTOR_EXIT_EXTRA_S = 1.0 + 1.5  # + 1.5 s for exit noise (worker pool shutdown) on a busy machine
# The whole process, against the same run with tracing off: the exit bound above plus
# the noise between two cold compiles (several seconds on 2 busy cores).
DEAD_COLLECTOR_EXTRA_S = 15.0


def _off_and_dead(child_script: Path, tmp_path: Path, probe_seed: Path, attempt: int) -> tuple[Any, float, Any, float]:
    """One run with tracing off and one against a dead collector, with each one's exit time
    (from its last line to its end, the worker's exit included)."""
    off = _run(f"off{attempt}", child_script, tmp_path, probe_seed, {})
    off_exit = time.time() - off["emitted_at"]
    dead_port = free_port()  # bound, then closed: nothing listens there
    dead = _run(
        f"dead{attempt}",
        child_script,
        tmp_path,
        probe_seed,
        {
            "SANDBOX_TRACE": "1",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead_port}",
        },
    )
    return off, off_exit, dead, time.time() - dead["emitted_at"]


def test_dead_collector_costs_a_bounded_time_and_one_warning(child_script, tmp_path, probe_seed) -> None:
    off, off_exit, dead, dead_exit = _off_and_dead(child_script, tmp_path, probe_seed, 0)
    if dead_exit - off_exit >= DEAD_COLLECTOR_EXIT_EXTRA_S or dead.seconds - off.seconds >= DEAD_COLLECTOR_EXTRA_S:
        # Timed once more: a test beside this one on a 2-core machine can stall one exit by
        # seconds (seen once in CI: 6.8 s against 1.4 s, not reproduced alone or beside spinners);
        # a dead collector that really costs the exit more fails both pairs.
        print(f"first pair: exit {dead_exit:.1f} s vs {off_exit:.1f} s; timing once more")
        off, off_exit, dead, dead_exit = _off_and_dead(child_script, tmp_path, probe_seed, 1)
    _check_reports(dead["reports"])
    _check_reports(off["reports"])
    warnings = dead.stderr.count(EXPORT_WARNING)
    assert warnings == 1, f"expected one export warning, got {warnings}:\n{dead.stderr[-4000:]}"
    assert "Traceback" not in dead.stderr, dead.stderr[-4000:]
    # One line: neither the warning's source line nor the exporter's own retry lines.
    said = [line for line in dead.stderr.splitlines() if "export" in line.lower() or "127.0.0.1" in line]
    assert len(said) == 1 and said[0].startswith(EXPORT_WARNING), said
    extra = dead.seconds - off.seconds
    print(
        f"dead collector: process {dead.seconds:.1f} s vs {off.seconds:.1f} s with tracing off "
        f"(compile {dead['compile_s']:.1f} vs {off['compile_s']:.1f} s, exit {dead_exit:.1f} vs {off_exit:.1f} s), "
        f"{warnings} export warning(s)"
    )
    assert dead_exit - off_exit < DEAD_COLLECTOR_EXIT_EXTRA_S, (
        f"exit took {dead_exit:.1f} s (tracing off: {off_exit:.1f} s)"
    )
    assert extra < DEAD_COLLECTOR_EXTRA_S, (
        f"a dead collector cost {extra:.1f} s (process {dead.seconds:.1f} s, tracing off {off.seconds:.1f} s)"
    )

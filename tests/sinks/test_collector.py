"""``otel-collector.yaml`` (issue 6, point 5).

The official Collector (otelcol-contrib) does not install here, so:

* the file's structure is checked: every component a pipeline (or the service) uses is
  defined, every defined component is used, each is of a type otelcol-contrib has,
  memory_limiter comes first and batch last, traces go to an OTLP backend and ``debug``,
  metrics to a ``prometheus`` exporter, and the ports match the sandbox's defaults (the
  OTLP exporter's gRPC and HTTP endpoints, the suggested metrics base port + local ranks);
* the sandbox's default OTLP export (``SANDBOX_TRACE=1``, the sandbox's own provider,
  OTLP/gRPC from ``OTEL_EXPORTER_OTLP_ENDPOINT``) goes through a chain of two real ``rotel``
  collectors, the first forwarding to the second over OTLP, as an agent forwards to a gateway:
  every span arrives at the second with its trace, parents and attributes intact. The report
  is published without a compile (``tests/sinks/test_otel.py`` covers real compiles into a receiver;
  here the point is the forwarding hop).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from otlp_receiver import parse_rotel, rotel_binary, unavailable
from support import ROOT, free_port, script_env

CONFIG = ROOT / "otel-collector.yaml"

# Component types of otelcol-contrib that the file may use (the part of an id before "/").
KNOWN = {
    "receivers": {"otlp", "prometheus", "hostmetrics"},
    "processors": {"memory_limiter", "batch", "resource", "attributes", "filter", "tail_sampling"},
    "exporters": {"otlp", "otlphttp", "debug", "prometheus", "prometheusremotewrite"},
    "extensions": {"health_check", "pprof", "zpages"},
}


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def test_every_component_used_is_defined_and_every_defined_one_used(config: dict[str, Any]) -> None:
    assert set(config) <= {"receivers", "processors", "exporters", "extensions", "connectors", "service"}, sorted(
        config
    )
    service = config["service"]
    used: dict[str, set[str]] = {
        "receivers": set(),
        "processors": set(),
        "exporters": set(),
        "extensions": set(service.get("extensions", [])),
    }
    for name, pipeline in service["pipelines"].items():
        assert _type(name) in ("traces", "metrics", "logs"), name
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"pipeline {name} needs receivers and exporters"
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), (
                    f"pipeline {name} uses {kind[:-1]} {component!r}, which is not defined"
                )
                used[kind].add(component)
    for kind, ids in used.items():
        defined = set(config.get(kind) or {})
        assert ids <= defined, f"{kind} used but not defined: {sorted(ids - defined)}"
        assert defined <= ids, f"{kind} defined but never used: {sorted(defined - ids)}"
        for component in defined:
            assert _type(component) in KNOWN[kind], f"{kind[:-1]} {component!r}: not a type otelcol-contrib has"


def test_pipelines_as_the_issue_asks(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    traces, metrics = pipelines["traces"], pipelines["metrics"]
    for name, p in pipelines.items():
        assert p["processors"][0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert p["processors"][-1] == "batch", f"{name}: batch must come last"
    assert "otlp" in traces["receivers"] and "otlp" in metrics["receivers"]
    assert {_type(e) for e in traces["exporters"]} == {"otlp", "debug"}
    assert [_type(e) for e in metrics["exporters"]] == ["prometheus"]
    assert config["service"]["extensions"] == ["health_check"]
    limiter = config["processors"]["memory_limiter"]
    assert "check_interval" in limiter and ({"limit_mib", "limit_percentage"} & set(limiter))
    (backend,) = [e for e in traces["exporters"] if _type(e) == "otlp"]
    assert config["exporters"][backend]["endpoint"], "the tracing backend needs an endpoint"
    text = CONFIG.read_text()
    assert "otelcol-contrib --config otel-collector.yaml" in text and "CHANGE" in text


def test_ports_match_the_sandboxs_defaults(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.sinks import otel
    from sandbox.sinks.prometheus import SUGGESTED_BASE_PORT

    for name in list(os.environ):
        if name.startswith("OTEL_EXPORTER_OTLP"):
            monkeypatch.delenv(name)
    defaults = {}
    for protocol in ("grpc", "http/protobuf"):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        exporter = otel._exporter_from_env()
        defaults[protocol] = exporter._endpoint
        exporter.shutdown()
    protocols = config["receivers"]["otlp"]["protocols"]
    assert _port(protocols["grpc"]["endpoint"]) == _port(defaults["grpc"]) == 4317, defaults
    assert _port(protocols["http"]["endpoint"]) == urlparse(defaults["http/protobuf"]).port == 4318, defaults
    # The sandbox's metrics endpoints of one host: the suggested base port + local rank 0..7,
    # as in prometheus/prometheus.example.yml.
    (scrape,) = config["receivers"]["prometheus/sandbox"]["config"]["scrape_configs"]
    targets = [t for sc in scrape["static_configs"] for t in sc["targets"]]
    assert [_port(t) for t in targets] == [SUGGESTED_BASE_PORT + rank for rank in range(8)]
    example = yaml.safe_load((ROOT / "prometheus" / "prometheus.example.yml").read_text())
    (job,) = [j for j in example["scrape_configs"] if j["job_name"] == "torch-compile-sandbox"]
    assert [_port(t) for sc in job["static_configs"] for t in sc["targets"]] == [_port(t) for t in targets]
    assert _port(config["extensions"]["health_check"]["endpoint"]) == 13133
    assert _port(config["exporters"]["prometheus"]["endpoint"]) == 8889


# --- the default export through two real collectors -------------------------------------------

CHILD = r"""
import json, os, time
from sandbox import runtime
from sandbox.options import Options
from sandbox.record.report import CompileReport, Stage

runtime.current().configure(Options.resolve())  # SANDBOX_TRACE=1 in the environment: the default OTLP export
t = time.time() - 3.0
stages = [
    Stage("inductor_compile", t, t + 2.9),
    Stage("cache_lookup", t, t + 0.01, parent="inductor_compile"),
    Stage("fx_codegen_and_compile", t + 0.01, t + 2.9, parent="inductor_compile"),
    Stage("serialize", t + 0.02, t + 0.1, parent="fx_codegen_and_compile"),
    Stage("wait_for_worker", t + 0.1, t + 0.2, parent="fx_codegen_and_compile"),
    Stage("send", t + 0.2, t + 0.21, parent="fx_codegen_and_compile"),
    Stage("compile_in_worker", t + 0.21, t + 2.5, origin="worker", parent="fx_codegen_and_compile"),
    Stage("GraphLowering.run", t + 0.3, t + 0.9, origin="worker", parent="compile_in_worker"),
    Stage("transfer", t + 2.5, t + 2.51, parent="fx_codegen_and_compile"),
    Stage("load", t + 2.51, t + 2.9, parent="fx_codegen_and_compile"),
]
run_id = runtime.current().run().run_id
report = CompileReport(run_id=run_id, compile_id="0/0", graph_kind="forward", outcome="isolated",
                       started_at=t, duration_s=2.95, stages=stages, worker_pid=4242,
                       caches={"fx_graph": {"state": "miss"}})
runtime.current().publish(report)
print("@@RESULT@@" + json.dumps(report.to_dict()), flush=True)
# exit: the sandbox's own provider flushes its spans at exit
"""


class Rotel:
    def __init__(self, name: str, tmp: Path, exporter: list[str]) -> None:
        binary = rotel_binary()
        if binary is None:
            unavailable("the rotel package (rotel-agent) is not installed")
        self.name = name
        self.grpc_port, self.http_port = free_port(), free_port()
        self.log = tmp / f"{name}.out"
        cmd = [
            binary,
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{self.http_port}",
            "--pid-file",
            str(tmp / f"{name}.pid"),
            *exporter,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env={**env, "NO_COLOR": "1"}, start_new_session=True
            )
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                unavailable(f"rotel-agent ({name}) exited with {self.proc.returncode}: {self.text()[-2000:]}")
            try:
                for port in (self.grpc_port, self.http_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    unavailable(
                        f"rotel-agent ({name}) did not listen on 127.0.0.1:{self.grpc_port}/{self.http_port} within "
                        "20 s"
                    )
                time.sleep(0.2)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Rotel, Rotel]]:
    started: list[Rotel] = []
    try:
        # The gateway: prints every span it receives.
        gateway = Rotel(
            "gateway",
            tmp_path,
            ["--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"],
        )
        started.append(gateway)
        # The agent next to the job: forwards everything to the gateway over OTLP/gRPC.
        agent = Rotel(
            "agent",
            tmp_path,
            ["--exporter", "otlp", "--otlp-exporter-endpoint", f"http://127.0.0.1:{gateway.grpc_port}"],
        )
        started.append(agent)
        yield agent, gateway
    finally:
        for r in reversed(started):
            r.stop()


def test_default_export_through_a_forwarding_collector(chain: tuple[Rotel, Rotel], tmp_path: Path) -> None:
    agent, gateway = chain
    env = script_env(
        tmp_path,
        {
            "SANDBOX_TRACE": "1",
            "SANDBOX_STORE": "off",
            "OTEL_SERVICE_NAME": "sandbox-collector-chain",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{agent.grpc_port}",  # the agent only
        },
    )
    for name in list(env):
        if (
            name.startswith("OTEL_EXPORTER_OTLP_")
            and name != "OTEL_EXPORTER_OTLP_ENDPOINT"
            or name == "OTEL_SDK_DISABLED"
        ):
            env.pop(name)  # the default protocol (gRPC) and timeouts: what a user gets
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "could not export" not in proc.stderr, proc.stderr[-4000:]
    (line,) = [s for s in proc.stdout.splitlines() if s.startswith("@@RESULT@@")]
    report = json.loads(line[len("@@RESULT@@") :])

    expected = 1 + len(report["stages"])
    deadline = time.time() + 30
    while True:
        graphs = [
            s for s in parse_rotel(gateway.text()) if s["attributes"].get("sandbox.report_id") == report["report_id"]
        ]
        spans = [s for s in parse_rotel(gateway.text()) if graphs and s["trace_id"] == graphs[0]["trace_id"]]
        if len(spans) >= expected or time.time() > deadline:
            break
        time.sleep(0.5)
    assert len(graphs) == 1, (
        f"the gateway got {len(graphs)} graph spans\nagent:\n{agent.text()[-3000:]}\ngateway:\n{gateway.text()[-3000:]}"
    )
    (graph,) = graphs
    assert len(spans) == expected, (len(spans), expected)
    assert graph["name"] == "torch.compile forward graph" and graph["parent_id"] == ""
    a = graph["attributes"]
    assert (a["sandbox.run_id"], a["sandbox.outcome"], a["sandbox.worker_pid"], a["torch.compile.fx_graph_cache"]) == (
        report["run_id"],
        "isolated",
        4242,
        "miss",
    )
    assert {s["service"] for s in spans} == {"sandbox-collector-chain"}
    # The stage tree survived the hop: each stage span under its enclosing stage.
    by_id = {s["span_id"]: s for s in spans}
    for stage in report["stages"]:
        (span,) = [s for s in spans if s["name"] == stage["name"]]
        parent = by_id[span["parent_id"]]
        assert parent["name"] == (stage["parent"] or graph["name"]), (stage["name"], parent["name"])
        assert span["attributes"]["sandbox.stage.origin"] == stage["origin"]
    # Nothing reached the gateway except through the agent: the child only knew the agent.
    assert str(gateway.grpc_port) not in env["OTEL_EXPORTER_OTLP_ENDPOINT"]

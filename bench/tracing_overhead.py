#!/usr/bin/env python
"""What do the CompileReport and OpenTelemetry tracing cost? (issue 3, point 9)

Tracing off vs on, side by side: each measurement is a fresh Python process with a
fresh, empty TORCHINDUCTOR_CACHE_DIR that trains one zoo model one step through
``backend="sandbox"`` (forward, backward - compiled lazily - and the optimizer step).
The two variants alternate (off on, on off, ...), medians over ``--repeats``.

  off   ``options={}``: the report is still built and stored (it always is)
  on    ``options={"trace": True}``: every report also becomes spans, exported to a
        receiver on this machine: a ``rotel`` collector (OTLP/gRPC, blackhole
        exporter) started by this script when the ``rotel`` package is installed (the
        sandbox then exports through its own provider, configured from OTEL_*),
        else an in-memory exporter behind an application TracerProvider (the
        sandbox then uses that provider). The header says which.

Printed per model:
  compile s   from just before ``torch.compile`` to the end of the first training step
              (what tracing could slow down); the target ratio on/off <= 1.03 is judged here
  process s   the child's whole wall time, spawn to exit (includes the span flush at exit)
  sink ms     time inside the OTel sink per graph (tracing on): the direct cost of
              making the spans, measured in-process, so free of compile-time noise
  report ms   time spent building and publishing each report (every ReportBuilder call,
              publish and listeners included) with tracing off: CPU time of the compiling
              thread (target < 1 ms per graph, median) and wall time (which on a busy
              machine includes preemption by other processes and the store's writer thread)
  causes ms   with tracing off, the time in the functions that capture why a graph compiled
              (docs/REPORT.md, Causes: compile_reason, recompile, inputs, cache_keys, the
              kernels' ops), per graph: everything they spent since the previous report was
              finished goes to the next one (a backend call's share to its forward). The inputs'
              walk also feeds the graph hash, which it counts; the graph's code, which only the
              hash reads (and which was read before the causes existed), it does not. CPU of the
              compiling thread, target < 1 ms per graph, median; part of it (cache_keys, ops) is
              inside report ms too

The run store is on in both variants (the default), each child writing a fresh file of
its own (SANDBOX_STORE), never the user's store.

Usage
  python bench/tracing_overhead.py                      # mlp + transformer, 3 repeats
  python bench/tracing_overhead.py --quick              # mlp, 1 repeat
  python bench/tracing_overhead.py --models mlp --repeats 5 --out tracing.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _paths import checkout_first  # bench/, the script's own folder, is first on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MARK = "@@TRACING-BENCH@@"
RATIO_TARGET = 1.03
REPORT_MS_TARGET = 1.0
CAUSES_MS_TARGET = 1.0
# The functions that capture the causes, by module: timed in the child where they are looked up.
CAUSES = (
    ("sandbox.torch_adapter.dynamo", ("compile_reason", "recompile_reason", "symbolic_inputs")),
    ("sandbox.record.builder", ("graph_signature", "recompile")),
    ("sandbox.torch_adapter.events", ("cache_keys",)),
    ("sandbox.record.kernels", ("kernel_ops",)),
)
EXPORT_WARNING = "sandbox: could not export compile spans"


# --- the child: one measurement ------------------------------------------------------------------


def child(spec: dict[str, Any]) -> None:
    t_main = time.time()
    provider = memory = None
    if spec["variant"] == "on" and spec["receiver"] == "memory":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(memory))
        trace.set_tracer_provider(provider)

    import torch  # noqa: F401

    import sandbox
    from sandbox import runtime, zoo
    from sandbox.record import builder as capture

    # Time every ReportBuilder call (finish() includes publish and the listeners) per report.
    builder_s: dict[str, float] = {}  # report id -> wall seconds in its ReportBuilder calls
    builder_cpu_s: dict[str, float] = {}  # ... CPU seconds of the compiling thread
    by_call: dict[str, float] = {}  # method -> wall seconds, all reports together

    def timed(name: str, fn: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(self, *args, **kwargs)
            finally:
                spent = time.perf_counter() - t
                self.__dict__["_bench_s"] = self.__dict__.get("_bench_s", 0.0) + spent
                self.__dict__["_bench_cpu_s"] = self.__dict__.get("_bench_cpu_s", 0.0) + time.thread_time() - c
                by_call[name] = by_call.get(name, 0.0) + spent
                if name == "finish":
                    builder_s[self.report.report_id] = self.__dict__["_bench_s"]
                    builder_cpu_s[self.report.report_id] = self.__dict__["_bench_cpu_s"]

        return wrapper

    # The causes' capture, per graph: what its functions spent since the previous report finished.
    causes_pending = [0.0, 0.0]  # wall, CPU seconds not yet given to a report
    causes_s: dict[str, tuple[float, float]] = {}  # report id -> (wall, CPU) seconds
    causes_by_fn: dict[str, list[float]] = {}  # function -> [calls, wall seconds]

    def timed_cause(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent, cpu = time.perf_counter() - t, time.thread_time() - c
                causes_pending[0] += spent
                causes_pending[1] += cpu
                entry = causes_by_fn.setdefault(name, [0, 0.0])
                entry[0] += 1
                entry[1] += spent

        return wrapper

    import importlib

    for module_name, names in CAUSES:
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, timed_cause(name, getattr(module, name)))

    finish = capture.ReportBuilder.finish

    def finish_taking_causes(self: Any) -> Any:
        try:
            return finish(self)
        finally:
            causes_s[self.report.report_id] = (causes_pending[0], causes_pending[1])
            causes_pending[0] = causes_pending[1] = 0.0

    capture.ReportBuilder.finish = finish_taking_causes

    for name in (
        "stage",
        "worker_events",
        "set_outcome",
        "fail",
        "graph_size",
        "worker_reply",
        "compiled",
        "aot_cache",
        "dynamo_graph",
        "finish",
    ):
        setattr(capture.ReportBuilder, name, timed(name, getattr(capture.ReportBuilder, name)))
    init = capture.ReportBuilder.__init__

    def timed_init(self: Any, *args: Any, **kwargs: Any) -> None:
        t, c = time.perf_counter(), time.thread_time()
        init(self, *args, **kwargs)
        self.__dict__["_bench_s"] = time.perf_counter() - t
        self.__dict__["_bench_cpu_s"] = time.thread_time() - c
        by_call["__init__"] = by_call.get("__init__", 0.0) + self.__dict__["_bench_s"]

    capture.ReportBuilder.__init__ = timed_init

    sink_s: dict[str, float] = {}
    if spec["variant"] == "on":
        from sandbox.sinks import otel

        call = otel.OtelSink.consume

        def timed_sink(self: Any, report: Any) -> None:
            t = time.perf_counter()
            try:
                call(self, report)
            finally:
                sink_s[report.report_id] = time.perf_counter() - t

        otel.OtelSink.consume = timed_sink

    options = {"trace": True} if spec["variant"] == "on" else None
    t_imported = time.time()
    t0 = time.perf_counter()
    zoo.run(spec["model"], backend="sandbox", steps=1, options=options)
    compile_s = time.perf_counter() - t0
    reports = sandbox.reports()
    out: dict[str, Any] = {
        "compile_s": compile_s,
        "import_s": t_imported - t_main,
        "graphs": len(reports),
        "outcomes": [r.outcome for r in reports],
        "report_ms": [builder_s.get(r.report_id, float("nan")) * 1e3 for r in reports],
        "report_cpu_ms": [builder_cpu_s.get(r.report_id, float("nan")) * 1e3 for r in reports],
        "sink_ms": [sink_s[r.report_id] * 1e3 for r in reports if r.report_id in sink_s],
        "causes_ms": [causes_s[r.report_id][0] * 1e3 for r in reports if r.report_id in causes_s],
        "causes_cpu_ms": [causes_s[r.report_id][1] * 1e3 for r in reports if r.report_id in causes_s],
        "causes_by_fn": {
            k: {"calls": n, "ms_per_graph": s * 1e3 / max(1, len(reports))} for k, (n, s) in causes_by_fn.items()
        },
        "report_ms_by_call": {
            k: v * 1e3 / max(1, len(reports)) for k, v in sorted(by_call.items(), key=lambda kv: -kv[1])
        },
        "stages": sum(len(r.stages) for r in reports),
        "tracing": runtime.current().tracing,
    }
    if memory is not None and provider is not None:
        provider.force_flush()
        out["spans_exported"] = len(memory.get_finished_spans())
    sys.stdout.write(MARK + json.dumps(out) + "\n")
    sys.stdout.flush()


# --- the parent -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rotel(workdir: str) -> tuple[subprocess.Popen | None, str]:
    """A local OTLP receiver, or (None, why not)."""
    try:
        import rotel
    except ImportError:
        return None, "the rotel package is not installed"
    binary = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    if not os.path.exists(binary):
        return None, f"{binary} is missing"
    grpc_port, http_port = _free_port(), _free_port()
    log = open(os.path.join(workdir, "rotel.log"), "wb")
    proc = subprocess.Popen(
        [
            binary,
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http_port}",
            "--exporter",
            "blackhole",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
        start_new_session=True,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            return None, f"rotel-agent exited with {proc.returncode} (see {log.name})"
        try:
            socket.create_connection(("127.0.0.1", grpc_port), timeout=1).close()
            proc.endpoint = f"http://127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
            return (
                proc,
                f"rotel collector, OTLP/gRPC on 127.0.0.1:{grpc_port} (blackhole exporter), the sandbox's own exporter",
            )
        except OSError:
            time.sleep(0.2)
    stop(proc)
    return None, "rotel-agent did not listen within 20 s"


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_child(spec: dict[str, Any], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    load = os.getloadavg()[0]
    t = time.time()
    try:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": f"ran past {timeout_s} s", "process_s": time.time() - t, "load_1m": load}
    rec: dict[str, Any] = {"process_s": time.time() - t, "load_1m": load, "returncode": proc.returncode}
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        rec.update(ok=False, why=f"exit code {proc.returncode}", stderr_tail=proc.stderr[-3000:])
        return rec
    rec.update(json.loads(lines[-1][len(MARK) :]))
    rec["export_warnings"] = proc.stderr.count(EXPORT_WARNING)
    failed = [o for o in rec["outcomes"] if o == "failed"]
    rec["ok"] = not failed and rec["graphs"] > 0 and (spec["variant"] == "off" or rec["tracing"])
    if not rec["ok"]:
        rec["why"] = f"{len(failed)} graph(s) failed" if failed else "no graphs or tracing did not turn on"
        rec["stderr_tail"] = proc.stderr[-3000:]
    return rec


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models", default="mlp,transformer", help="comma-separated zoo entries (default: mlp,transformer)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 repeat, mlp only")
    ap.add_argument(
        "--receiver", choices=("auto", "rotel", "memory"), default="auto", help="where spans go with tracing on"
    )
    ap.add_argument(
        "--store", choices=("on", "off"), default="on", help="the run store in both variants (default on, as for users)"
    )
    ap.add_argument("--child-timeout", type=float, default=600.0)
    ap.add_argument("--out", help="write every run's numbers to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.quick:
        args.repeats, args.models = 1, "mlp"
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    workdir = tempfile.mkdtemp(prefix="sandbox-tracing-bench-")
    rotel_proc, how = (None, "in-memory exporter (--receiver memory)")
    if args.receiver in ("auto", "rotel"):
        rotel_proc, how = start_rotel(workdir)
        if rotel_proc is None:
            if args.receiver == "rotel":
                print(f"no rotel receiver: {how}", file=sys.stderr)
                return 2
            how = f"in-memory exporter behind an application TracerProvider (no rotel: {how})"
    receiver = "rotel" if rotel_proc is not None else "memory"

    import platform

    print(
        f"# tracing overhead: models {', '.join(models)}, {args.repeats} repeat(s), python "
        f"{platform.python_version()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    print(f"# tracing on exports to: {how}; run store {args.store} in both variants")
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(args.repeats):
            for model in models:
                order = ("off", "on") if rep % 2 == 0 else ("on", "off")
                for variant in order:
                    cache = tempfile.mkdtemp(prefix=f"cache-{model}-{variant}-", dir=workdir)
                    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "OTEL_"))}
                    env.update(
                        TORCHINDUCTOR_CACHE_DIR=cache,
                        PYTHONPATH=checkout_first(env.get("PYTHONPATH")),
                    )
                    env.pop("TORCHINDUCTOR_FX_COMPILE_MODE", None)
                    # The run store on (the default), in a fresh file here: never the user's own store.
                    env["SANDBOX_STORE"] = os.path.join(cache, "runs.db") if args.store == "on" else "off"
                    if variant == "on" and receiver == "rotel":
                        env.update(
                            OTEL_EXPORTER_OTLP_ENDPOINT=rotel_proc.endpoint,  # type: ignore[union-attr]
                            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                            OTEL_SERVICE_NAME="sandbox-tracing-bench",
                        )
                    spec = {"model": model, "variant": variant, "receiver": receiver}
                    rec = run_child(spec, env, args.child_timeout)
                    rec.update(model=model, variant=variant, repeat=rep)
                    runs.append(rec)
                    shutil.rmtree(cache, ignore_errors=True)
                    state = "ok" if rec["ok"] else f"FAILED ({rec.get('why')})"
                    print(
                        f"  [{rep + 1}/{args.repeats}] {model:12s} {variant:3s} compile "
                        f"{rec.get('compile_s', float('nan')):6.2f} s  "
                        f"process {rec['process_s']:6.2f} s  load {rec['load_1m']:.1f}  {state}",
                        flush=True,
                    )
                    if not rec["ok"] and rec.get("stderr_tail"):
                        print("    " + rec["stderr_tail"][-1500:].replace("\n", "\n    "))
    finally:
        stop(rotel_proc)

    failures = sum(not r["ok"] for r in runs)
    verdicts: list[tuple[str, bool | None]] = []
    print()
    print("| model | variant | compile s (median) | min-max | process s (median) | graphs | ok/failed |")
    print("|---|---|---|---|---|---|---|")
    summary: dict[str, Any] = {}
    for model in models:
        row = {}
        for variant in ("off", "on"):
            ok = [r for r in runs if r["model"] == model and r["variant"] == variant and r["ok"]]
            bad = [r for r in runs if r["model"] == model and r["variant"] == variant and not r["ok"]]
            c = [r["compile_s"] for r in ok]
            row[variant] = {"compile_s": med(c), "process_s": med([r["process_s"] for r in ok]), "runs": ok}
            rng = f"{min(c):.2f}-{max(c):.2f}" if c else "-"
            graphs = ok[0]["graphs"] if ok else "-"
            print(
                f"| {model} | {variant} | {med(c):.2f} | {rng} | {row[variant]['process_s']:.2f} | {graphs} | "
                f"{len(ok)}/{len(bad)} |"
            )
        summary[model] = row
    print()
    for model, row in summary.items():
        off, on = row["off"], row["on"]
        ratio = on["compile_s"] / off["compile_s"] if off["runs"] and on["runs"] else float("nan")
        pratio = on["process_s"] / off["process_s"] if off["runs"] and on["runs"] else float("nan")
        sink = [ms for r in on["runs"] for ms in r["sink_ms"]]
        sink_share = [sum(r["sink_ms"]) / 1e3 / r["compile_s"] for r in on["runs"]]
        report = [ms for r in off["runs"] for ms in r["report_ms"]]
        report_cpu = [ms for r in off["runs"] for ms in r["report_cpu_ms"]]
        spread = [
            (
                max(v["runs"], key=lambda r: r["compile_s"])["compile_s"]
                - min(v["runs"], key=lambda r: r["compile_s"])["compile_s"]
            )
            / v["compile_s"]
            for v in (off, on)
            if len(v["runs"]) > 1
        ]
        noise = (
            f"run-to-run spread of a variant up to {100 * max(spread):.0f}%"
            if spread
            else "one run per variant: spread unknown"
        )
        print(
            f"{model}: compile time on/off = {ratio:.3f}x (target <= {RATIO_TARGET}; {noise}); process time on/off = "
            f"{pratio:.3f}x (informational)"
        )
        print(
            f"{model}: OTel sink per graph (tracing on): median {med(sink):.2f} ms, max "
            f"{max(sink, default=float('nan')):.2f} ms "
            f"= {100 * med(sink_share):.3f}% of compile time (direct cost, no compile noise)"
        )
        print(
            f"{model}: report building per graph (tracing off, store on): CPU of the compiling thread median "
            f"{med(report_cpu):.3f} ms, "
            f"max {max(report_cpu, default=float('nan')):.3f} ms (target < {REPORT_MS_TARGET} ms); wall median "
            f"{med(report):.3f} ms, "
            f"max {max(report, default=float('nan')):.3f} ms (wall includes preemption: other processes, the store's "
            "writer thread)"
        )
        if off["runs"]:
            calls = off["runs"][0]["report_ms_by_call"]
            print(
                f"{model}:   by ReportBuilder call, ms per graph (first run): "
                + ", ".join(f"{k} {v:.3f}" for k, v in calls.items())
            )
        causes_cpu = [ms for r in off["runs"] for ms in r.get("causes_cpu_ms", [])]
        causes = [ms for r in off["runs"] for ms in r.get("causes_ms", [])]
        # Measured only if the capture's functions ran at all: zeros from a capture that never ran are no figure.
        causes_called = any(f["calls"] for r in off["runs"] for f in r.get("causes_by_fn", {}).values())
        if causes_cpu and causes_called:
            print(
                f"{model}: capture of the causes per graph (tracing off): CPU of the compiling thread median "
                f"{med(causes_cpu):.3f} ms, max {max(causes_cpu):.3f} ms (target < {CAUSES_MS_TARGET} ms); wall "
                f"median {med(causes):.3f} ms, max {max(causes):.3f} ms"
            )
            by_fn = off["runs"][0]["causes_by_fn"]
            print(
                f"{model}:   by function, ms per graph (first run): "
                + ", ".join(f"{k} {v['ms_per_graph']:.3f} ({v['calls']} calls)" for k, v in by_fn.items())
            )
        else:
            print(f"{model}: capture of the causes per graph: not reached (no tracing-off run measured it)")
        warnings = sum(r.get("export_warnings", 0) for r in on["runs"])
        if warnings:
            print(f"{model}: CAVEAT: {warnings} span export warning(s) with tracing on")
        spans = [r["spans_exported"] for r in on["runs"] if "spans_exported" in r]
        if spans:
            print(f"{model}: spans exported in memory per run: {spans}")
        verdicts.append(
            (
                f"{model} tracing on/off compile time <= {RATIO_TARGET}x",
                ratio <= RATIO_TARGET if ratio == ratio else None,
            )
        )
        verdicts.append(
            (
                f"{model} direct cost of tracing (sink time / compile time, median) <= {100 * (RATIO_TARGET - 1):.0f}%",
                med(sink_share) <= RATIO_TARGET - 1 if sink_share else None,
            )
        )
        verdicts.append(
            (
                f"{model} report building < {REPORT_MS_TARGET} ms per graph (CPU, median)",
                med(report_cpu) < REPORT_MS_TARGET if report_cpu else None,
            )
        )
        verdicts.append(
            (
                f"{model} capture of the causes < {CAUSES_MS_TARGET} ms per graph (CPU, median)",
                med(causes_cpu) < CAUSES_MS_TARGET if causes_cpu and causes_called else None,
            )
        )
    loads = [r["load_1m"] for r in runs]
    if loads and max(loads) > (os.cpu_count() or 1):
        print(
            f"CAVEAT: busy machine: 1-minute load average up to {max(loads):.1f} on {os.cpu_count()} cores during "
            "the runs; "
            f"compile-time ratios carry that noise (see min-max), the in-process sink and report numbers do not"
        )
    print()
    for what, verdict in verdicts:
        print(f"{'PASS' if verdict else 'FAIL' if verdict is not None else 'NO DATA'}: {what}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"receiver": how, "models": models, "repeats": args.repeats, "runs": runs}, f, indent=1)
    shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print(f"{failures} run(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

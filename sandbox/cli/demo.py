"""``sandbox demo``: compile the model zoo through the sandbox and show what happened.

For each zoo entry: run it eagerly (the reference), run it again through
``torch.compile(..., backend="sandbox")``, compare the two, and collect the
entry's reports. Progress goes to stderr; the per-graph table, the totals and
the verdict go to stdout. The exit code is 0 when every model matched eager,
1 when one did not, 2 for an unknown model or a store that cannot be used.

Every report goes to the run store (``store``, else ``SANDBOX_STORE``, else the
default file), under one run named ``demo`` unless ``SANDBOX_RUN_NAME`` names it.
Tracing is on: spans go to an OpenTelemetry collector when one is configured
(``OTEL_EXPORTER_OTLP_ENDPOINT``), otherwise to ``demo-spans.jsonl`` beside the store.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import torch

import sandbox
from sandbox import runtime, zoo
from sandbox.analysis import labels
from sandbox.cli.render import shorten, table
from sandbox.options import Options
from sandbox.store import StoreError, default_location, is_postgresql, masked, open_store

# The same comparison for every tensor of a zoo run (outputs, losses, gradients,
# buffers): float32 within rtol 1e-4, atol 1e-5 - a little looser than
# ``torch.testing.assert_close``'s float32 default, as a two-step training run
# accumulates rounding differences that a single forward does not.
RTOL = 1e-4
ATOL = 1e-5

OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Progress:
    """One status line on stderr: redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self.index = 0
        self.name = ""
        self.what = ""
        self.t0 = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if self.live:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _line(self) -> str:
        done = self.index
        width = 20
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        return f"[{bar}] {done + 1}/{self.total} {self.name}: {self.what} ({time.time() - self.t0:.1f} s)"

    def _draw(self) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K" + self._line())
            else:
                self.stream.write(self._line() + "\n")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            if self.what:
                self._draw()

    def step(self, index: int, name: str, what: str) -> None:
        if index != self.index or name != self.name:
            self.t0 = time.time()
        self.index, self.name, self.what = index, name, what
        self._draw()

    def finish(self, index: int, name: str, verdict: str) -> None:
        with self._lock:
            line = f"{index + 1}/{self.total} {name}: {verdict} ({time.time() - self.t0:.1f} s)"
            self.stream.write(("\r\033[K" if self.live else "") + line + "\n")
            self.stream.flush()
            self.what = ""

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)


def _tensors(result: dict[str, Any]) -> list[tuple[str, Any]]:
    out = [(f"output[{i}]", t) for i, t in enumerate(result["outputs"])]
    out += [(f"loss[{i}]", t) for i, t in enumerate(result["losses"])]
    out += [(f"grad {n}", t) for n, t in sorted(result["grads"].items())]
    out += [(f"buffer {n}", t) for n, t in sorted(result["buffers"].items())]
    return out


def compare(expected: dict[str, Any], got: dict[str, Any]) -> str | None:
    """None when every tensor matches; else what differs first, and by how much."""
    want, have = dict(_tensors(expected)), dict(_tensors(got))
    if want.keys() != have.keys():
        return f"different tensors: {sorted(want.keys() ^ have.keys())}"
    for name, a in want.items():
        b = have[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{name}: {tuple(b.shape)} {b.dtype}, eager has {tuple(a.shape)} {a.dtype}"
        if not torch.allclose(b, a, rtol=RTOL, atol=ATOL, equal_nan=True):
            diff = (b.double() - a.double()).abs().max().item()
            return f"{name} differs from eager by up to {diff:.3g} (rtol {RTOL:g}, atol {ATOL:g})"
    return None


def _note(report: Any) -> str:
    if report.failure is not None:
        return report.failure.message.splitlines()[0] if report.failure.message else ""
    return report.reason or ""


def tracing_endpoint(env: Any = None) -> str | None:
    """Where spans would go: the OTLP endpoint from the environment, if one is set."""
    env = os.environ if env is None else env
    for name in OTLP_ENDPOINTS:
        if env.get(name, "").strip():
            return env[name].strip()
    return None


def _configure(store: str | None, err: TextIO) -> Options | None:
    """The demo's options: its store, its run name, tracing only with a collector to send to.
    Opens the store once first, so a store that cannot be used stops the demo before any compile."""

    endpoint = tracing_endpoint()
    options: dict[str, Any] = {"trace": True}
    if store:
        options["store"] = store
    if "SANDBOX_RUN_NAME" not in os.environ:
        options["run_name"] = "demo"
    opts = Options.resolve(options=options)
    if opts.store != "off":
        location = opts.store or default_location()
        try:
            open_store(location).close()
        except StoreError as e:
            err.write(f"sandbox demo: {e}\n")
            return None
    if endpoint:
        err.write(f"tracing on: spans go to the OpenTelemetry collector at {endpoint}\n")
    else:
        spans = _span_file(opts)
        if spans is not None:
            err.write(
                f"tracing on: no OpenTelemetry collector is configured, so spans are written to {spans} "
                "(set OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://localhost:4317, to send them to one)\n"
            )
        else:
            opts = Options.resolve(options=dict(options, trace=False))
            err.write("tracing off: OpenTelemetry is not installed (pip install opentelemetry-sdk)\n")
    runtime.current().configure(opts)
    return opts


def _span_file(opts: Options) -> str | None:
    """With no collector, the demo's spans go to a JSON-lines file beside the store,
    through a tracer provider of the demo's own (the sandbox uses it as an
    application's provider). None if the OpenTelemetry SDK is missing."""

    try:
        from opentelemetry.sdk.trace import TracerProvider  # optional dependency
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor  # optional dependency
    except ImportError:
        return None
    location = opts.store if opts.store not in (None, "off") and not is_postgresql(opts.store) else default_location()
    folder = os.path.dirname(os.path.abspath(location)) if not is_postgresql(location) else os.getcwd()
    path = os.path.join(folder, "demo-spans.jsonl")
    os.makedirs(folder, exist_ok=True)
    stream = open(path, "w")  # noqa: SIM115 - lives as long as the demo
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(ConsoleSpanExporter(out=stream, formatter=lambda span: span.to_json(indent=None) + "\n"))
    )
    runtime.current().enable_tracing(provider)
    return path


def _stored(opts: Options, run_id: str, expected: int, out: TextIO) -> None:
    """Say where the run went, after making sure every report is committed."""

    if opts.store == "off":
        out.write("\nThe run store is off (store=False / SANDBOX_STORE=off): nothing was saved.\n")
        return
    location = opts.store or default_location()
    sandbox.flush()
    try:
        store = open_store(location, readonly=True)
        try:
            stored = len(store.reports(run_id))
            url = store.url
        finally:
            store.close()
    except StoreError as e:
        out.write(f"\nThe run was not saved: {e}\n")
        return
    out.write(f"\nrun {run_id}: {stored} report(s) saved in {url}\n")
    if stored < expected:
        out.write(
            f"warning: {expected - stored} of {expected} reports did not reach the store (see the warnings above)\n"
        )
    command = command_name()
    store_arg = "" if location == default_location() else f" --store {shlex.quote(masked(location))}"
    out.write(f"See it here with: {command}{store_arg} show {run_id[:12]}\n")
    out.write(f"To see every compile in the dashboard, then: {command}{store_arg} dashboard\n")


def command_name() -> str:
    """``sandbox`` where that finds this installation, else the script's full path (a venv not activated).

    The demo prints commands to paste: they must work in the user's shell as it is.
    """
    here = Path(sys.executable).parent / "sandbox"
    found = shutil.which("sandbox")
    if found and here.exists() and Path(found).resolve() == here.resolve():
        return "sandbox"
    if here.exists():
        return shlex.quote(str(here))
    return shlex.quote(sys.executable) + " -m sandbox.cli"


def run_demo(
    models: list[str] | None, out: TextIO | None = None, err: TextIO | None = None, store: str | None = None
) -> int:
    """Compile the zoo entries ``models`` (default: all) through the sandbox into the run
    store (``store``: a path or URL, else the default); 0 if all match eager."""
    out = out or sys.stdout
    err = err or sys.stderr

    names = list(models) if models else list(zoo.ZOO)
    unknown = [n for n in names if n not in zoo.ZOO]
    if unknown:
        err.write(f"sandbox demo: unknown model(s) {', '.join(unknown)}; the zoo has: {', '.join(zoo.ZOO)}\n")
        return 2

    # Start the workers now: they pay Inductor's one-time costs while the eager
    # reference of the first model runs.
    sandbox.warmup()
    opts = _configure(store, err)
    if opts is None:
        return 2

    run_id = runtime.current().run().run_id
    progress = Progress(len(names), err)
    rows: list[list[str]] = []
    counts = {"isolated": 0, "cache_hit": 0, "in_process": 0, "failed": 0}
    mismatches: list[tuple[str, str]] = []
    t_start = time.time()
    try:
        for i, name in enumerate(names):
            entry = zoo.ZOO[name]
            progress.step(i, name, "eager reference")
            expected = zoo.run(entry, backend=None)
            progress.step(i, name, "compiling through the sandbox")
            first = len(sandbox.reports())
            try:
                got = zoo.run(entry, backend="sandbox")
                problem = compare(expected, got)
            except Exception as e:  # the demo reports it and goes on with the next model
                problem = f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            reports = sandbox.reports()[first:]
            for r in reports:
                counts[r.outcome] = counts.get(r.outcome, 0) + 1
                rows.append(
                    [
                        name,
                        f"{r.graph_kind} {r.compile_id or '?'}",
                        labels.outcome(r, fallback=True),
                        str(r.worker_pid) if r.worker_pid else "-",
                        f"{r.duration_s:.2f}",
                        shorten(_note(r)),
                    ]
                )
            if problem:
                mismatches.append((name, problem))
            progress.finish(i, name, f"MISMATCH: {problem}" if problem else f"matches eager, {len(reports)} graph(s)")
    finally:
        progress.close()

    out.write("\n")
    out.write(table(["model", "graph", "outcome", "worker pid", "compile s", "note"], rows, right=(3, 4)) + "\n\n")
    graphs = sum(counts.values())
    out.write(
        f"{graphs} graphs from {len(names)} models in {time.time() - t_start:.1f} s: "
        f"{counts['isolated']} isolated, {counts['cache_hit']} cache hits, "
        f"{counts['in_process']} in-process, {counts['failed']} failed\n"
    )
    for w in sandbox.workers():
        rss = w.get("rss_bytes") or 0
        out.write(f"worker {w['pid']}: {w['jobs']} compile(s), {rss / 2**20:.0f} MiB resident\n")
    if mismatches:
        out.write(f"{len(mismatches)} of {len(names)} models differ from eager:\n")
        for name, problem in mismatches:
            out.write(f"  {name}: {problem}\n")
    else:
        out.write(f"all {len(names)} models match eager (rtol {RTOL:g}, atol {ATOL:g})\n")
    if counts["isolated"]:
        out.write("\nRun it again and these graphs come from the compile caches: no worker compiles them.\n")
    _stored(opts, run_id, graphs, out)
    out.flush()
    return 1 if mismatches else 0

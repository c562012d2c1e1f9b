"""The one record: a ``CompileReport`` per compiled graph, a ``Run`` per process.

Plain dataclasses of JSON values. Producers fill them; sinks only read them.
``docs/REPORT.md`` documents every field.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1

log = logging.getLogger(__name__)

# outcome
ISOLATED = "isolated"  # compiled in a worker
CACHE_HIT = "cache_hit"  # served by a compile cache, no compile ran
IN_PROCESS = "in_process"  # compiled in the user's process; ``reason`` says why
FAILED = "failed"  # no compiled graph; ``failure`` says what happened, ``fallback`` what ran instead

FAILURE_KINDS = ("crash", "timeout", "oom", "error")


@dataclass
class Stage:
    name: str
    start: float  # unix seconds, one clock for parent and worker
    end: float
    origin: str = "parent"  # parent | worker
    parent: str | None = None

    @property
    def duration_s(self) -> float:
        return self.end - self.start


@dataclass
class Failure:
    kind: str  # one of FAILURE_KINDS
    message: str
    exit_code: int | None = None
    signal: str | None = None
    worker_pid: int | None = None
    log_tail: list[str] = field(default_factory=list)
    traceback: str | None = None


@dataclass
class CompileReport:
    run_id: str
    compile_id: str | None
    graph_kind: str  # forward | backward | inference
    outcome: str
    report_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema_version: int = SCHEMA_VERSION
    graph_index: int = 0  # order within the run
    co_name: str | None = None
    filename: str | None = None
    line: int | None = None
    reason: str | None = None  # why in_process, or which cache hit
    failure: Failure | None = None
    fallback: str | None = None  # eager | in_process | None (raised)
    worker_pid: int | None = None
    started_at: float = field(default_factory=time.time)
    duration_s: float = 0.0
    stages: list[Stage] = field(default_factory=list)
    caches: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    graph: dict[str, Any] = field(default_factory=dict)
    kernels: list[dict[str, Any]] = field(default_factory=list)
    autotune: list[dict[str, Any]] = field(default_factory=list)  # max-autotune: per tuned op, candidates and timings
    completed_at: float | None = None  # when the first run added the GPU kernel details (report published again)
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    job: str | None = None  # the Run's job (option job / SANDBOX_JOB / TORCHELASTIC_RUN_ID)
    trace_id: str | None = None  # the caller's OpenTelemetry trace (32 hex), if any
    parent_span_id: str | None = None  # the caller's span the compile's spans hang under
    chromium_id: str | None = None  # PyTorch's ChromiumEventLogger id in this process
    worker_chromium_id: str | None = None  # ... as the worker saw it (equal when identity crossed)
    # Compiled in the background (async mode, or several workers): the graph ran as is
    # meanwhile. None / 0 when the compile was waited for.
    background: str | None = None  # "async" (eager until ready) | "wait" (waited for at the first call)
    eager_calls: int = 0  # calls that ran the graph eagerly before the compiled graph took over
    ready_at: float | None = None  # unix s: the worker's result was back
    switched_at: float | None = None  # unix s: the compiled graph took over (None: never did)
    background_s: float | None = None  # how long the compile ran in the background (job sent -> result back)
    # Why the graph compiled as it did, for explaining a difference between runs (docs/REPORT.md).
    compile_reason: dict[str, Any] | None = None  # why dynamo ended the graph here: graph_break, reason, frames
    recompile: dict[str, Any] | None = None  # the frame compiled before: frame, count, reason (the guard that failed)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # each input: shape, stride, dtype, device, dynamic
    cache_keys: dict[str, Any] = field(default_factory=dict)  # per cache (fx_graph, aot_autograd): key, components
    # Shared compiles (one per graph for the ranks of a host, or across hosts): who compiled the
    # graph for whom; None where no sharing was in play (docs/REPORT.md).
    single_flight: dict[str, Any] | None = None
    # What the graph cost at run time: the calls profiled under option profile_steps, their time, how
    # much of it the kernels account for (each kernel's own share is kernels[i]["runtime"]); None
    # when no call was profiled (docs/REPORT.md).
    runtime: dict[str, Any] | None = None

    @property
    def wait_s(self) -> float:
        """Seconds the graph waited for a worker: recorded, but not compile work."""
        return sum(s.duration_s for s in self.stages if s.name == "wait_for_worker" and s.origin == "parent")

    @property
    def work_s(self) -> float:
        """Seconds of compile work: the duration less the waits, which totals and deltas keep apart."""
        return max(self.duration_s - self.wait_s, 0.0)

    @property
    def where(self) -> str:
        loc = f"{self.filename}:{self.line}" if self.filename else "unknown location"
        return f"{self.co_name or '?'} ({loc})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], unknown: list[str] | None = None) -> CompileReport:
        """A stored report. Fields this version does not know (a newer version wrote them) are
        left out, in the report and in its stages and failure: their names go to ``unknown`` when
        given (the caller says it once, :func:`warn_unknown`), else one warning says so."""
        found: list[str] = [] if unknown is None else unknown
        values = _known(cls, d, "", found)
        values["stages"] = [Stage(**_known(Stage, s, "stages[].", found)) for s in d.get("stages") or []]
        if d.get("failure"):
            values["failure"] = Failure(**_known(Failure, d["failure"], "failure.", found))
        version = d.get("schema_version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            found.append(f"schema_version {version}")
        if unknown is None:
            warn_unknown(found)
        return cls(**values)


@dataclass
class Run:
    """One process (one rank of a job): where and with what it compiled."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema_version: int = SCHEMA_VERSION
    started_at: float = field(default_factory=time.time)
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    job: str | None = None
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    pid: int = field(default_factory=os.getpid)
    hostname: str = field(default_factory=socket.gethostname)
    python: str = field(default_factory=lambda: sys.version.split()[0])
    torch: str | None = None
    triton: str | None = None
    cuda: str | None = None
    device: str | None = None  # the GPU's name (torch.cuda.get_device_name) or the CPU model
    sandbox: str | None = None
    inductor_config: dict[str, Any] = field(default_factory=dict)  # entries that differ from the default
    git_revision: str | None = None  # of the working directory, when it is a repository
    cwd: str = field(default_factory=os.getcwd)
    argv: list[str] = field(default_factory=lambda: list(sys.argv))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        """A stored run; fields this version does not know are left out, with one warning per field."""
        unknown: list[str] = []
        values = _known(cls, d, "run.", unknown)
        warn_unknown(unknown)
        return cls(**values)


# -- reading what a newer version wrote -------------------------------------------------------

_FIELDS: dict[type, frozenset[str]] = {}
_warned = False
_warned_lock = threading.Lock()


def _known(cls: type, d: dict[str, Any], where: str, unknown: list[str]) -> dict[str, Any]:
    """``d``'s entries that are fields of ``cls``; the others' names (prefixed) go to ``unknown``."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    out = {}
    for k, v in d.items():
        if k in names:
            out[k] = v
        else:
            name = "".join(c if c.isprintable() else "?" for c in where + str(k))  # read from a file: one safe line
            unknown.append(name if len(name) <= 60 else name[:57] + "...")
    return out


def warn_unknown(unknown: list[str]) -> None:
    """Say once per process that stored records hold what a newer version wrote (``unknown``: the
    fields left out, and ``schema_version N`` for a report of a newer schema)."""
    global _warned
    if not unknown:
        return
    with _warned_lock:
        if _warned:
            return
        _warned = True
    names = sorted(set(unknown))
    log.warning(
        "the store holds report fields this version of the sandbox (schema %s) does not know (%s): a newer version "
        "wrote them; they are left out here. Upgrade the sandbox to see them.",
        SCHEMA_VERSION,
        ", ".join(names[:10]) + (f", and {len(names) - 10} more" if len(names) > 10 else ""),
    )

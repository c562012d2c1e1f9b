"""Every ``SANDBOX_*`` environment variable the sandbox reads, declared once.

Options (``torch.compile(..., options=...)``) each have a variable here; the rest are
settings with no option (where to spool, when to start workers) and internal knobs that
the sandbox sets for its own processes or that benches and tests use. Code reads them
through :func:`get`, which refuses a name that is not declared, and
``tests/test_architecture.py`` fails on a ``SANDBOX_*`` name in the code that is not declared.
``docs/CONFIGURATION.md`` is rendered from this table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["OPTION", "SETTING", "INTERNAL", "Variable", "VARIABLES", "get", "is_true"]

OPTION = "option"  # mirrors a torch.compile option of the same meaning
SETTING = "setting"  # for users, no option
INTERNAL = "internal"  # set by the sandbox for its own processes, or a knob for benches and tests


@dataclass(frozen=True)
class Variable:
    name: str
    kind: str
    default: str  # as written in the environment ("" means unset); an option's default is Options' own
    meaning: str
    option: str | None = None  # the option it mirrors, for OPTION variables


_DECLARED = (
    # Options: Options.resolve parses them (options= wins over the environment).
    Variable("SANDBOX_WORKERS", OPTION, "", "pre-started worker processes", "workers"),
    Variable(
        "SANDBOX_TIMEOUT_S",
        OPTION,
        "",
        "seconds one graph may compile in a worker before the worker is killed; 0/none: no limit",
        "timeout_s",
    ),
    Variable(
        "SANDBOX_MEMORY_LIMIT_MB",
        OPTION,
        "",
        "resident MiB a worker and its children may reach before it is killed",
        "memory_limit_mb",
    ),
    Variable(
        "SANDBOX_ON_FAILURE",
        OPTION,
        "",
        "what a failed compile runs instead: eager, in_process or raise",
        "on_failure",
    ),
    Variable(
        "SANDBOX_UNPICKLABLE",
        OPTION,
        "",
        "a graph that cannot cross the process boundary: in_process or error",
        "unpicklable",
    ),
    Variable("SANDBOX_TRACE", OPTION, "", "export every compile as OpenTelemetry spans", "trace"),
    Variable(
        "SANDBOX_STORE", OPTION, "", "the run store: a SQLite path or a postgresql:// URL; 0/off disables it", "store"
    ),
    Variable("SANDBOX_RUN_NAME", OPTION, "", "a name for this run in the store", "run_name"),
    Variable("SANDBOX_TAGS", OPTION, "", "comma-separated tags for this run", "tags"),
    Variable(
        "SANDBOX_METRICS_PORT", OPTION, "", "serve Prometheus metrics on this base port + LOCAL_RANK", "metrics_port"
    ),
    Variable("SANDBOX_METRICS_ADDR", OPTION, "", "the address the metrics endpoint binds", "metrics_addr"),
    Variable("SANDBOX_PUSHGATEWAY", OPTION, "", "push the metrics to this Pushgateway at exit", "pushgateway"),
    Variable(
        "SANDBOX_JOB", OPTION, "", "a job id shared by every rank (default: torchrun's TORCHELASTIC_RUN_ID)", "job"
    ),
    Variable("SANDBOX_ASYNC", OPTION, "", "run new graphs eagerly until their compile is done", "async"),
    Variable(
        "SANDBOX_SERVICE",
        OPTION,
        "",
        "share one compile service per host: auto (when torchrun runs several ranks here), on or off",
        "service",
    ),
    Variable(
        "SANDBOX_PROFILE_STEPS",
        OPTION,
        "",
        "calls of each compiled graph to profile with torch.profiler (kernel runtimes in its report): e.g. 3, "
        "3,10 or 3-5; off by default",
        "profile_steps",
    ),
    # Settings: for users, environment only.
    Variable("SANDBOX_PRESTART", SETTING, "auto", "when the workers start: auto, import, compile or off"),
    Variable(
        "SANDBOX_SPOOL",
        SETTING,
        "",
        "where reports wait while the store is unreachable (default: the cache folder's spool/)",
    ),
    Variable("SANDBOX_OTLP_TIMEOUT_S", SETTING, "5", "seconds one OTLP span export may take, retries included"),
    Variable(
        "SANDBOX_OTLP_EXIT_S",
        SETTING,
        "1",
        "seconds the process exit may wait to deliver the last spans (a collector that is down costs no more)",
    ),
    Variable(
        "SANDBOX_WARMUP_IMPORTS",
        SETTING,
        "",
        "1/0/prepare: sandbox.warmup() imports Inductor's front end in the background "
        "(default: on without an NVIDIA GPU, and in async mode, which also prepares the first cache miss; "
        "prepare: that in blocking mode too)",
    ),
    Variable(
        "SANDBOX_WORKER_WARMUP",
        SETTING,
        "",
        "a worker's warm-up priority: idle, nice or normal (default: idle on a CPU machine, nice with a GPU, normal "
        "in async mode)",
    ),
    Variable(
        "SANDBOX_WORKER_RESCUE_S",
        SETTING,
        "60",
        "seconds an idle-priority warm-up may go without finishing while a compile or warmup(wait=True) waits, "
        "before a worker starts beside it at normal priority (0: never)",
    ),
    Variable(
        "SANDBOX_WORKER_GPU_WARMUP",
        SETTING,
        "warmup",
        "when a worker starts CUDA, Triton and its compile pool: warmup (when sandbox.warmup() is called, else "
        "its first GPU job), job (its first GPU job) or start (in its warm-up)",
    ),
    Variable(
        "SANDBOX_WORKER_POOL",
        SETTING,
        "warmup",
        "when a GPU worker starts Triton's compile pool under SANDBOX_WORKER_GPU_WARMUP=start: warmup or job",
    ),
    Variable(
        "SANDBOX_WORKER_EARLY_CUDA",
        SETTING,
        "1",
        "0: a GPU worker leaves cuInit to torch instead of calling it at once",
    ),
    Variable(
        "SANDBOX_SERVICE_GRACE_S",
        SETTING,
        "10",
        "seconds a compile service stays up after its last client left",
    ),
    Variable(
        "SANDBOX_SERVICE_DIR",
        SETTING,
        "",
        "the private folder of the compile services' sockets (default: $XDG_RUNTIME_DIR or the temp folder)",
    ),
    Variable(
        "SANDBOX_LEASE",
        SETTING,
        "auto",
        "one compile per graph across hosts through Inductor's Redis: auto (with its FX graph remote cache), on or off",
    ),
    Variable(
        "SANDBOX_LEASE_S",
        SETTING,
        "30",
        "seconds a graph's compile lease lives without renewal: how soon another host takes over from a dead holder",
    ),
    # Internal: set by the sandbox for its own processes, or knobs for benches and tests.
    Variable("SANDBOX_IN_WORKER", INTERNAL, "", "1 in a worker process: the sandbox's runtime stays off there"),
    Variable(
        "SANDBOX_WORKER_CPROFILE",
        INTERNAL,
        "",
        "a folder: each worker profiles its jobs there with cProfile (bench/compile_overhead.py)",
    ),
    Variable("SANDBOX_DEBUG_PICKLE", INTERNAL, "", "1: log the path of an object the graph pickler refuses"),
    Variable(
        "SANDBOX_TEST_CHROMIUM", INTERNAL, "/usr/bin/chromium", "the Chromium the dashboard's browser tests drive"
    ),
)

VARIABLES: dict[str, Variable] = {v.name: v for v in _DECLARED}

_TRUE = ("1", "true", "yes", "on")


def get(name: str, env: Mapping[str, str] | None = None) -> str:
    """The variable's value stripped, or its declared default when unset or empty."""
    var = VARIABLES[name]  # a KeyError here is a variable nobody declared
    value = (os.environ if env is None else env).get(name, "").strip()
    return value or var.default


def is_true(name: str, env: Mapping[str, str] | None = None) -> bool:
    return get(name, env).lower() in _TRUE

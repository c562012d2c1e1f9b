"""Metrics scenario for tests/sinks/test_prometheus.py: compile through the sandbox with the
metrics endpoint on (``SANDBOX_METRICS_PORT``, ``LOCAL_RANK``, ``SANDBOX_PUSHGATEWAY`` come
from the test), and stay alive, step by step, while a real Prometheus scrapes it.

Each phase ends with one result line (``common.MARK`` + JSON, with ``phase`` and this
process's reports so far); the script then waits for a line on stdin before the next:

* ``compiled``: one training step of a small model (forward + backward: two graphs compiled
  in a worker), then the same model compiled again after ``torch._dynamo.reset()`` (served by
  the compile caches). Also the worker's pid.
* ``hanging`` (after stdin ``hang``): printed just before a graph whose compile hangs in the
  worker (``failing_ops.hang_op``); the test sees it in flight, then kills the worker.
* ``failed``: that graph's report is in (a crash), the graph ran eagerly.
* then stdin ``exit``: the process exits normally, and pushes its metrics at exit.
"""

import sys
import time
import warnings

import torch

import common
import failing_ops
import sandbox


def wait_for(word: str) -> None:
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit(f"script_metrics: expected {word!r} on stdin, got {line!r}")


def phase(name: str, **extra) -> None:
    common.emit({"phase": name, "reports": common.reports(), "at": time.time(), **extra})


def train_step() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    step = torch.compile(model, backend="sandbox")
    step(torch.randn(8, 16)).pow(2).mean().backward()


def f_hang(x):
    return failing_ops.hang_op(torch.sin(x)) + 1


train_step()
torch._dynamo.reset()
train_step()  # the same graphs again: cache hits
phase("compiled", workers=sandbox.workers())

wait_for("hang")
compiled = torch.compile(f_hang, backend="sandbox", options={"timeout_s": 300, "on_failure": "eager"})
x = torch.randn(16)
phase("hanging", workers=sandbox.workers())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = compiled(x)
phase(
    "failed",
    correct=common.close(out, (torch.sin(x) * 2) + 1),
    warnings=[str(w.message) for w in caught if str(w.message).startswith("sandbox")],
)

wait_for("exit")

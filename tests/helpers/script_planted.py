"""One run of a small training step, with one planted cause (argv[1]), for
``tests/analysis/test_planted_causes.py``: pairs of such runs differ by exactly that cause.

``base``: an MLP (relu), batch 8, two steps. The variants change one thing:
``break`` a graph break in the forward; ``recompile`` a second call with batch 16; ``shape``
batch 16 instead of 8; ``gelu`` gelu instead of relu; ``config`` an Inductor setting in the
cache key; ``mode`` torch.compile's max-autotune mode; ``failure`` a custom op that crashes the
compile in the worker (it computes the same ``x * 2`` the base computes); ``load`` = ``break``
on a machine kept busy by a spinning process. The run's id goes back to the test.
"""

import multiprocessing
import os
import sys

import torch
import torch.nn.functional as F

import common
import failing_ops
import sandbox

case = sys.argv[1]
BREAK_LINE = next(i for i, line in enumerate(open(__file__), 1) if line.strip() == "torch._dynamo.graph_break()")


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = F.gelu(h) if case == "gelu" else torch.relu(h)
        if case in ("break", "load"):
            torch._dynamo.graph_break()
        h = failing_ops.raise_op(h) if case == "failure" else h * 2
        return self.fc2(h)


def spin() -> None:
    while True:
        pass


spinners = []
if case == "load":
    spinners = [multiprocessing.Process(target=spin, daemon=True)]
    for p in spinners:
        p.start()

if case == "failure":
    failing_ops.raise_op.register_autograd(lambda ctx, grad: grad * 2)  # as d(x * 2)/dx

torch.manual_seed(0)
model = MLP()
options = {"max_fusion_size": 32} if case == "config" else None
mode = "max-autotune-no-cudagraphs" if case == "mode" else None
step = torch.compile(model, backend="sandbox", dynamic=False, options=options, mode=mode)
batches = [8, 16] if case == "recompile" else [16] if case == "shape" else [8]
for batch in batches:
    for _ in range(2):
        step(torch.randn(batch, 16)).pow(2).mean().backward()
for p in spinners:
    p.kill()
assert sandbox.flush(120), "the store did not take the reports in time"
reports = common.reports()
common.emit(
    {
        "run_id": sandbox.runtime.current().run().run_id,
        "case": case,
        "break_line": BREAK_LINE,
        "outcomes": [r["outcome"] for r in reports],
        "pid": os.getpid(),
    }
)

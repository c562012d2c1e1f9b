"""One rank of a training job: the zoo's MLP behind ``slow_ops.slow_op`` (its compile waits
``SLOW_OPS_S`` in the worker) trained for two steps with a per-rank batch size. The test sets
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``SANDBOX_JOB`` as torchrun would, and the batch size
as the argument: a rank given another batch size traces another graph (other shapes, other
guards), as a rank with a diverging data pipeline would."""

import sys

import torch

import common
import sandbox
import slow_ops

batch = int(sys.argv[1])


def warm(x):
    return x * 2


# Inductor's one-time costs in this process (imports, loading the CPU check) are paid on a
# function of their own, so the model's compile times are the model's alone.
torch.compile(warm, backend="sandbox")(torch.randn(8))
torch.manual_seed(0)
model = slow_ops.SlowNet()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
compiled = torch.compile(model, backend="sandbox")
for _ in range(2):
    loss = compiled(torch.randn(batch, 64)).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()
assert sandbox.flush(60), "reports not stored"
run = sandbox.runtime.current().run()
common.emit(
    {
        "run_id": run.run_id,
        "job": run.job,
        "rank": run.rank,
        "world_size": run.world_size,
        "compile_s": sum(r.work_s for r in sandbox.reports()),  # compile work, waits apart
        "reports": [
            {
                "kind": r.graph_kind,
                "outcome": r.outcome,
                "hash": r.graph.get("hash"),
                "kernels": len(r.kernels),
                "duration_s": r.duration_s,
            }
            for r in sandbox.reports()
            if r.co_name == "forward"
        ],
    }
)

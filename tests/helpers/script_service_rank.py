"""One rank of a torchrun job whose ranks share the host's compile service
(``torchrun --nproc-per-node 2 script_service_rank.py OUT_DIR``): the zoo's MLP behind
``slow_ops.slow_op`` (its forward graph compiles ``SLOW_OPS_S`` seconds longer in a worker),
compiled with ``backend="sandbox"`` and trained for two steps over gloo (CPU), the gradients
all-reduced by hand. Each rank writes ``OUT_DIR/rank-N.json``: its reports, losses, warnings,
the workers ``sandbox.workers()`` lists, what its pool says of the service and its Prometheus
metrics (the sandbox's registry, as text)."""

import json
import os
import sys
import warnings

import torch
import torch.distributed as dist
from prometheus_client import generate_latest

import sandbox
import slow_ops
from sandbox.isolation import pool

out_dir = sys.argv[1]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = slow_ops.SlowNet()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
registry = sandbox.enable_metrics()
compiled = torch.compile(model, backend="sandbox")
losses = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for step in range(2):
        torch.manual_seed(100 * step + rank)
        loss = compiled(torch.randn(16, 64)).pow(2).mean()
        loss.backward()
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())

params = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(params) for _ in range(world)]
dist.all_gather(gathered, params)
p = pool.current_pool()
result = {
    "rank": rank,
    "pid": os.getpid(),
    "reports": [r.to_dict() for r in sandbox.reports()],
    "losses": losses,
    "in_sync": all(torch.allclose(gathered[0], g) for g in gathered),
    "warnings": [str(w.message) for w in caught if "sandbox" in str(w.message)],
    "workers": sandbox.workers(),
    "pool": type(p).__name__,
    "service_pid": getattr(p, "service_pid", None),
    "started_service": getattr(p, "started_service", None),
    "broken": getattr(p, "broken", None),
    "metrics": generate_latest(registry).decode(),
}
with open(os.path.join(out_dir, f"rank-{rank}.json"), "w") as f:
    json.dump(result, f, default=repr)
dist.barrier()
dist.destroy_process_group()

"""One rank of a torchrun job (``torchrun --nproc-per-node 2``): the zoo's MLP wrapped in
DistributedDataParallel over gloo (CPU), compiled with ``backend="sandbox"`` and trained for
two steps. Tracing, the metrics endpoint and the store come from the environment the test
sets (SANDBOX_TRACE, SANDBOX_METRICS_PORT, SANDBOX_STORE).

After training, every rank scrapes the metrics endpoints of all ranks of this host (base
port + local rank) while all are still up, and writes its result to ``OUT_DIR/rank-N.json``
(torchrun interleaves the ranks' stdout)."""

import json
import os
import sys
import urllib.request

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import sandbox
from sandbox import zoo

out_dir = sys.argv[1]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = DDP(zoo.MLP())
opt = torch.optim.SGD(model.parameters(), lr=0.01)
compiled = torch.compile(model, backend="sandbox")
losses = []
for step in range(2):
    torch.manual_seed(100 * step + rank)  # each rank its own shard of the batch
    loss = compiled(torch.randn(16, 64)).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())

# DDP averaged the gradients: the ranks' parameters must agree after the steps.
params = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(params) for _ in range(world)]
dist.all_gather(gathered, params)
in_sync = all(torch.allclose(gathered[0], g) for g in gathered)

assert sandbox.flush(60), "reports not stored"
workers = sandbox.workers()
worker_env = {}
for w in workers:
    with open(f"/proc/{w['pid']}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    worker_env[w["pid"]] = env.get(b"TORCHINDUCTOR_COMPILE_THREADS", b"").decode() or None

dist.barrier()  # every rank's endpoint is up and has counted its reports
base = int(os.environ["SANDBOX_METRICS_PORT"])
scrapes = {}
for local in range(int(os.environ["LOCAL_WORLD_SIZE"])):
    with urllib.request.urlopen(f"http://127.0.0.1:{base + local}/metrics", timeout=10) as resp:
        scrapes[local] = resp.read().decode()
dist.barrier()  # nobody exits (closing its endpoint) before every rank scraped

run = sandbox.runtime.current().run()
result = {
    "run": run.to_dict(),
    "reports": [r.to_dict() for r in sandbox.reports()],
    "losses": losses,
    "in_sync": in_sync,
    "worker_compile_threads": worker_env,
    "scrapes": scrapes,
    "env": {
        k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")
    },
}
with open(os.path.join(out_dir, f"rank-{rank}.json"), "w") as f:
    json.dump(result, f, default=repr)
dist.destroy_process_group()

"""One rank of a 2-rank torchrun job (gloo, CPU) training in async mode.

Rank 1 stops its worker (SIGSTOP) for a few seconds right after the first step, so
its compile finishes well after rank 0's: left to themselves the ranks would switch
steps apart. Gradients are averaged across ranks every step. Training stops when
every graph on every rank has switched. Each rank writes its result as JSON to
``$ASYNC_RANKS_OUT/rank<N>.json``.
"""

import json
import os
import signal
import threading
import time

import torch
import torch.distributed as dist

import common
import sandbox
from sandbox import zoo

STOP_S = float(os.environ.get("ASYNC_RANKS_STOP_S", "4"))

dist.init_process_group("gloo")
rank = dist.get_rank()
sandbox.warmup()
torch.manual_seed(0)
model = zoo.MLP()
fn = torch.compile(model, backend="sandbox", options={"async": True})
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
losses, step, t0 = [], 0, time.time()
stopped = None
while True:
    torch.manual_seed(100 + step)
    x = torch.randn(32, 64)
    opt.zero_grad(set_to_none=True)
    loss = fn(x).pow(2).mean()
    loss.backward()
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()
    opt.step()
    losses.append(loss.item())
    if step == 0 and rank == 1:
        stopped = common.worker_pids()
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)

        def resume(pids=stopped):
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

        threading.Timer(STOP_S, resume).start()
    step += 1
    done = torch.tensor([1 if sum(1 for r in sandbox.reports() if r.switched_at) >= 2 else 0])
    dist.all_reduce(done, op=dist.ReduceOp.MIN)
    if done.item() == 1 or time.time() - t0 > 240:
        break
    time.sleep(0.02)
sandbox.flush()
with open(os.path.join(os.environ["ASYNC_RANKS_OUT"], f"rank{rank}.json"), "w") as f:
    json.dump(
        {"rank": rank, "steps": step, "losses": losses, "stopped": stopped, "reports": common.reports()},
        f,
        default=repr,
    )
dist.destroy_process_group()

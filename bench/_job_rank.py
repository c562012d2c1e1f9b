"""One rank of ``bench/job_compile.py``'s job, started by ``torchrun``.

Builds two transformer blocks, compiles them with the variant's backend (eager runs none),
trains one step over gloo (gradients all-reduced, so the slowest rank holds every rank at the
first collective, as in a real job) and writes ``OUT/rank-R.json``: seconds from the job's launch
(``JOB_BENCH_T0``, set by the bench) to the end of this rank's first step, and with the sandbox,
each graph's outcome and who compiled it (the report's ``single_flight``).
"""

from __future__ import annotations

import json
import os
import sys
import time

spec = json.loads(os.environ["JOB_BENCH_SPEC"])
t0 = float(os.environ["JOB_BENCH_T0"])

import torch  # noqa: E402 - after the spec: an import the clock already counts
import torch.distributed as dist  # noqa: E402

from sandbox import zoo  # noqa: E402

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
local = int(os.environ.get("LOCAL_RANK", "0"))
device = spec["device"]
if device == "cuda":  # ranks share the GPUs there are: rank r on GPU r modulo their count
    device = f"cuda:{local % torch.cuda.device_count()}"
    torch.cuda.set_device(device)
torch.manual_seed(0)
model = zoo.TwoBlocks(d=spec["d"], heads=spec["heads"]).to(device)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
variant = spec["variant"]
backend = {"inductor": "inductor", "eager": None}.get(variant, "sandbox")
run = model if backend is None else torch.compile(model, backend=backend)
x = torch.randn(spec["batch"], spec["seq"], spec["d"], device=device)

loss = run(x).float().pow(2).mean()
loss.backward()
for p in model.parameters():
    dist.all_reduce(p.grad)
opt.step()
if device.startswith("cuda"):
    torch.cuda.synchronize()
first_step_s = time.time() - t0

graphs = []
if backend == "sandbox":
    import sandbox

    for r in sandbox.reports():
        sf = r.single_flight or {}
        graphs.append(
            {
                "graph_kind": r.graph_kind,
                "outcome": r.outcome,
                "key": sf.get("key"),
                "role": sf.get("role"),
                "via": sf.get("via"),
                "waited_s": sf.get("waited_s"),
                "reason": sf.get("reason"),
                "lease": (sf.get("lease") or {}).get("role"),
                "compiled_by": (sf.get("compiled_by") or {}).get("pid"),
                "duration_s": r.duration_s,
            }
        )
    sandbox.flush(10)
result = {"rank": rank, "pid": os.getpid(), "first_step_s": first_step_s, "graphs": graphs, "loss": loss.item()}
with open(os.path.join(spec["out"], f"rank-{rank}.json"), "w") as f:
    json.dump(result, f)
dist.barrier()
dist.destroy_process_group()
sys.exit(0)

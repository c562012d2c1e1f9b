"""Pre-started workers and parallel compiles.

``sandbox.warmup(workers=2, wait=True)`` makes two workers ready; then two threads
each compile a different model (``workers=2``) at the same time.
"""

import os
import threading
import time

import torch
import torch.nn as nn

import common
import sandbox


class Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(3))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = torch.tanh(layer(x)) * (i + 1) + x.sin()
        return x.softmax(-1)


class Deep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 128)
        self.b = nn.Linear(128, 64)

    def forward(self, x):
        for _ in range(2):
            x = self.b(torch.nn.functional.gelu(self.a(x))).cos() + x.sigmoid()
        return x.log_softmax(-1)


out = {"pid": os.getpid()}
t0 = time.time()
sandbox.warmup(workers=2, wait=True)
out["warmup_s"] = time.time() - t0
out["workers_after_warmup"] = sandbox.workers()

torch.manual_seed(0)
models = {"wide": Wide().eval(), "deep": Deep().eval()}
x = torch.randn(16, 64)
compiled = {k: torch.compile(m, backend="sandbox", options={"workers": 2}) for k, m in models.items()}
barrier = threading.Barrier(2)
results = {}


def run(name):
    barrier.wait()
    with torch.no_grad():
        y = compiled[name](x)
        results[name] = common.close(y, models[name](x))


threads = [threading.Thread(target=run, args=(k,)) for k in models]
for t in threads:
    t.start()
for t in threads:
    t.join()
out["correct"] = results
out["reports"] = common.reports()
out["workers"] = sandbox.workers()
out["pool_processes"] = common.worker_trees()
common.emit(out)

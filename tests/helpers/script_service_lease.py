"""One "host" of several sharing Inductor's Redis (the test turns its remote caches on):
the zoo's MLP behind ``slow_ops.slow_op`` trained for one step through the sandbox, with a
cache directory of its own and no compile service. Prints its reports."""

import os

import torch

import common
import slow_ops

torch.manual_seed(0)
model = slow_ops.SlowNet()
compiled = torch.compile(model, backend="sandbox")
loss = compiled(torch.randn(16, 64)).pow(2).mean()
loss.backward()
common.emit({"pid": os.getpid(), "reports": common.reports(), "loss": loss.item()})

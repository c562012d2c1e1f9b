"""A process forked from the user's process neither inherits nor tears down the pool.

1. compile once (isolated, worker W);
2. ``os.fork()``: the child reports ``sandbox.workers()`` and exits normally through
   ``sys.exit`` (so atexit handlers run in the child);
3. a DataLoader with one worker process, fork start method, whose dataset reports
   ``sandbox.workers()`` from inside the DataLoader worker;
4. after each, W must still be alive and compile the next graph.
"""

import json
import os
import sys

import torch

import common
import sandbox


def f1(x):
    return torch.sin(x) * 2


def f2(x):
    return torch.cos(x) + 3


def f3(x):
    return torch.tanh(x) - 1


class Probe(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return json.dumps({"pid": os.getpid(), "workers": sandbox.workers()})


def compile_and_check(fn):
    n0 = len(sandbox.reports())
    x = torch.randn(8)
    ok = common.close(torch.compile(fn, backend="sandbox")(x), fn(x))
    return {"correct": ok, "reports": common.reports()[n0:], "workers": sandbox.workers()}


out = {"pid": os.getpid()}
sandbox.warmup(wait=True)
out["first"] = compile_and_check(f1)

r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    os.write(w, json.dumps({"pid": os.getpid(), "workers": sandbox.workers()}).encode())
    os.close(w)
    # A hang at exit (a lock held by a parent thread at fork time) must fail the test
    # with the child's stack, not hang it.
    import faulthandler

    faulthandler.dump_traceback_later(60, exit=True)
    sys.exit(0)  # a normal exit: atexit handlers run in the child
os.close(w)
data = b""
while chunk := os.read(r, 65536):
    data += chunk
os.close(r)
_, status = os.waitpid(child, 0)
out["fork_child"] = json.loads(data)
out["fork_child_exit"] = os.waitstatus_to_exitcode(status)
out["after_fork"] = compile_and_check(f2)

loader = torch.utils.data.DataLoader(
    Probe(), batch_size=None, num_workers=1, multiprocessing_context="fork", timeout=120
)
out["dataloader"] = [json.loads(item) for item in loader]
del loader
out["after_dataloader"] = compile_and_check(f3)
out["pool_processes"] = common.worker_trees()
common.emit(out)

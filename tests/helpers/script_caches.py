"""Caches: the worker writes into the parent's TORCHINDUCTOR_CACHE_DIR (and follows it
when ``fresh_cache()`` moves it); after ``clear_caches()`` the next compile still
succeeds, and the worker clears its in-memory caches before that job and only then.

Job order in the one worker: f1, f2, [clear_caches] f3, f4 ... The worker's own log
says which job followed a clear; it is read back through a failure report (the last
job calls ``failing_ops.exit_op``, which ends the worker; ``on_failure="eager"``).
"""

import os
import sys

import torch
from torch._inductor.utils import clear_caches, fresh_cache

import common
import failing_ops
import sandbox


def f1(x):
    return torch.sin(x) * 2 + 1


def f2(x):
    return torch.cos(x) * 3 - 1


def f3(x):
    return torch.tanh(x) * 4 + 2


def f4(x):
    return torch.sigmoid(x) * 5 - 2


def f5(x):
    return torch.erf(x) * 6 + 3


def crash(x):
    return failing_ops.exit_op(torch.exp(x)) + 1


def compile_and_check(fn):
    n0 = len(sandbox.reports())
    x = torch.randn(32)
    ok = common.close(torch.compile(fn, backend="sandbox")(x), fn(x))
    return {"correct": ok, "reports": common.reports()[n0:]}


KERNEL_SUFFIXES = (".cpp", ".so", ".py")


def kernel_files(root):
    return [
        f
        for f in common.cache_files(root)
        if f.endswith(KERNEL_SUFFIXES) and not f.startswith(("fxgraph", "aotautograd"))
    ]


root = os.environ["TORCHINDUCTOR_CACHE_DIR"]
fresh_parent = sys.argv[1]
out = {"pid": os.getpid()}
sandbox.warmup(wait=True)
files0 = kernel_files(root)
out["f1"] = compile_and_check(f1)
files1 = kernel_files(root)
out["new_kernel_files_f1"] = sorted(set(files1) - set(files0))
out["f2"] = compile_and_check(f2)
clear_caches()
out["f3"] = compile_and_check(f3)  # first job after the clear
with fresh_cache(dir=fresh_parent, delete=False):
    fresh_dir = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    out["f4"] = compile_and_check(f4)
out["fresh_dir"] = fresh_dir
out["fresh_dir_kernel_files"] = kernel_files(fresh_dir)
files_before_f5 = kernel_files(root)
out["f5"] = compile_and_check(f5)  # back on the original dir
out["new_kernel_files_f5"] = sorted(set(kernel_files(root)) - set(files_before_f5))
out["crash"] = compile_and_check(crash)
out["workers"] = sandbox.workers()
out["pool_processes"] = common.worker_trees()
common.emit(out)

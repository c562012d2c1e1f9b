"""Custom ops whose fake (meta) implementation misbehaves only inside a sandbox worker.

Inductor runs an op's fake implementation while it compiles a graph that calls it
(fake-tensor propagation and lowering), so the misbehaviour happens in the middle of
a real compile in the worker (``SANDBOX_IN_WORKER=1`` is set there), while the same
graph compiles and runs normally in the user's process (eagerly or in-process). Each
op computes ``x * 2``.
"""

import os
import signal
import time

import torch

OOM_MB = int(os.environ.get("FAILING_OPS_OOM_MB", "1500"))


def _misbehave(how: str) -> None:
    if os.environ.get("SANDBOX_IN_WORKER") != "1":
        return
    print(f"failing_ops: about to {how}", flush=True)
    if how == "exit":
        os._exit(3)
    elif how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "raise":
        raise RuntimeError("failing_ops: injected compile error")
    elif how == "hang":
        time.sleep(3600)
    elif how == "oom":
        block = bytearray(OOM_MB * 2**20)
        for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
            block[i] = 1
        time.sleep(3600)
    time.sleep(3600)  # a signal that did not end the process must not pass as success


@torch.library.custom_op("failing::exit_op", mutates_args=())
def exit_op(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@exit_op.register_fake
def _(x):
    _misbehave("exit")
    return torch.empty_like(x)


@torch.library.custom_op("failing::segv_op", mutates_args=())
def segv_op(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@segv_op.register_fake
def _(x):
    _misbehave("segv")
    return torch.empty_like(x)


@torch.library.custom_op("failing::kill_op", mutates_args=())
def kill_op(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@kill_op.register_fake
def _(x):
    _misbehave("kill")
    return torch.empty_like(x)


@torch.library.custom_op("failing::raise_op", mutates_args=())
def raise_op(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@raise_op.register_fake
def _(x):
    _misbehave("raise")
    return torch.empty_like(x)


@torch.library.custom_op("failing::hang_op", mutates_args=())
def hang_op(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@hang_op.register_fake
def _(x):
    _misbehave("hang")
    return torch.empty_like(x)


@torch.library.custom_op("failing::oom_op", mutates_args=())
def oom_op(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@oom_op.register_fake
def _(x):
    _misbehave("oom")
    return torch.empty_like(x)


OPS = {"exit": exit_op, "segv": segv_op, "kill": kill_op, "raise": raise_op, "hang": hang_op, "oom": oom_op}
KINDS = tuple(OPS)

"""A custom op whose compile is slow inside a sandbox worker only: its fake (meta)
implementation, which Inductor runs while it compiles a graph that calls the op, sleeps
``SLOW_OPS_S`` seconds there (``SANDBOX_IN_WORKER=1``), so that the compile stays in flight
while a test acts. The op computes ``x * 2``; in the user's process it traces at full speed."""

import os
import time

import torch


@torch.library.custom_op("slow::slow_op", mutates_args=())
def slow_op(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@slow_op.register_fake
def _(x):
    if os.environ.get("SANDBOX_IN_WORKER") == "1":
        time.sleep(float(os.environ.get("SLOW_OPS_S", "0")))
    return torch.empty_like(x)


class SlowNet(torch.nn.Module):
    """The zoo's MLP behind the slow op: the forward graph is slow to compile, the backward is not."""

    def __init__(self) -> None:
        super().__init__()
        from sandbox import zoo  # the sandbox's model zoo, imported by the scripts anyway

        self.mlp = zoo.MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(slow_op(x))

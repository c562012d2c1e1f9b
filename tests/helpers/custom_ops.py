"""A custom op defined with ``torch.library.custom_op`` in an importable module:
the worker imports this module to get the op, so graphs using it can cross."""

import torch


@torch.library.custom_op("sandbox_tests::scaled_tanh", mutates_args=())
def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.tanh(x) * scale


@scaled_tanh.register_fake
def _(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(x)

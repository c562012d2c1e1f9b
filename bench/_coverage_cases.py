"""The coverage sweep's entries: PyTorch's OpInfo databases and the few effectful cases they lack.

``op_db`` (every operator) and ``hop_db`` (the higher-order operators: control flow, regions,
flex attention, auto-functionalized custom ops) come from ``torch.testing._internal``; ``CASES``
adds graphs with ``with_effects`` that neither has as a case of its own (the ``print``
higher-order op, a custom op that this module registers as ordered, an effectful region) and
flex attention on the CPU. The worker imports this
module by name to find that custom op, which is why it lives in a file of its own.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.testing import make_tensor
from torch.testing._internal.opinfo.core import OpInfo, SampleInput

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@torch.library.custom_op("sandbox_coverage::noted", mutates_args=())
def noted(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@noted.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


noted.register_autograd(lambda ctx, grad: grad * 2)
# Ordered: functionalization threads an effect token through the graph (with_effects).
torch.library._register_effectful_op("sandbox_coverage::noted", torch._library.effects.EffectType.ORDERED)


def _printed(x: torch.Tensor) -> torch.Tensor:
    torch._higher_order_ops.print("sandbox coverage sum {}", x.sum())
    return x.sin() * 2


def _noted_twice(x: torch.Tensor) -> torch.Tensor:
    return noted(noted(x.cos()) + 1)


@torch.compiler.nested_compile_region
def _inverted_region(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(x) * 2


def _effectful_region(x: torch.Tensor) -> torch.Tensor:
    return _inverted_region(x) + _inverted_region(x + 1)


def _relative_position(score: Any, b: Any, h: Any, q: Any, kv: Any) -> Any:
    return score + (q - kv)


def _causal(b: Any, h: Any, q: Any, kv: Any) -> Any:
    return q >= kv


def _flex_attention(q: torch.Tensor, masked: bool = False) -> torch.Tensor:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if masked:
        block_mask = create_block_mask(_causal, 1, 1, q.shape[-2], q.shape[-2], device=str(q.device))
        return flex_attention(q, q, q, block_mask=block_mask)
    return flex_attention(q, q, q, score_mod=_relative_position)


def _queries(op: Any, device: str, dtype: torch.dtype, requires_grad: bool, **kwargs: Any) -> Any:
    q = make_tensor(1, 2, 128, 16, device=device, dtype=dtype, low=-1, high=1)
    yield SampleInput(q)
    yield SampleInput(q, kwargs={"masked": True})


def _vectors(op: Any, device: str, dtype: torch.dtype, requires_grad: bool, **kwargs: Any) -> Any:
    make = functools.partial(make_tensor, device=device, dtype=dtype, requires_grad=requires_grad)
    yield SampleInput(make(8, low=-1, high=1))
    yield SampleInput(make(3, 5, low=-1, high=1))


def _square_matrices(op: Any, device: str, dtype: torch.dtype, requires_grad: bool, **kwargs: Any) -> Any:
    x = make_tensor(4, 4, device=device, dtype=dtype, low=-0.1, high=0.1)
    x = x + 4 * torch.eye(4, dtype=dtype, device=device)
    yield SampleInput(x.requires_grad_(requires_grad))


CASES = [
    OpInfo(
        "print",
        op=_printed,
        sample_inputs_func=_vectors,
        dtypes=(torch.float32, torch.float64),
        supports_autograd=False,
    ),
    OpInfo(
        "effectful_custom_op",
        op=_noted_twice,
        sample_inputs_func=_vectors,
        dtypes=(torch.float32, torch.float64),
        supports_autograd=True,
    ),
    OpInfo(
        "effectful_region",
        op=_effectful_region,
        sample_inputs_func=_square_matrices,
        dtypes=(torch.float32, torch.float64),
        supports_autograd=False,
    ),
    # hop_db's flex_attention entries name CUDA dtypes only; Inductor compiles it on the CPU
    # too (forward only: the CPU has no flex attention backward).
    OpInfo(
        "flex_attention",
        op=_flex_attention,
        sample_inputs_func=_queries,
        dtypes=(torch.float32,),
        supports_autograd=False,
    ),
]


def entry_name(op: Any, prefix: str = "") -> str:
    return prefix + (f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name)


@functools.cache
def entries() -> dict[str, Any]:
    """Every entry by its name: ``op_db``'s as torch names them (``name.variant``), then
    ``hop:``-prefixed ``hop_db`` entries, then ``case:``-prefixed ``CASES``."""
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.testing._internal.hop_db import hop_db

    out: dict[str, Any] = {}
    for prefix, db in (("", op_db), ("hop:", hop_db), ("case:", CASES)):
        for op in db:
            out.setdefault(entry_name(op, prefix), op)
    return out


def float_dtypes(op: Any, device: str = "cpu") -> list[torch.dtype]:
    supported = op.supported_dtypes(device)
    return [d for d in FLOAT_DTYPES if d in supported]

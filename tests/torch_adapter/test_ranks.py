"""Tests of what makes a graph differ between ranks (``sandbox/torch_adapter/ranks.py``).

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import torch

from sandbox.torch_adapter import ranks


def test_compile_on_one_rank() -> None:
    """torch 2.13.0: ``torch.distributed.config.compile_on_one_rank`` (env
    TORCH_DISTRIBUTED_COMPILE_ON_ONE_RANK), off by default; it patches like other configs."""
    from torch.distributed import config

    assert ranks.compile_on_one_rank() is False
    with config.patch(compile_on_one_rank=True):
        assert ranks.compile_on_one_rank() is True


def test_rank_dependence() -> None:
    """``torch.ops._c10d_functional`` ops carry their namespace on the overload
    (``OpOverload.namespace``) and name their process group in their last string argument;
    an input on an indexed device names the device."""
    gm = torch.fx.symbolic_trace(lambda x: torch.sin(x))
    assert ranks.rank_dependence(gm, [torch.randn(2)]) is None
    assert torch.ops._c10d_functional.all_reduce.default.namespace == "_c10d_functional"

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    reduced = graph.call_function(torch.ops._c10d_functional.all_reduce.default, (x, "sum", "7"))
    graph.output(reduced)
    collective = torch.fx.GraphModule(torch.nn.Module(), graph)
    why = ranks.rank_dependence(collective, [torch.randn(2)])
    assert "_c10d_functional.all_reduce.default (group 7)" in why and "COMPILE_ON_ONE_RANK" in why

    meta = torch.empty(2, device="meta")
    assert ranks.rank_dependence(gm, [meta]) is None

    class OnDevice:  # what a CUDA input looks like to the check, without a GPU
        device = torch.device("cuda", 1)

    assert "inputs on cuda:1" in ranks.rank_dependence(gm, [OnDevice()])

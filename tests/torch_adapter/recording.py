"""What several torch adapter test files share: a custom op, a user model, and the
scheme and backend that record one compile at the seam (``tests/torch_adapter/conftest.py``
runs it once, as the ``recorded`` fixture). Written against torch 2.13.0.

This is a plain module, not a test file: the custom op ``scale`` must be defined in an
importable module, because the worker is told to import the module that defines a custom
op (``wire.serialize_graph`` lists it in ``WirePayload.imports``, as this module's name).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from sandbox import backend as sandbox_backend
from sandbox.torch_adapter import dynamo, seam, wire

WRITTEN_AGAINST = "2.13.0"


# A custom op defined in an importable module (this one): it may cross the boundary,
# and the worker is told to import this module to get it.
@torch.library.custom_op("sandbox_compat_test::scale", mutates_args=())
def scale(x: torch.Tensor, s: float) -> torch.Tensor:
    return x * s


@scale.register_fake
def _(x: torch.Tensor, s: float) -> torch.Tensor:
    return torch.empty_like(x)


scale.register_autograd(
    lambda ctx, grad: (grad * ctx.s, None),
    setup_context=lambda ctx, inputs, output: setattr(ctx, "s", inputs[1]),
)


def user_model() -> nn.Module:
    """A model whose class only the user's script knows: local to a function and
    claiming to live in ``__main__``, the two everyday shapes of training code."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.prims.fma(self.fc(x), x, x)  # a prims op: refused by the stock pickler
            return F.gelu(scale(y, 0.5))

    Block.__module__ = "__main__"
    return Block()


class RecordingScheme:
    """Stands where ``IsolatedCompile`` stands: records what the seam hands it,
    serializes it as the sandbox would, then compiles in this process."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def codegen_and_compile(
        self, gm: Any, example_inputs: Any, inputs_to_check: Any, graph_kwargs: dict, region: Any
    ) -> Any:
        self.calls.append(
            {
                "gm": gm,
                "graph_kwargs": dict(graph_kwargs),
                "region": region,
                "compile_id": dynamo.current_compile_id(),
                "payload": wire.serialize_graph(gm, example_inputs, inputs_to_check, graph_kwargs),
            }
        )
        return seam.compile_in_process(gm, example_inputs, inputs_to_check, graph_kwargs, region)


def recording_backend(scheme: RecordingScheme, locations: list) -> Any:
    """The sandbox backend's shape: compile_fx with an inner_compile that sets the
    sandbox's ContextVar, so the replaced fx_codegen_and_compile routes to ``scheme``."""

    def backend(gm: Any, example_inputs: Any) -> Any:
        locations.append(dynamo.code_location())

        def inner_compile(gm: Any, example_inputs: Any, *args: Any, **kwargs: Any) -> Any:
            token = sandbox_backend._active.set(scheme)
            try:
                return seam.compile_fx_inner(gm, example_inputs, *args, **kwargs)
            finally:
                sandbox_backend._active.reset(token)

        return seam.compile_fx(
            gm, example_inputs, inner_compile=inner_compile, config_patches={"fx_graph_cache": False}
        )

    return backend

"""A small model zoo: the shapes of code that real training scripts compile.

Used by the demo, the tests and the benchmarks. ``run(entry, backend)`` trains
(or evaluates) a freshly seeded model for a few steps and returns what a
correctness check compares: outputs, losses, gradients, buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, d_in: int = 64, d_hidden: int = 128, d_out: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.head = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(x))
        x = F.relu(self.fc2(x)) + x
        return self.head(x)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # No conv bias before batch norm: it is cancelled exactly, its gradient is
        # rounding noise, and AdamW would amplify that noise into the comparison.
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


class TransformerBlock(nn.Module):
    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TwoBlocks(nn.Module):
    """Two transformer blocks: the size of model the GPU figures are quoted for."""

    def __init__(self, d: int = 512, heads: int = 8) -> None:
        super().__init__()
        self.blocks = nn.Sequential(TransformerBlock(d, heads), TransformerBlock(d, heads))
        self.ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.blocks(x))


class GraphBreaks(nn.Module):
    """Two graph breaks: a data-dependent branch and a call dynamo cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(32, 32)
        self.b = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.a(x))
        if x.sum().item() > 0:  # graph break: data-dependent control flow
            x = x * 2
        torch._dynamo.graph_break()
        return self.b(x).sigmoid()


class InPlace(nn.Module):
    """In-place ops and a buffer the forward mutates."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("running", torch.zeros(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        y = self.fc(x)
        y.relu_()
        with torch.no_grad():
            self.running.mul_(0.9).add_(y.detach().mean(0), alpha=0.1)
        z = y * 2.0
        z.add_(self.running)
        return z


@dataclass
class Entry:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int], list[torch.Tensor]]  # step -> inputs
    train: bool = True
    mode: str | None = None
    dynamic: bool = False  # mark_dynamic(dim 0) on the inputs, batch size varies per step
    description: str = ""
    compile_kwargs: dict[str, Any] = field(default_factory=dict)


def _rand(*shape: int) -> Callable[[int], list[torch.Tensor]]:
    return lambda step: [torch.randn(*shape)]


ZOO: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("mlp", MLP, _rand(32, 64), description="MLP training step with AdamW"),
        Entry("convnet", ConvNet, _rand(4, 3, 16, 16), description="conv net with batch norm, training"),
        Entry("transformer", TransformerBlock, _rand(2, 16, 64), description="transformer block with attention"),
        Entry("graph_breaks", GraphBreaks, _rand(8, 32), description="model with two graph breaks"),
        Entry(
            "dynamic",
            MLP,
            lambda step: [torch.randn(8 + 4 * step, 64)],
            dynamic=True,
            description="dynamic batch size (mark_dynamic)",
        ),
        Entry("inplace", InPlace, _rand(8, 16), description="in-place ops and a mutated buffer"),
        Entry(
            "max_autotune",
            MLP,
            _rand(16, 64),
            train=False,
            mode="max-autotune-no-cudagraphs",
            description="inference under mode='max-autotune-no-cudagraphs'",
        ),
    ]
}


# Larger models for the benchmarks and the GPU checks; not part of the correctness zoo, which
# the tests and the demo run on small CPU machines (docs/decisions/bench-models-outside-the-zoo.md).
# ``run()`` and the benchmarks accept their names.
BENCH: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("two_blocks", TwoBlocks, _rand(8, 128, 512), description="two transformer blocks (d=512), training"),
        Entry(
            "two_blocks_infer",
            TwoBlocks,
            _rand(8, 128, 512),
            train=False,
            description="two transformer blocks (d=512), inference",
        ),
    ]
}


def entry(name: str) -> Entry:
    """A zoo or benchmark model by name."""
    if name in ZOO:
        return ZOO[name]
    if name in BENCH:
        return BENCH[name]
    raise KeyError(f"unknown model {name!r}; the zoo has {', '.join(ZOO)}; benchmarks also use {', '.join(BENCH)}")


def run(
    entry: Entry | str,
    backend: str | None = "sandbox",
    steps: int = 2,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train or evaluate ``entry`` for ``steps`` steps; ``backend=None`` runs eagerly.

    Returns outputs and losses per step, final parameters' gradients, and buffers.
    """
    if isinstance(entry, str):
        entry = globals()["entry"](entry)
    torch.manual_seed(seed)
    model = entry.build().to(device)
    model.train(entry.train)
    fn: Callable[..., torch.Tensor] = model
    if backend is not None:
        kwargs: dict[str, Any] = dict(entry.compile_kwargs)
        if entry.mode and options and backend == "sandbox":
            options = {**options, "mode": entry.mode}  # torch.compile takes mode= or options=, not both
        elif entry.mode:
            kwargs["mode"] = entry.mode
        if options:
            kwargs["options"] = options
        fn = torch.compile(model, backend=backend, **kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2) if entry.train else None
    outputs, losses = [], []
    grads: dict[str, torch.Tensor] = {}
    torch.manual_seed(seed + 1)
    for step in range(steps):
        inputs = [x.to(device) for x in entry.inputs(step)]
        if entry.dynamic:
            for x in inputs:
                torch._dynamo.mark_dynamic(x, 0)
        if entry.train:
            opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            out = fn(*inputs)
            loss = out.float().pow(2).mean()
            loss.backward()
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            opt.step()  # type: ignore[union-attr]
            losses.append(loss.detach())
        else:
            with torch.no_grad():
                out = fn(*inputs)
        outputs.append(out.detach().clone())
    return {
        "outputs": outputs,
        "losses": losses,
        "grads": grads,
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
    }

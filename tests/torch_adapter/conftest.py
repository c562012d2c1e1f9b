"""Fixtures of the torch adapter tests (``tests/torch_adapter/``), written against torch
2.13.0: ``recorded``, one small training compile recorded at the seam, which feeds tests in
``test_seam.py``, ``test_wire.py``, ``test_dynamo.py`` and ``test_events.py``. Everything
runs in this process (no worker). The pieces it is made of are in ``recording.py``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from recording import RecordingScheme, recording_backend, user_model

from sandbox import backend as sandbox_backend
from sandbox import runtime
from sandbox.torch_adapter import dynamo, events


@pytest.fixture(scope="session")
def recorded() -> dict[str, Any]:
    """One training step of the user model through the seam, compiled in this process.
    Recorded once, for every test file of this folder that reads it."""
    runtime.current().ensure_seam(sandbox_backend._route)
    scheme = RecordingScheme()
    locations: list = []
    torch.manual_seed(0)
    model = user_model()
    x = torch.randn(4, 8, requires_grad=True)
    before = dynamo.counters_snapshot()
    metrics_before = events.inductor_metrics_snapshot()
    times_before = events.time_metrics_snapshot()
    with torch._functorch.config.patch(enable_autograd_cache=False):
        compiled = torch.compile(model, backend=recording_backend(scheme, locations))
        out = compiled(x)
        out.sum().backward()
    after = dynamo.counters_snapshot()
    metrics_after = events.inductor_metrics_snapshot()
    times_after = events.time_metrics_snapshot()
    grad = x.grad.clone()
    x.grad = None
    expected = model(x)
    expected.sum().backward()
    return {
        "scheme": scheme,
        "locations": locations,
        "out": out.detach(),
        "expected": expected.detach(),
        "grad": grad,
        "expected_grad": x.grad.clone(),
        "before": before,
        "after": after,
        "metrics_before": metrics_before,
        "metrics_after": metrics_after,
        "times_before": times_before,
        "times_after": times_after,
    }

"""Which jobs start CUDA and Triton's compile pool in a worker (``worker.gpu_graph``).

This machine has no GPU, so the choice is checked here as a function of the job the user's
process sends; ``tests/gpu/run.py --only cpu_graph`` checks the real thing on the GPU machine
(a CPU graph leaves the worker without a compile pool, the GPU graph after it starts one).
"""

from __future__ import annotations

import torch

from sandbox.isolation import sizing
from sandbox.isolation.scheme import _input_devices
from sandbox.isolation.worker import gpu_graph


def _job(*inputs: object) -> dict:
    cpu, gpu = _input_devices(inputs)
    return {"op": "compile", "devices": {"cpu": cpu, "gpu": gpu}}


def test_a_cpu_graph_on_a_gpu_machine_needs_no_gpu_warm_up() -> None:
    job = _job(torch.randn(2), torch.tensor(3))
    assert job["devices"] == {"cpu": True, "gpu": False}
    assert not gpu_graph(True, job)


def test_a_graph_with_no_tensor_inputs_counts_as_a_cpu_graph() -> None:
    assert not gpu_graph(True, _job(3, "x"))


def test_a_gpu_graph_warms_the_gpu_on_a_gpu_machine_only() -> None:
    job = {"op": "compile", "devices": {"cpu": True, "gpu": True}}
    assert gpu_graph(True, job) and not gpu_graph(False, job)


def test_a_job_that_does_not_say_is_treated_as_a_gpu_graph_as_before() -> None:
    assert gpu_graph(True, {"op": "compile"}) and gpu_graph(True, {"op": "compile", "devices": "?"})
    assert not gpu_graph(False, {"op": "compile"})


def test_the_likely_graph_device_is_the_local_rank_s_gpu_or_the_cpu(monkeypatch) -> None:
    """warmup()'s guess at the first graph's device: the CPU without a usable NVIDIA device,
    else torchrun's LOCAL_RANK (0 outside a job); an odd LOCAL_RANK is not obeyed."""
    assert sizing.likely_graph_device({"CUDA_VISIBLE_DEVICES": ""}) == "cpu"
    monkeypatch.setattr(sizing, "gpu_machine", lambda env=None: True)
    assert sizing.likely_graph_device({}) == "cuda:0"
    assert sizing.likely_graph_device({"LOCAL_RANK": "3"}) == "cuda:3"
    for odd in ("-1", "1; rm -rf /", "99999", " "):
        assert sizing.likely_graph_device({"LOCAL_RANK": odd}) == "cuda:0", odd

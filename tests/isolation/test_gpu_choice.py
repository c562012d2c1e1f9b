"""Which jobs start CUDA and Triton's compile pool in a worker (``worker.gpu_graph``).

This machine has no GPU, so the choice is checked here as a function of the job the user's
process sends; ``tests/gpu/run.py --only cpu_graph`` checks the real thing on the GPU machine
(a CPU graph leaves the worker without a compile pool, the GPU graph after it starts one).
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from support import script_env

from sandbox.isolation import sizing
from sandbox.isolation.scheme import input_devices
from sandbox.isolation.worker import gpu_graph


def _job(*inputs: object) -> dict:
    cpu, gpu = input_devices(inputs)
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


def test_warmup_asks_the_workers_to_warm_the_gpu_only_when_set_on_a_gpu_machine(monkeypatch) -> None:
    """``sandbox.warmup()``'s request (``Runtime.warm_gpu_workers``): with
    SANDBOX_WORKER_GPU_WARMUP=warmup (the default), not with ``job`` or ``start``, only on a GPU
    machine (decided here by replacing ``sizing.gpu_machine``: this machine has none), and never to
    a compile service's workers."""
    from sandbox import runtime

    asked: list[int] = []

    class Workers:
        def warm_gpu(self) -> int:
            asked.append(1)
            return 1

    rt = runtime.current()
    monkeypatch.setattr(sizing, "gpu_machine", lambda env=None: True)
    for other in ("job", "start"):
        monkeypatch.setenv("SANDBOX_WORKER_GPU_WARMUP", other)
        assert not rt.warm_gpu_workers(Workers()) and not asked
    monkeypatch.delenv("SANDBOX_WORKER_GPU_WARMUP")
    assert rt.warm_gpu_workers(Workers()) and asked == [1]
    assert not rt.warm_gpu_workers(object())  # a compile service's client: its workers are not ours
    monkeypatch.setattr(sizing, "gpu_machine", lambda env=None: False)
    assert not rt.warm_gpu_workers(Workers()) and asked == [1]


def test_a_worker_without_a_gpu_ignores_the_request_and_compiles(tmp_path) -> None:
    """The ``warm_gpu`` frame reaches a real worker between jobs; one without a GPU ignores it,
    and the compile after it is isolated as before (tests/gpu/run.py checks a GPU worker)."""
    code = (
        "import json, torch, sandbox; from sandbox.isolation import pool; sandbox.warmup(wait=True); "
        "asked = pool.current_pool().warm_gpu(); "
        "f = torch.compile(lambda x: x.cos() + 1, backend='sandbox'); f(torch.randn(4)); "
        "print(json.dumps({'asked': asked, 'outcomes': [r.outcome for r in sandbox.reports()], "
        "'jobs': [w['jobs'] for w in sandbox.workers()], 'alive': [w['alive'] for w in sandbox.workers()]}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=script_env(tmp_path, {}), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"asked": 1, "outcomes": ["isolated"], "jobs": [1], "alive": [True]}, seen

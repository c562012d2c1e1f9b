"""Tests of the warm-up (``sandbox/torch_adapter/warmup.py``): Inductor's CPU instruction-set
probe and its cache marker, the modules a first compile imports, the GPU check.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from sandbox.torch_adapter import warmup


def test_warm_up_inductor() -> None:
    """torch 2.13.0: ``torch._inductor.cpu_vec_isa.pick_vec_isa`` (the CPU
    instruction-set probe, cached by ``valid_vec_isa_list``) and the modules a
    first compile imports."""
    from torch._inductor import cpu_vec_isa

    warmup.warm_up_inductor()
    for module in ("torch._inductor.compile_fx_ext", "torch._inductor.scheduler", "torch._inductor.codegen.cpp"):
        assert module in sys.modules
    assert cpu_vec_isa.valid_vec_isa_list.cache_info().currsize >= 1
    assert isinstance(cpu_vec_isa.pick_vec_isa(), cpu_vec_isa.VecISA)


def test_probe_cpu_isa() -> None:
    """torch 2.13.0: ``torch._inductor.cpu_vec_isa`` has ``x86_isa_checker()``,
    ``supported_vec_isa_list`` (VecISA objects whose ``str`` lists their CPU flags and
    whose ``bool`` runs the build-and-load check) and ``pick_vec_isa()``."""
    import platform

    from torch._inductor import cpu_vec_isa

    if platform.machine() in ("x86_64", "AMD64"):
        assert isinstance(cpu_vec_isa.x86_isa_checker(), list)
        assert cpu_vec_isa.supported_vec_isa_list
        assert all(isinstance(isa, cpu_vec_isa.VecISA) and str(isa) for isa in cpu_vec_isa.supported_vec_isa_list)
    warmup.probe_cpu_isa()
    assert isinstance(cpu_vec_isa.pick_vec_isa(), cpu_vec_isa.VecISA)


def test_cpu_isa_probe_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """torch 2.13.0: ``torch._inductor.runtime.cache_dir_utils.cache_dir`` follows
    TORCHINDUCTOR_CACHE_DIR; the probe leaves its marker there, and only there."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "a"))
    assert not warmup.cpu_isa_probe_cached()
    warmup.probe_cpu_isa()
    assert warmup.cpu_isa_probe_cached()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "b"))
    assert not warmup.cpu_isa_probe_cached()


def test_gpu_available() -> None:
    """torch 2.13.0: ``torch.cuda.is_available``."""
    assert warmup.gpu_available() == torch.cuda.is_available()

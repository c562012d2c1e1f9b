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


_PROBE_SCRIPT = """
import json
from torch._inductor import cpu_vec_isa
from sandbox.torch_adapter import warmup
probes = []
real = cpu_vec_isa.VecISA._probe_load
def counting(self, path):
    probes.append(str(self))
    return real(self, path)
cpu_vec_isa.VecISA._probe_load = counting
import sys
if sys.argv[1:] == ["take"]:
    print(json.dumps({"taken": warmup.take_recorded_isa_answers(), "again": warmup.take_recorded_isa_answers()}))
warmup.probe_cpu_isa()
print(json.dumps({"probes": probes, "picked": str(cpu_vec_isa.pick_vec_isa())}))
"""


def _probe_in_fresh_process(cache_dir: Any, *args: str) -> dict[str, Any]:
    """What the script printed, its JSON lines merged."""
    import json
    import os
    import subprocess

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
    cmd = [sys.executable, "-c", _PROBE_SCRIPT, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = {}
    for line in proc.stdout.strip().splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


def test_a_later_process_takes_the_recorded_isa_answers(tmp_path: Any) -> None:
    """torch 2.13.0: ``VecISA.check_build`` is looked up on the instance by ``VecISA.__bool__``
    (and the AVX-512 and AMX sub-checks), and ``VecISA._probe_load`` starts the probe process.
    A rank that loads a worker's CPU graph on the same cache dir starts no probe process; a
    record from another torch is ignored; a tampered record can only turn an ISA off."""
    import json
    import platform

    from torch._inductor import cpu_vec_isa

    flags = cpu_vec_isa.x86_isa_checker() if platform.machine() in ("x86_64", "AMD64") else []
    if not any(all(f in flags for f in str(isa).split()) for isa in cpu_vec_isa.supported_vec_isa_list):
        pytest.skip("no x86 ISA candidate on this CPU: nothing is probed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
        assert not warmup.isa_record_ready()
        first = _probe_in_fresh_process(tmp_path)
        assert warmup.isa_record_ready()
    assert first["probes"], "a fresh cache dir is probed"
    second = _probe_in_fresh_process(tmp_path)
    assert second == {"probes": [], "picked": first["picked"]}
    taken = _probe_in_fresh_process(tmp_path, "take")  # once per process, from the record
    assert taken == {"taken": True, "again": True, "probes": [], "picked": first["picked"]}
    assert _probe_in_fresh_process(tmp_path / "empty", "take")["taken"] is False  # no record: nothing taken

    marker = tmp_path / "sandbox" / "cpu-isa-probed"
    record = json.loads(marker.read_text())
    assert record["checks"] and all(v is True or v is False for v in record["checks"].values())
    marker.write_text(json.dumps({**record, "torch": "0.0 elsewhere"}))
    assert _probe_in_fresh_process(tmp_path)["probes"], "another torch's record is not taken"

    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({**record, "checks": {k: False for k in record["checks"]}}))
    turned_off = _probe_in_fresh_process(tmp_path)
    assert turned_off["probes"] == [] and turned_off["picked"] != first["picked"]
    marker.write_text("not json {")
    assert _probe_in_fresh_process(tmp_path)["picked"] == first["picked"]


_ENVIRONMENT_SCRIPT = """
import json, os, sys
import torch
from sandbox.torch_adapter import warmup
settled = warmup.settle_environment() if sys.argv[1] == "settle" else []
before = dict(os.environ)
f = torch.compile(lambda x: (x.sin() + 1).relu().sum(0), backend="inductor")
f(torch.randn(8, 8, requires_grad=True)).sum().backward()  # C++ kernels built and loaded both ways
after = dict(os.environ)
print(json.dumps({"settled": settled, "added": sorted(set(after) - set(before)),
                  "changed": sorted(k for k in before if after.get(k) != before[k])}))
"""


def _compile_in_fresh_process(cache_dir: Any, mode: str) -> dict[str, Any]:
    import json
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != warmup.KERNEL_LOADER_ENV}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    proc = subprocess.run(
        [sys.executable, "-c", _ENVIRONMENT_SCRIPT, mode], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_settle_environment_leaves_a_compile_nothing_to_add(tmp_path: Any) -> None:
    """torch 2.13.0: ``torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr``, which
    ``codecache``'s C++ kernel loader writes to ``_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR`` at
    each load. A compile with C++ kernels adds that variable to the environment (the move of the
    environment's array that fails a g++ started beside it); after ``settle_environment`` the same
    compile adds no variable and changes no value. A torch that adds another one fails here."""
    unsettled = _compile_in_fresh_process(tmp_path / "a", "plain")
    assert unsettled["added"] == [warmup.KERNEL_LOADER_ENV], unsettled
    settled = _compile_in_fresh_process(tmp_path / "b", "settle")
    assert settled == {"settled": [warmup.KERNEL_LOADER_ENV], "added": [], "changed": []}

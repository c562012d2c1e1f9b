"""Run stores for the dashboard tests.

``real_store``: three runs made by real sandbox compiles, once per test session (the
dashboard, browser and query tests share them; the compiles are the slow part):

- ``baseline`` (tags ``ci``, ``cpu``): the zoo's MLP, default Inductor config;
- ``simd`` (tags ``ci``, ``experiment``): the same MLP with ``cpp.simdlen=1`` (every C++
  kernel's source changes: unvectorized), then the zoo's ``inplace`` model, whose graphs
  only this run has (added graphs, added kernels);
- ``rerun`` (tag ``ci``): the MLP again, default config (both graphs cache hits), then a
  function whose compile fails in the worker (``failing_ops.raise_op``: an ``error``
  failure, run eagerly instead).

``gpu_store``: a small synthetic store of two GPU-like runs (Triton kernels with launch
configs, registers, spills, shared memory), which CPU compiles cannot produce.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import HELPERS, ROOT, SCRIPT_TIMEOUT_S, fresh_cache_dir, made_once, script_env

from sandbox.store import open_store

MAKE_RUN = r"""
import json, sys
import torch
import sandbox
from sandbox import zoo

what = sys.argv[1]
if what == "baseline":
    zoo.run("mlp")
elif what == "simd":
    zoo.run("mlp", options={"cpp.simdlen": 1})
    zoo.run("inplace", options={"cpp.simdlen": 1})
elif what == "rerun":
    zoo.run("mlp")
    import failing_ops

    def fails_in_worker(x):
        return failing_ops.raise_op(torch.sin(x)) + 1

    torch.compile(fails_in_worker, backend="sandbox")(torch.randn(16))
assert sandbox.flush(60), "reports not stored"
print(json.dumps({"run_id": sandbox.runtime.current().run().run_id,
                  "reports": [[r.graph_kind, r.outcome] for r in sandbox.reports()]}))
"""

RUNS = (("baseline", "ci,cpu"), ("simd", "ci,experiment"), ("rerun", "ci"))


@dataclass
class RealStore:
    path: Path
    run_ids: dict[str, str]  # run name -> run id
    outcomes: dict[str, list[list[str]]]  # run name -> [graph_kind, outcome] per report
    seconds: float
    files: dict[str, str] = field(default_factory=dict)  # store file -> sha256 after the runs


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_files(path: Path) -> dict[str, str]:
    """What "never writes" compares: the hash of every file in the store's directory.

    A read-only SQLite connection to a WAL-mode store creates SQLite's own coordination
    files next to it if they are missing: the shared-memory WAL index (``-shm``) and an
    empty ``-wal``. Neither holds data; they are left out, and a ``-wal`` counts only
    if it is not empty."""
    out = {}
    for p in sorted(path.parent.iterdir()):
        if not p.is_file() or p.name == path.name + "-shm":
            continue
        if p.name == path.name + "-wal" and p.stat().st_size == 0:
            continue
        out[p.name] = sha256(p)
    return out


def copied_store(source: Path, dest: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``source`` copied to ``dest`` (a test never touches the kept file), and its runs by name
    with each run's reports, sources included."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, dest)
    store = open_store(str(dest), readonly=True)
    try:
        runs = {r["name"]: r for r in store.runs()}
        reports = {name: store.reports(r["run_id"], with_sources=True) for name, r in runs.items()}
    finally:
        store.close()
    return runs, reports


def make_real_store(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> RealStore:
    """The three real runs, made once for the pytest run (every xdist worker); each caller gets
    its own copy of the store's files, so no test module can disturb another's store."""
    folder, made = made_once(tmp_path_factory, "dashboard-store", lambda base: _make_real_store(base, probe_seed))
    kept = folder / "store" / "runs.db"
    copy = tmp_path_factory.mktemp("dashboard-store-copy") / "store"
    copy.mkdir()
    for p in kept.parent.iterdir():
        if p.is_file() and p.name.startswith(kept.name):
            shutil.copy2(p, copy / p.name)
    mine = RealStore(copy / kept.name, made["run_ids"], made["outcomes"], made["seconds"])
    mine.files = store_files(mine.path)
    return mine


def _make_real_store(base: Path, probe_seed: Path) -> dict[str, Any]:
    cache = fresh_cache_dir(base, probe_seed)  # one cache dir: the rerun's MLP graphs are cache hits
    path = base / "store" / "runs.db"
    script = base / "make_run.py"  # a file, so the failing function has a real code location
    script.write_text(MAKE_RUN)
    run_ids, outcomes = {}, {}
    t0 = time.time()
    for name, tags in RUNS:
        env = script_env(
            cache,
            {
                "SANDBOX_STORE": str(path),
                "SANDBOX_RUN_NAME": name,
                "SANDBOX_TAGS": tags,
                "PYTHONPATH": os.pathsep.join([str(HELPERS), str(ROOT)]),
            },
        )
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
        proc = subprocess.run(
            [sys.executable, str(script), name],
            cwd=str(HELPERS),
            env=env,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"making run {name!r} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
            )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        run_ids[name] = result["run_id"]
        outcomes[name] = result["reports"]
    return {"run_ids": run_ids, "outcomes": outcomes, "seconds": time.time() - t0}


# -- a synthetic GPU-like store ---------------------------------------------------------------


def triton_source(name: str, body: list[str]) -> str:
    return (
        "\n".join(
            [
                "import triton",
                "import triton.language as tl",
                "",
                "@triton.jit",
                f"def {name}(in_ptr0, out_ptr0, xnumel, XBLOCK: tl.constexpr):",
                "    xoffset = tl.program_id(0) * XBLOCK",
                "    xindex = xoffset + tl.arange(0, XBLOCK)[:]",
                "    xmask = xindex < xnumel",
                *body,
                "    tl.store(out_ptr0 + (xindex), tmp1, xmask)",
            ]
        )
        + "\n"
    )


def triton_kernel(name: str, body: list[str], launchers: list[dict[str, Any]] | None) -> dict[str, Any]:
    src = triton_source(name, body)
    k: dict[str, Any] = {
        "name": name,
        "kind": "triton",
        "source_hash": hashlib.sha256(src.encode()).hexdigest(),
        "source": src,
        "lines": src.count("\n"),
        "calls": 1,
    }
    if launchers is not None:
        k["launchers"] = launchers
    return k


def launcher(warps: int, stages: int, regs: int, spills: int, shared: int, xblock: int) -> dict[str, Any]:
    return {
        "num_warps": warps,
        "num_stages": stages,
        "n_regs": regs,
        "n_spills": spills,
        "shared": shared,
        "config": {"XBLOCK": xblock},
    }


def make_gpu_store(path: Path) -> dict[str, str]:
    """Two runs of one model on a GPU: default, then max-autotune. Returns name -> run id."""
    from sandbox.record.report import CompileReport, Run, Stage

    load = ["    tmp0 = tl.load(in_ptr0 + (xindex), xmask)", "    tmp1 = tmp0 * 2.0"]
    load_v2 = ["    tmp0 = tl.load(in_ptr0 + (xindex), xmask, eviction_policy='evict_last')", "    tmp1 = tmp0 * 2.0"]
    relu = ["    tmp0 = tl.load(in_ptr0 + (xindex), xmask)", "    tmp1 = tl.maximum(tmp0, 0.0)"]
    runs = {
        "gpu-default": (
            0.0,
            {},
            [
                (
                    "forward",
                    1.0,
                    [
                        triton_kernel("triton_poi_fused_mul_0", load, [launcher(4, 1, 24, 0, 0, 1024)]),
                        triton_kernel("triton_poi_fused_relu_1", relu, [launcher(4, 1, 18, 0, 0, 1024)]),
                    ],
                ),
                ("backward", 2.0, [triton_kernel("triton_poi_fused_mul_0", load, [launcher(4, 1, 24, 0, 0, 1024)])]),
            ],
        ),
        "gpu-autotune": (
            3600.0,
            {"max_autotune": True},
            [
                (
                    "forward",
                    1.05,
                    [
                        triton_kernel("triton_poi_fused_mul_0", load_v2, [launcher(8, 3, 40, 2, 16384, 2048)]),
                        triton_kernel("triton_poi_fused_relu_1", relu, [launcher(4, 1, 18, 0, 0, 1024)]),
                    ],
                ),
                (
                    "backward",
                    3.0,
                    [
                        triton_kernel("triton_poi_fused_mul_0", load, [launcher(4, 1, 24, 0, 0, 1024)]),
                        triton_kernel("triton_tem_fused_mm_2", relu, [launcher(8, 4, 96, 0, 49152, 128)]),
                        triton_kernel("triton_per_fused_sum_3", load, [launcher(2, 1, 32, 0, 512, 64)]),
                        triton_kernel("triton_red_fused_sum_4", relu, None),
                    ],
                ),
            ],
        ),
    }
    t0 = time.time() - 7200
    store = open_store(str(path))
    ids = {}
    try:
        for name, (offset, config, graphs) in runs.items():
            run = Run(
                name=name,
                tags=["gpu"],
                started_at=t0 + offset,
                torch="2.11.0+cu128",
                triton="3.6.0",
                cuda="12.8",
                device="NVIDIA H100 80GB HBM3",
                inductor_config=config,
            )
            reports, t = [], run.started_at + 1
            for i, (kind, duration, kernels) in enumerate(graphs):
                triton_share = 0.7 * duration
                stages = [
                    Stage("inductor_compile", t, t + duration),
                    Stage("fx_codegen_and_compile", t, t + duration, "parent", "inductor_compile"),
                    Stage("compile_in_worker", t + 0.1, t + duration - 0.05, "worker", "fx_codegen_and_compile"),
                    Stage(
                        "async_compile.wait",
                        t + duration - 0.05 - triton_share,
                        t + duration - 0.05,
                        "worker",
                        "compile_in_worker",
                    ),
                ]
                reports.append(
                    CompileReport(
                        run_id=run.run_id,
                        compile_id="0/0",
                        graph_kind=kind,
                        outcome="isolated",
                        graph_index=i,
                        co_name="forward",
                        filename="/src/model.py",
                        line=10,
                        worker_pid=4242,
                        started_at=t,
                        duration_s=duration,
                        stages=stages,
                        caches={"fx_graph": {"state": "miss"}},
                        metrics={"generated_kernel_count": len(kernels)},
                        graph={"nodes": 10, "ops": 6, "inputs": 3},
                        kernels=kernels,
                    )
                )
                t += duration
            store.put_run(run)
            store.put_reports(reports)
            ids[name] = run.run_id
    finally:
        store.close()
    return ids

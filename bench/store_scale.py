#!/usr/bin/env python
"""How does the run store scale? Fill one with many realistic runs, then time the CLI.

Fills a store with ``--runs`` runs (default 1,000) of ``--graphs`` reports (default 50)
with ``--kernels`` kernels each (default 20): the shape of a training job's compile,
as the background writer stores it (``CompileReport`` objects, one transaction per
run's batch). Reports look like real ones: ~45 parent and worker stages with Inductor's
stage names, cache states, counters, every Inductor metric, graph sizes, and kernel
entries whose sources (~2 KB, like the zoo's) are mostly shared across runs: each run
changes ~2% of the kernels, and every 100 runs a "new torch version" changes a third.

Prints the insert rate (batched, and one report per transaction as a small sample),
the store's size per report, the kernel-source dedup factor, and the latency of
``sandbox runs``, ``sandbox show`` and ``sandbox diff`` run through ``sandbox.cli.main``
(the console script's entry point: opening the store read-only, querying, rendering).
Targets (issue 4 point 6): ``runs`` < 200 ms, ``diff`` of two 50-graph runs < 500 ms.
Exit code 1 when a target is missed.

Usage
  python bench/store_scale.py                    # 1,000 runs x 50 graphs x 20 kernels (a few minutes, ~0.5 GB)
  python bench/store_scale.py --runs 100         # scaled down
  python bench/store_scale.py --quick            # 20 runs: a smoke test (seconds)
  python bench/store_scale.py --store /tmp/s.db --keep   # keep the filled store
  python bench/store_scale.py --store postgresql://user@host/db   # a PostgreSQL store (size not measured)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _scratch import scratch_store  # noqa: E402

from sandbox.cli import main as cli  # noqa: E402
from sandbox.record.report import CompileReport, Run, Stage  # noqa: E402
from sandbox.store import open_store  # noqa: E402

TARGETS_MS = {"runs": 200.0, "diff": 500.0}

# (name, origin, parent, share of the graph's compile time): a real isolated graph's tree.
STAGES = [
    ("inductor_compile", "parent", None, 1.0),
    ("cache_lookup", "parent", "inductor_compile", 0.001),
    ("fx_codegen_and_compile", "parent", "inductor_compile", 0.99),
    ("serialize", "parent", "fx_codegen_and_compile", 0.01),
    ("wait_for_worker", "parent", "fx_codegen_and_compile", 0.05),
    ("send", "parent", "fx_codegen_and_compile", 0.001),
    ("compile_in_worker", "worker", "fx_codegen_and_compile", 0.8),
    ("worker_compile", "worker", "compile_in_worker", 0.79),
    ("GraphPickler.loads", "worker", "worker_compile", 0.01),
    ("additional_fake_tensor_prop", "worker", "worker_compile", 0.02),
    ("_recursive_post_grad_passes", "worker", "worker_compile", 0.06),
    *[
        (f"pass.post_grad_passes.{p}", "worker", "_recursive_post_grad_passes", 0.002)
        for p in (
            "reorder_for_locality",
            "remove_profiler_ops",
            "post_grad_custom_pre_pass",
            "remove_noop_ops",
            "remove_assert_ops",
            "pass_pattern_0",
            "pass_pattern_1",
            "pass_pattern_2",
            "stable_sort",
            "move_constructors_to_cuda",
            "reinplace_inplaceable_ops",
            "fix_auto_functionalized_dtype_views",
            "decompose_triton_kernel_wrapper_functional",
            "decompose_auto_functionalized",
            "decompose_scan_to_while_loop",
            "decompose_map_to_while_loop",
        )
    ],
    ("GraphLowering.run", "worker", "worker_compile", 0.05),
    ("GraphLowering.compile_to_fn", "worker", "worker_compile", 0.6),
    ("code_gen", "worker", "GraphLowering.compile_to_fn", 0.6),
    ("GraphLowering.codegen", "worker", "code_gen", 0.05),
    ("Scheduler.__init__", "worker", "GraphLowering.codegen", 0.03),
    ("Scheduler.fused_nodes", "worker", "Scheduler.__init__", 0.005),
    ("Scheduler.codegen", "worker", "GraphLowering.codegen", 0.015),
    ("PythonWrapperCodegen.generate", "worker", "GraphLowering.codegen", 0.003),
    ("PyCodeCache.load_by_key_path", "worker", "code_gen", 0.5),
    ("compile_file", "worker", "PyCodeCache.load_by_key_path", 0.2),
    ("async_compile.wait", "worker", "PyCodeCache.load_by_key_path", 0.3),
    ("transfer", "parent", "fx_codegen_and_compile", 0.001),
    ("load", "parent", "fx_codegen_and_compile", 0.1),
    ("GraphPickler.loads", "parent", "load", 0.01),
    ("PyCodeCache.load_by_key_path", "parent", "load", 0.05),
    ("compile_file", "parent", "PyCodeCache.load_by_key_path", 0.04),
    ("TritonBundler.collect", "parent", "load", 0.001),
]
OPS = [
    "add",
    "mul",
    "gelu",
    "relu",
    "sum",
    "mean",
    "var",
    "native_layer_norm",
    "softmax",
    "threshold_backward",
    "addmm",
    "convolution",
    "div",
    "exp",
    "sqrt",
    "rsqrt",
    "sub",
    "where",
    "clone",
    "view",
]
METRICS = {
    "codegen_mix_order_reduction": 0,
    "codegen_nested_reduction": 0,
    "cpp_outer_loop_fused_inner_counts": [],
    "cpp_to_dtype_count": 0,
    "generated_cpp_vec_kernel_count": 0,
    "generated_kernel_count": 0,
    "ir_nodes_pre_fusion": 0,
    "node_runtimes": [],
    "nodes_num_elem": [],
    "num_auto_chunking": 0,
    "num_bytes_accessed": 0,
    "num_comprehensive_padding": 0,
    "num_loop_reordering": 0,
    "num_matches_for_scatter_upon_const_tensor": 0,
    "parallel_reduction_count": 0,
    "rejected_mix_order_reduction_fusion": 0,
}


def kernel_source(graph: int, k: int, version: int, rng: random.Random) -> str:
    """A cpp kernel of ~2 KB; ``version`` changes a few lines, as a config change does."""
    n = 25 + (graph * 7 + k * 13) % 40
    lines = [
        '#include "/tmp/torchinductor/cpp_prefix.h"',
        f'extern "C" void kernel_{graph}_{k}(const float* in_ptr0, const float* in_ptr1, float* out_ptr0)',
        "{",
    ]
    for i in range(n):
        if version and i % 9 == version % 9:
            lines.append(
                f"        auto tmp{i} = at::vec::Vectorized<float>::loadu(in_ptr{i % 2} + {16 * i + version});"
            )
        else:
            lines.append(f"        auto tmp{i} = tmp{max(i - 1, 0)} * static_cast<float>({(graph + k + i) % 17}.0);")
    lines.append("}")
    return "\n".join(lines) + "\n"


class Model:
    """The kernels of one model: their current versions drift from run to run."""

    def __init__(self, graphs: int, kernels: int, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.graphs, self.kernels = graphs, kernels
        self.version = {(g, k): 0 for g in range(graphs) for k in range(kernels)}
        self.cache: dict[tuple[int, int, int], dict[str, Any]] = {}

    def step(self, index: int) -> None:
        if index and index % 100 == 0:  # a new torch version: a third of the kernels change
            for key in self.version:
                if self.rng.random() < 0.33:
                    self.version[key] += 1
        for key in self.version:
            if self.rng.random() < 0.02:
                self.version[key] += 1

    def kernel(self, g: int, k: int) -> dict[str, Any]:
        v = self.version[(g, k)]
        entry = self.cache.get((g, k, v))
        if entry is None:
            if k == self.kernels - 1:
                entry = {
                    "name": "extern_kernels.addmm",
                    "kind": "extern",
                    "source_hash": None,
                    "source": "",
                    "lines": 0,
                    "calls": 3,
                }
            else:
                src = kernel_source(g, k, v, self.rng)
                ops = "_".join(OPS[(g + k + j) % len(OPS)] for j in range(1 + k % 3))
                entry = {
                    "name": f"cpp_fused_{ops}_{k}",
                    "kind": "cpp",
                    "source_hash": hashlib.sha256(src.encode()).hexdigest(),
                    "source": src,
                    "lines": src.count("\n"),
                    "calls": 1,
                }
            self.cache[(g, k, v)] = entry
        return dict(entry)


def make_run(model: Model, index: int, t0: float) -> tuple[Run, list[CompileReport]]:
    rng = model.rng
    started = t0 + index * 600.0
    run = Run(
        name=f"nightly-{index % 7}",
        tags=["bench", "nightly" if index % 2 else "ci"],
        started_at=started,
        torch=f"2.{13 + index // 100}.0+cpu",
        device="AMD EPYC",
        hostname=f"node{index % 16}",
        pid=10000 + index,
        inductor_config={"max_autotune": True} if index % 10 == 0 else {},
        git_revision=hashlib.sha1(str(index).encode()).hexdigest(),
    )
    reports = []
    t = started + 1.0
    for g in range(model.graphs):
        total = rng.uniform(0.5, 8.0)
        stages = [
            Stage(name, t + (1 - share) * total * 0.5, t + (1 - share) * total * 0.5 + share * total, origin, parent)
            for name, origin, parent, share in STAGES
        ]
        kernels = [model.kernel(g, k) for k in range(model.kernels)]
        metrics = dict(
            METRICS,
            generated_kernel_count=len(kernels) - 1,
            generated_cpp_vec_kernel_count=len(kernels) - 1,
            ir_nodes_pre_fusion=rng.randint(5, 200),
            num_bytes_accessed=rng.randint(0, 10**7),
        )
        reports.append(
            CompileReport(
                run_id=run.run_id,
                compile_id=f"{g // 2}/0",
                graph_kind="forward" if g % 2 == 0 else "backward",
                outcome="isolated" if rng.random() > 0.1 else "cache_hit",
                graph_index=g,
                co_name="forward",
                filename=f"/src/models/block_{g // 2}.py",
                line=20 + g // 2,
                worker_pid=20000 + index,
                started_at=t,
                duration_s=total,
                stages=stages,
                caches={
                    "aot_autograd": {"state": "miss"},
                    "fx_graph": {"state": "miss", "key": hashlib.sha1(f"{g}{index}".encode()).hexdigest()},
                },
                counters={
                    "inductor": {"fxgraph_cache_miss": 1, "extern_calls": 3},
                    "aten_mm_info": {f"aten.addmm_32_{g}_64": 1},
                },
                metrics=metrics,
                graph={"nodes": rng.randint(10, 400), "ops": rng.randint(5, 300), "inputs": rng.randint(1, 40)},
                kernels=kernels,
                chromium_id="97d89652-fb22-4d32-b04e-b2733cf97a70",
                worker_chromium_id="97d89652-fb22-4d32-b04e-b2733cf97a70",
            )
        )
        t += total
    return run, reports


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median milliseconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), result


def cli_ms(location: str, argv: list[str], repeats: int) -> tuple[float, str]:
    def call() -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli.main(["--store", location, *argv])
        if rc != 0:
            raise SystemExit(f"sandbox {' '.join(argv)} exited {rc}")
        return buf.getvalue()

    return timed(call, repeats)


def size_of(location: str) -> int | None:
    if "://" in location:
        return None
    return sum(os.path.getsize(p) for p in (location, location + "-wal") if os.path.exists(p))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--graphs", type=int, default=50)
    ap.add_argument("--kernels", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="20 runs: a smoke test")
    ap.add_argument("--store", help="where to build the store (default: a temporary file, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the store")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.quick:
        args.runs = min(args.runs, 20)
        args.repeats = 3
    with scratch_store(args.store, args.keep, "sandbox-store-scale-") as location:
        return bench(args, location)


def bench(args: argparse.Namespace, location: str) -> int:
    print(f"store {location}: {args.runs} runs x {args.graphs} graphs x {args.kernels} kernels")
    model = Model(args.graphs, args.kernels)
    t0 = time.time() - args.runs * 600.0 - 3600
    store = open_store(location)
    build_s = insert_s = 0.0
    run_ids = []
    kernel_entries = 0
    progress_every = max(args.runs // 10, 1)
    for i in range(args.runs):
        t = time.perf_counter()
        model.step(i)
        run, reports = make_run(model, i, t0)
        build_s += time.perf_counter() - t
        t = time.perf_counter()
        store.put_run(run)
        store.put_reports(reports)  # as the background writer does: a batch, one transaction
        insert_s += time.perf_counter() - t
        run_ids.append(run.run_id)
        kernel_entries += sum(len(r.kernels) for r in reports)
        if (i + 1) % progress_every == 0:
            print(
                f"  {i + 1}/{args.runs} runs, {(i + 1) * args.graphs / insert_s:,.0f} reports/s",
                file=sys.stderr,
                flush=True,
            )
    # One report per transaction: a writer that keeps up with one graph at a time.
    single = Run(name="single", started_at=t0 - 10)
    _, sample = make_run(model, args.runs, t0 - 10)
    for r in sample:
        r.run_id = single.run_id
    store.put_run(single)
    t = time.perf_counter()
    for r in sample:
        store.put_reports([r])
    single_s = time.perf_counter() - t
    counts = store.counts()
    store.close()  # checkpoints the WAL into the file

    reports = args.runs * args.graphs
    size = size_of(location)
    print()
    print(
        f"insert: {reports:,} reports in {insert_s:.1f} s = {reports / insert_s:,.0f} reports/s "
        f"({reports / args.graphs / insert_s:,.1f} runs/s; batches of {args.graphs}, one transaction each)"
    )
    print(
        f"insert, one report per transaction: {len(sample) / single_s:,.0f} reports/s "
        f"({1000 * single_s / len(sample):.2f} ms each)"
    )
    print(f"(building the synthetic reports took {build_s:.1f} s, not counted)")
    if size is not None:
        print(f"size: {size / 2**20:,.1f} MiB = {size / (reports + len(sample)) / 1024:.1f} KiB per report")
    print(
        f"kernel sources: {counts['kernel_sources']:,} stored for {kernel_entries:,} kernel entries "
        f"({kernel_entries / max(counts['kernel_sources'], 1):.0f}x dedup)"
    )

    latest, middle = run_ids[-1], run_ids[len(run_ids) // 2]
    a, b = run_ids[max(len(run_ids) - 150, 0)], latest  # across a "torch version" change when there is one
    results = {}
    print()
    print(f"latency (median of {args.repeats}, through sandbox.cli.main: open read-only, query, render):")
    for label, argv in [
        ("runs", ["runs"]),
        ("runs --limit 0 (all)", ["runs", "--limit", "0"]),
        ("runs --name --tag --since", ["runs", "--name", "nightly-3", "--tag", "nightly", "--since", "30d"]),
        ("runs --json", ["runs", "--json"]),
        ("show latest", ["show", "latest"]),
        ("show <id prefix>", ["show", middle[:8]]),
        ("diff", ["diff", a, b]),
        ("diff --json", ["diff", a, b, "--json"]),
    ]:
        ms, out = cli_ms(location, argv, args.repeats)
        results[label] = ms
        extra = ""
        if label == "diff":
            line = next((x for x in out.splitlines() if x.startswith("kernels:")), "")
            extra = f"   [{line}]"
        print(f"  {label:<28} {ms:8.1f} ms{extra}")

    print()
    ok = True
    for name, limit in TARGETS_MS.items():
        got = results[name]
        passed = got < limit
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {got:.1f} ms (target < {limit:.0f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

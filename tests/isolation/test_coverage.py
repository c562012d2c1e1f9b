"""Isolation coverage over PyTorch's operator databases, on the sweep's fixed fast subset.

``bench/coverage.py --ci`` runs, as a user would, one float32 sample of a few ops (among them
the linalg ops whose error checks thread effect tokens through the graph) and of every
higher-order op case that runs on the CPU (``hop_db``: control flow, regions, quantization
regions, auto-functionalized custom ops; and ``with_effects`` from ``print``, an ordered custom
op and an effectful region; flex attention) through ``backend="sandbox"`` against eager,
forward and backward where the op has one. Every graph must compile in a worker: one left in
the user's process fails the test unless its reason is allowed below, by name.

``--models gpt2`` runs one real architecture the same way: a tiny GPT-2 built from its config
(transformers, the ``models`` extra), one training step against eager.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, missing, script_env

BENCH = str(ROOT / "bench" / "coverage.py")

# Graphs that may stay in the user's process, each with the words its reason must contain.
ALLOWED_IN_PROCESS: dict[str, str] = {}

# Entries whose compile fails in the worker exactly as it fails in in-process Inductor (torch
# 2.13.0 on the CPU: lowering scan and map_impl asks a fake tensor for a data-dependent value),
# so the sandbox runs them eagerly, as on_failure="eager" says.
ALLOWED_FAILURES = {
    "hop:scan.simple": "DataDependentOutputException",
    "hop:map.simple": "DataDependentOutputException",
}

HIGHER_ORDER = ("linalg.inv", "linalg.lu_factor", "linalg.tensorinv", "hop:cond.simple", "hop:while_loop.simple")
HIGHER_ORDER += ("hop:invoke_subgraph.simple", "hop:auto_functionalize.simple", "case:print")
HIGHER_ORDER += ("case:effectful_custom_op", "case:effectful_region", "case:flex_attention")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, probe_seed) -> dict:
    if importlib.util.find_spec("expecttest") is None:
        missing("expecttest is not installed (torch's OpInfo databases import it): pip install expecttest")
    return _run_bench(tmp_path_factory.mktemp("coverage"), probe_seed, ["--ci"], timeout=420)


def _run_bench(folder: Path, probe_seed: Path, select: list[str], timeout: float) -> dict:
    """``bench/coverage.py`` on ``select`` through the sandbox only: its JSON result and stdout."""
    out = folder / "coverage.json"
    cmd = [sys.executable, BENCH, *select, "--variants", "sandbox", "--cache-seed", str(probe_seed)]
    cmd += ["--out", str(out)]
    # The bench gives each of its children an Inductor cache and a run store of its own.
    env = script_env(folder / "inductor-cache")
    proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    result = json.loads(out.read_text())
    result["stdout"] = proc.stdout
    return result


def _records(sweep: dict) -> dict[str, dict]:
    return {r["op"]: r for r in sweep["records"] if r["variant"] == "sandbox"}


def test_every_higher_order_case_ran_and_crossed(sweep) -> None:
    records = _records(sweep)
    assert set(HIGHER_ORDER) <= set(sweep["entries"]), sorted(set(HIGHER_ORDER) - set(sweep["entries"]))
    for name in HIGHER_ORDER:
        rec = records[name]
        assert "crashed" not in rec, rec
        assert rec["samples"] >= 1 and rec["compared"] >= 1, rec
        graphs = rec["graphs"]
        assert graphs.get("isolated", 0) >= 1 and set(graphs) <= {"isolated", "cache_hit"}, (name, rec)
        assert rec["failed"] == 0 and rec["mismatch"] == 0, (name, rec)


def test_no_graph_left_in_the_users_process_without_an_allowed_reason(sweep) -> None:
    left = []
    for name, rec in _records(sweep).items():
        assert "crashed" not in rec, rec
        for reason, n in rec["reasons"].items():
            if reason.startswith("failed"):
                allowed = ALLOWED_FAILURES.get(name)
                if not allowed or allowed not in reason:
                    left.append(f"{name}: {n} graph(s) failed: {reason}")
            elif not (ALLOWED_IN_PROCESS.get(name) and ALLOWED_IN_PROCESS[name] in reason):
                left.append(f"{name}: {n} graph(s) in the user's process: {reason}")
    assert not left, "\n".join(left)
    totals = sweep["totals"]["sandbox"]
    assert totals.get("graphs_in_process", 0) == 0
    assert totals.get("mismatch", 0) == 0, totals
    assert totals["graphs"] >= len(HIGHER_ORDER)


def test_uninitialized_outputs_are_run_not_compared(sweep) -> None:
    """``new_empty`` returns uninitialized memory: its sample compiles in a worker and runs, and
    counts as uninitialized, neither compared nor a mismatch (the bytes are whatever was there)."""
    rec = _records(sweep)["new_empty"]
    assert rec["samples"] == rec["uninitialized"] >= 1, rec
    assert rec["compared"] == 0 and rec["mismatch"] == 0 and rec["failed"] == 0, rec
    assert rec["graphs"].get("isolated", 0) >= 1, rec
    assert "uninitialized" in sweep["stdout"]


def test_the_report_names_every_entry(sweep) -> None:
    assert sweep["device"] == "cpu" and {r["device"] for r in sweep["records"]} == {"cpu"}, sweep["device"]
    table = sweep["stdout"]
    for name in sweep["entries"]:
        assert f"| {name} |" in table
    assert "sandbox: " in table and "in the user's process" in table


def test_the_cuda_sweep_says_when_there_is_no_cuda(tmp_path) -> None:
    """``--device cuda`` (tests/gpu/run.py's coverage check) on a machine without CUDA stops at
    once with the reason, before it loads the OpInfo databases or starts a child."""
    env = script_env(tmp_path / "inductor-cache")
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU, also on a machine that has one
    for argv, words in (
        (["--device", "cuda"], "torch.cuda.is_available() is False"),
        (["--device", "tpu"], "cpu or cuda"),
    ):
        proc = subprocess.run(
            [sys.executable, BENCH, "--ci", *argv], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 1 and words in proc.stderr, (proc.returncode, proc.stderr[-2000:])
        assert "entries x" not in proc.stderr  # nothing was selected or run


def test_an_entry_past_the_timeout_keeps_the_samples_it_got_through(tmp_path, probe_seed) -> None:
    """An entry with more samples than its time allows (max_pool2d's float32 samples take minutes)
    is stopped at ``--entry-timeout`` and recorded as crashed, yet the graphs its finished samples
    compiled still count; its seconds stay out of the time ratio, and the next entry runs in a new
    child."""
    select = ["--ops", "nn.functional.max_pool2d,abs", "--dtypes", "float32", "--entry-timeout", "40"]
    sweep = _run_bench(tmp_path, probe_seed, select, timeout=300)
    records = _records(sweep)
    lost, after = records["nn.functional.max_pool2d"], records["abs"]
    assert lost["crashed"] == "timeout after 40.0 s" and lost["partial"], lost
    assert lost["samples"] >= 1 and lost["graphs"].get("isolated", 0) >= 1, lost
    assert "crashed" not in after and after["graphs"].get("isolated", 0) >= 1, after
    totals = sweep["totals"]["sandbox"]
    assert totals["crashed"] == 1 and totals["crashed_samples"] == lost["samples"], totals
    assert totals["samples"] == lost["samples"] + after["samples"], totals
    assert totals["graphs_isolated"] == lost["graphs"]["isolated"] + after["graphs"]["isolated"], totals
    assert totals["seconds"] == round(after["seconds"], 1), totals  # the lost entry's time left out
    assert f"after {lost['samples']} samples" in sweep["stdout"], sweep["stdout"][-2000:]
    assert "their time not" in sweep["stdout"], sweep["stdout"][-2000:]


# Model graphs that may stay in the user's process, each with the words its reason must contain.
ALLOWED_MODEL_IN_PROCESS: dict[str, str] = {}


@pytest.fixture(scope="module")
def model_sweep(tmp_path_factory: pytest.TempPathFactory, probe_seed) -> dict:
    if importlib.util.find_spec("transformers") is None:
        hint = "make install (the test extra holds it)"
        missing(f"transformers is not installed (the coverage sweep's models): {hint}")
    return _run_bench(tmp_path_factory.mktemp("coverage-models"), probe_seed, ["--models", "gpt2"], timeout=300)


def test_a_gpt2_training_step_crosses_and_matches_eager(model_sweep) -> None:
    assert model_sweep["entries"] == ["model:gpt2"]
    (rec,) = model_sweep["records"]
    assert "crashed" not in rec and "not_installed" not in rec, rec
    assert rec["samples"] == 1 and rec["compared"] == 1, rec
    assert rec["failed"] == 0 and rec["mismatch"] == 0, rec
    assert abs(rec["loss"] - rec["loss_eager"]) <= 1e-4 * abs(rec["loss_eager"]), rec
    graphs = rec["graphs"]
    assert graphs.get("isolated", 0) >= 2, rec  # at least a forward and its backward
    assert set(graphs) <= {"isolated", "cache_hit", "in_process"}, rec  # no graph failed
    allowed = ALLOWED_MODEL_IN_PROCESS.get("gpt2")
    left = [f"{n} graph(s): {r}" for r, n in rec["reasons"].items() if not (allowed and allowed in r)]
    assert not left, "graphs in the user's process:\n" + "\n".join(left)
    totals = model_sweep["model_totals"]["sandbox"]
    assert totals["graphs"] == sum(graphs.values()) and totals.get("graphs_in_process", 0) == 0, totals
    assert "| gpt2 |" in model_sweep["stdout"] and "sandbox models: 1 run" in model_sweep["stdout"]

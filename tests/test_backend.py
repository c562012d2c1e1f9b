"""The backend as a user meets it: the entry point, isolation of every cache-miss
graph, cache hits in a second process, and correctness on the model zoo.

Each scenario runs in a fresh process (``tests/helpers/script_*.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from support import run_script, wait_gone

ZOO_NAMES = ["mlp", "convnet", "transformer", "graph_breaks", "dynamic", "inplace", "max_autotune"]


def _summary(reports: list[dict[str, Any]]) -> list[tuple]:
    """Each report in a line of the assertion's message; a failure with what it said."""
    return [
        (r["compile_id"], r["graph_kind"], r["outcome"], r["reason"], r["worker_pid"], str(r.get("failure"))[:1500])
        for r in reports
    ]


# --- entry point and isolation ---------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(module_cache_dir) -> tuple[dict, dict]:
    """script_isolation.py twice on one cache dir: cold, then served by the caches."""
    first = run_script("script_isolation.py", cache_dir=module_cache_dir)
    second = run_script("script_isolation.py", cache_dir=module_cache_dir)
    return first, second


def test_entry_point_resolves_without_importing_sandbox(two_runs) -> None:
    first, _ = two_runs
    assert first["sandbox_imported_at_start"] is False
    # The script never imports sandbox itself: its torch.backends entry point (called at the
    # end of import torch, to pre-start the workers) and torch.compile(..., backend="sandbox")
    # through the torch_dynamo_backends entry point imported the package.
    assert first["sandbox_imported_by_resolution"] is True
    assert first["ok"] == {"train_shape1": True, "train_shape2": True, "grads": True, "local_class": True}


def test_workers_prestarted_when_backend_resolves(two_runs) -> None:
    first, _ = two_runs
    # Right after torch.compile(...), before the first call, a worker process exists (this
    # script names the backend: started at import torch; tests/test_prestart.py has the rest).
    assert len(first["workers_after_resolve"]) >= 1
    assert all(w["alive"] for w in first["workers_after_resolve"])
    assert all(w["pid"] != first["pid"] for w in first["workers_after_resolve"])


def test_every_cache_miss_graph_is_isolated(two_runs) -> None:
    first, _ = two_runs
    reports = first["reports"]
    seen = {(r["compile_id"], r["graph_kind"]) for r in reports}
    # Net (class in __main__, one graph break -> frames 0 and 1), trained: forward and
    # lazily compiled backward of both graphs, then recompiled for a new shape (x/1);
    # a softmax backward carries prims.fma. Then a model class local to a function (frame 2).
    expected = {
        ("0/0", "forward"), ("0/0", "backward"), ("1/0", "forward"), ("1/0", "backward"),
        ("0/1", "forward"), ("0/1", "backward"), ("1/1", "forward"), ("1/1", "backward"),
        ("2/0", "inference"),
    }  # fmt: skip
    assert seen == expected, _summary(reports)
    bad = [r for r in reports if r["outcome"] != "isolated"]
    assert not bad, _summary(bad)
    worker_pids = {w["pid"] for w in first["workers"]}
    for r in reports:
        assert r["worker_pid"] is not None and r["worker_pid"] != first["pid"], _summary([r])
        assert r["worker_pid"] in worker_pids, (r["worker_pid"], worker_pids)
        assert r["failure"] is None and r["fallback"] is None
    names = {r["stages"][i]["name"] for r in reports for i in range(len(r["stages"]))}
    assert {"serialize", "send", "compile_in_worker", "load"} <= names
    assert sum(w["jobs"] for w in first["workers"]) == len(reports)


def test_training_backward_with_prims_ops_is_isolated(two_runs) -> None:
    first, _ = two_runs
    # The backward graphs carry prims.fma (softmax backward, Inductor's decomposition):
    # the stock pickler refuses them; here they were compiled in the worker.
    assert "prims.fma.default" in first["prims_in_backward"]
    backward = [r for r in first["reports"] if r["graph_kind"] == "backward"]
    assert len(backward) == 4 and all(r["outcome"] == "isolated" for r in backward), _summary(backward)
    assert first["reports_after_capture"] == 0  # the capturing backend made no sandbox reports


def test_on_report_sees_every_report(two_runs) -> None:
    for run in two_runs:
        assert run["on_report_ids"] == [r["report_id"] for r in run["reports"]]


def test_reports_name_the_code_location(two_runs) -> None:
    first, _ = two_runs
    by_frame = {r["compile_id"].split("/")[0]: r for r in first["reports"]}
    assert by_frame["0"]["co_name"] == "forward"
    assert by_frame["0"]["filename"].endswith("script_isolation.py")
    assert isinstance(by_frame["0"]["line"], int) and by_frame["0"]["line"] > 0
    assert by_frame["1"]["co_name"].startswith("torch_dynamo_resume_in_forward")


def test_second_process_hits_the_caches_and_runs_no_job(two_runs) -> None:
    first, second = two_runs
    assert second["ok"] == first["ok"]
    reports = second["reports"]
    assert {(r["compile_id"], r["graph_kind"]) for r in reports} == {
        (r["compile_id"], r["graph_kind"]) for r in first["reports"]
    }
    not_hit = [r for r in reports if r["outcome"] != "cache_hit"]
    assert not not_hit, _summary(not_hit)
    assert all(r["worker_pid"] is None for r in reports)
    # The pre-started worker exists but never received a job.
    assert [w["jobs"] for w in second["workers"]] == [0] * len(second["workers"])


def test_worker_writes_into_the_parents_cache_dir(two_runs) -> None:
    first, _ = two_runs
    new = set(first["cache_files"]) - set(first["cache_files_at_start"])
    assert any(f.startswith("fxgraph/") for f in new), sorted(new)
    # Compiled C++ kernels: in an isolated compile only the worker builds them.
    assert any(f.endswith(".so") for f in new), sorted(new)


def test_workers_end_with_their_process(two_runs) -> None:
    for run in two_runs:
        assert run["pool_processes"], "the script saw no pool processes"
        assert wait_gone(run["pool_processes"], within=5) == []


# --- correctness on the model zoo ------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_results(module_cache_dir) -> dict:
    return run_script("script_zoo.py", *ZOO_NAMES, cache_dir=module_cache_dir)


def test_zoo_covers_every_entry(zoo_results) -> None:
    from sandbox import zoo

    assert sorted(zoo.ZOO) == sorted(ZOO_NAMES), "a zoo entry is missing from the test"
    assert sorted(zoo_results["results"]) == sorted(ZOO_NAMES)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_matches_eager(zoo_results, name: str) -> None:
    res = zoo_results["results"][name]
    assert res["raised"] is None, res["raised"]
    assert res["problems"] == [], "\n".join(res["problems"])
    assert res["counts"]["outputs"] >= 1
    reports = res["reports"]
    assert reports, "no graph was compiled"
    # It must really have been compiled in a worker (not eager, not in-process):
    # otherwise matching eager proves nothing.
    isolated = [r for r in reports if r["outcome"] == "isolated"]
    assert isolated, _summary(reports)
    for r in reports:
        if r["outcome"] == "isolated":
            assert r["worker_pid"] not in (None, zoo_results["pid"])
        else:
            # Only a graph with nothing in it may skip the worker (it runs as is).
            assert r["outcome"] == "in_process" and "empty graph" in (r["reason"] or ""), _summary([r])
    training = name != "max_autotune"
    kinds = {r["graph_kind"] for r in isolated}
    assert kinds >= ({"forward", "backward"} if training else {"inference"}), _summary(reports)
    again = [r for r in res["reports_again"] if r["outcome"] not in ("cache_hit", "isolated")]
    assert not again, _summary(again)


def test_zoo_workers_end_with_their_process(zoo_results) -> None:
    assert wait_gone(zoo_results["pool_processes"], within=5) == []

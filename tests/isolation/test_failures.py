"""Failures cost one graph, never the job.

Injected through real compiles: each graph calls a custom op from
``helpers/failing_ops.py`` whose fake implementation - which Inductor runs while
compiling the graph - exits, segfaults, SIGKILLs itself, raises, hangs past
``timeout_s`` or grows past ``memory_limit_mb``, but only inside a worker
(``SANDBOX_IN_WORKER=1``). One process per policy runs its kinds in a row, then
a healthy compile; the script exiting 0 is the "process survives" check.

Policies: ``eager`` via ``options=``; ``raise`` via ``SANDBOX_ON_FAILURE`` (the
environment route); ``in_process`` via ``options=``. ``eager`` and ``raise`` see all
six kinds (the warning and the error text differ per kind); ``in_process`` sees one
kind per way a failure is detected (the worker died, the deadline passed, the memory
watch fired): its fallback is the same code for every kind, and each failure costs a
worker start (seconds on 2 cores).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from support import pid_alive, run_script, wait_gone

KINDS = ["exit", "segv", "kill", "raise", "hang", "oom"]
POLICY_KINDS = {"eager": KINDS, "raise": KINDS, "in_process": ["kill", "hang", "oom"]}
# kind -> (report failure kind, exit code, signal)
EXPECTED = {
    "exit": ("crash", 3, None),
    "segv": ("crash", None, "SIGSEGV"),
    "kill": ("crash", None, "SIGKILL"),
    "raise": ("error", None, None),
    "hang": ("timeout", None, "SIGKILL"),
    "oom": ("oom", None, "SIGKILL"),
}
# What the worker's last log lines must show, per kind: the op's own last words, the
# exception's traceback, or (segfault) faulthandler's dump of the worker's stack.
LOG_MARKER = {
    "exit": "failing_ops: about to exit",
    "segv": "sandbox/isolation/worker.py",
    "kill": "failing_ops: about to kill",
    "raise": "failing_ops: injected compile error",
    "hang": "failing_ops: about to hang",
    "oom": "failing_ops: about to oom",
}


CASES = [(policy, kind) for policy, kinds in POLICY_KINDS.items() for kind in kinds]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, probe_seed):
    """``runs(policy)``: the result of script_failures.py for that policy (run once)."""
    from support import fresh_cache_dir

    done: dict[str, dict] = {}

    def get(policy: str) -> dict:
        if policy in done:
            return done[policy]
        cache_dir = fresh_cache_dir(tmp_path_factory.mktemp(f"failures-{policy}"), probe_seed)
        kinds = ",".join(POLICY_KINDS[policy])
        # eager (the default policy) with the default single worker: each next case waits
        # for the replacement. The others with two workers, so that replacements warm up
        # while the next case runs (every failure still hits a different worker).
        if policy == "raise":
            env = {"SANDBOX_ON_FAILURE": "raise", "FAILURES_WORKERS": "2"}
            done[policy] = run_script("script_failures.py", "env", kinds, cache_dir=cache_dir, env=env)
        else:
            env = {"FAILURES_WORKERS": "1" if policy == "eager" else "2"}
            done[policy] = run_script("script_failures.py", policy, kinds, cache_dir=cache_dir, env=env)
        return done[policy]

    return get


def _case(result: dict, kind: str) -> dict[str, Any]:
    (case,) = [c for c in result["results"] if c["kind"] == kind]
    return case


def _failed_report(case: dict) -> dict:
    reports = case["reports"]
    assert len(reports) == 1, [(r["outcome"], r["graph_kind"]) for r in reports]
    (report,) = reports
    assert report["outcome"] == "failed", report["outcome"]
    kind, exit_code, sig = EXPECTED[case["kind"]]
    failure = report["failure"]
    assert failure["kind"] == kind, failure
    assert failure["exit_code"] == exit_code, failure
    assert failure["signal"] == sig, failure
    assert failure["worker_pid"] == report["worker_pid"] != None  # noqa: E711
    assert failure["log_tail"], "the worker's log tail is empty"
    tail = "\n".join(failure["log_tail"])
    assert LOG_MARKER[case["kind"]] in tail, failure["log_tail"]
    return report


@pytest.mark.parametrize("policy, kind", CASES)
def test_failure_is_reported_and_the_worker_replaced_unless_the_compile_raised(runs, policy: str, kind: str) -> None:
    result = runs(policy)
    case = _case(result, kind)
    report = _failed_report(case)
    failed_pid = report["failure"]["worker_pid"]
    assert failed_pid in [w["pid"] for w in case["workers_before"]]
    after = [w["pid"] for w in case["workers_after"]]
    assert len(after) == result["workers"], (failed_pid, after)
    if kind == "raise":
        # The compile raised and the worker caught it: it stays, as in-process Inductor goes on
        # after the same exception, and serves the next graph without a start.
        assert case["failed_pids_alive"] == [True] and failed_pid in after, (failed_pid, after)
        return
    # The failed worker is gone and a new one took its place.
    assert case["failed_pids_alive"] == [False]
    assert failed_pid not in after, (failed_pid, after)
    if "workers_ready" in case:
        assert all(w["ready"] for w in case["workers_ready"]), case["workers_ready"]
    if kind == "hang":
        timeout_s = case["options"]["timeout_s"]
        assert timeout_s <= case["seconds"] < timeout_s + 30, case["seconds"]


@pytest.mark.parametrize("policy, kind", CASES)
def test_policy_outcome(runs, policy: str, kind: str) -> None:
    result = runs(policy)
    case = _case(result, kind)
    report = case["reports"][0]
    if policy == "eager":
        # The graph runs uncompiled: correct results, one clear warning, no exception.
        assert case["raised"] is None, case["raised"]
        assert case["correct"] is True and case["correct_again"] is True
        assert report["fallback"] == "eager"
        assert len(case["warnings"]) == 1, case["warnings"]
        (warning,) = case["warnings"]
        assert warning["category"] == "RuntimeWarning"
        assert case["function"] in warning["message"]
        assert EXPECTED[kind][0] in warning["message"]
    elif policy == "in_process":
        # Compiled in the user's process instead: correct, no exception, no eager warning.
        assert case["raised"] is None, case["raised"]
        assert case["correct"] is True and case["correct_again"] is True
        assert report["fallback"] == "in_process"
        assert "compile_in_process" in [s["name"] for s in report["stages"]]
        assert not [w for w in case["warnings"] if "uncompiled" in w["message"]], case["warnings"]
    else:
        assert policy == "raise"
        raised = case["raised"]
        assert raised is not None, "on_failure='raise' did not raise"
        # What `except sandbox.SandboxCompileError` catches: the error itself, not dynamo's or
        # Inductor's wrapper around it.
        assert raised["type"] == "SandboxCompileError" and raised["isinstance_sandbox_error"], raised["chain"]
        assert report["fallback"] is None
        msg = raised["message"]
        failure = report["failure"]
        # names the graph: compile id and code location ...
        assert report["compile_id"] and f"graph {report['compile_id']}" in msg, msg
        assert case["function"] in msg and f"script_failures.py:{case['line']}" in msg, msg
        # ... the failure kind, the exit code or signal ...
        assert f"({failure['kind']}" in msg, msg
        if failure["exit_code"] is not None:
            assert f"exit code {failure['exit_code']}" in msg, msg
        if failure["signal"]:
            assert failure["signal"] in msg, msg
        # ... and the worker's last log lines.
        assert "worker's last log lines" in msg, msg
        last = [line for line in failure["log_tail"] if line.strip()][-1]
        assert last.strip() in msg, (last, msg)


@pytest.mark.parametrize("policy", list(POLICY_KINDS))
def test_next_compile_after_failures_is_isolated(runs, policy: str) -> None:
    result = runs(policy)
    healthy = result["healthy"]
    assert healthy["correct"] is True
    (report,) = healthy["reports"]
    assert report["outcome"] == "isolated", report
    # A worker that died, hung or ran out of memory never served another graph; one whose compile
    # raised may have (it is kept).
    ended = [c["reports"][0]["failure"]["worker_pid"] for c in result["results"] if c["kind"] != "raise"]
    assert len(set(ended)) == len(ended), "each such failure must have hit a different (fresh) worker"
    assert report["worker_pid"] not in ended and report["worker_pid"] != result["pid"]


@pytest.mark.parametrize("policy", list(POLICY_KINDS))
def test_no_worker_left_after_exit(runs, policy: str) -> None:
    result = runs(policy)
    assert result["pool_processes"]
    assert wait_gone(result["pool_processes"], within=5) == []
    for case in result["results"]:
        for r in case["reports"]:
            assert not pid_alive(r["failure"]["worker_pid"])


def test_a_slow_worker_start_does_not_count_against_timeout_s(tmp_path) -> None:
    """timeout_s limits a graph's compile in a worker, not the wait for a worker that is
    still starting: a worker whose interpreter takes longer than timeout_s to start (here
    delayed by tests/helpers/slow_start/sitecustomize.py) still compiles the graph. With
    the wait counted against timeout_s, every graph failed with a timeout while a slow
    machine started its workers."""
    import json
    import subprocess
    import sys

    from support import HELPERS, script_env

    timeout_s, delay_s = 10, 15
    code = (
        "import json, torch, sandbox; "
        "f = torch.compile(lambda x: x.sin() + 1, backend='sandbox', "
        f"options={{'timeout_s': {timeout_s}, 'on_failure': 'raise'}}); "
        "x = torch.randn(8); ok = bool(torch.allclose(f(x), x.sin() + 1, rtol=1e-4, atol=1e-5)); r = "
        "sandbox.reports()[-1]; "
        "print(json.dumps({'ok': ok, 'outcome': r.outcome, "
        "'wait': sum(s.duration_s for s in r.stages if s.name == 'wait_for_worker'), "
        "'failure': r.failure and r.failure.message}))"
    )
    env = script_env(
        tmp_path / "cache",
        {
            "PYTHONPATH": os.pathsep.join([str(HELPERS / "slow_start"), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "SLOW_WORKER_START_S": str(delay_s),
            "SANDBOX_PRESTART": "off",  # the worker starts with the graph: the graph waits for all of its start
        },
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["ok"] and seen["outcome"] == "isolated", seen
    assert seen["wait"] > timeout_s, seen  # it did wait past timeout_s for the worker

"""Options: errors that name the key and list what is valid (``options=`` and the
``SANDBOX_*`` environment), ``mode=`` mapped to Inductor's config, Inductor config
keys passed through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import run_script

SANDBOX_OPTIONS = ("workers", "timeout_s", "memory_limit_mb", "on_failure", "unpicklable")


@pytest.fixture(scope="module")
def option_errors(module_cache_dir) -> dict:
    return run_script("script_options.py", cache_dir=module_cache_dir)["results"]


def _error(results: dict, case: str) -> str:
    res = results[case]
    assert res["raised"] is not None, f"{case}: no error"
    assert res["option_error"] is not None, f"{case}: no sandbox.OptionError in {res['raised']['chain']}"
    # The user's `except sandbox.OptionError` catches what the call raised: not a dynamo wrapper.
    assert res["caught_as_option_error"], res["raised"]["chain"]
    assert res["raised"]["message"] == res["option_error"]
    assert "\n" not in res["option_error"].strip(), res["option_error"]  # one line: no dynamo hints appended
    return res["option_error"]


def test_unknown_option_names_the_key_and_lists_valid_ones(option_errors) -> None:
    msg = _error(option_errors, "unknown_key")
    assert "'num_workers'" in msg
    for name in SANDBOX_OPTIONS:
        assert name in msg, (name, msg)
    assert "Inductor" in msg  # any Inductor config key is valid too


@pytest.mark.parametrize(
    "case, key, value, valid",
    [
        ("bad_workers", "'workers'", "0", [">= 1"]),
        ("bad_timeout", "'timeout_s'", "-5", ["> 0", "None"]),
        ("bad_memory", "'memory_limit_mb'", "'lots'", ["> 0", "None"]),
        ("bad_on_failure", "'on_failure'", "'ignore'", ["'eager'", "'in_process'", "'raise'"]),
        ("bad_unpicklable", "'unpicklable'", "'maybe'", ["'in_process'", "'error'"]),
    ],
)
def test_bad_option_value(option_errors, case: str, key: str, value: str, valid: list[str]) -> None:
    msg = _error(option_errors, case)
    assert key in msg and value in msg, msg
    for v in valid:
        assert v in msg, (v, msg)


@pytest.mark.parametrize(
    "case, var, value, valid",
    [
        ("env_bad_on_failure", "SANDBOX_ON_FAILURE", "'explode'", ["'eager'", "'in_process'", "'raise'"]),
        ("env_bad_workers", "SANDBOX_WORKERS", "'two'", [">= 1"]),
        ("env_bad_timeout", "SANDBOX_TIMEOUT_S", "'soon'", ["> 0"]),
        ("env_bad_memory", "SANDBOX_MEMORY_LIMIT_MB", "'-1'", ["> 0"]),
        ("env_bad_unpicklable", "SANDBOX_UNPICKLABLE", "'sometimes'", ["'in_process'", "'error'"]),
    ],
)
def test_bad_environment_value(option_errors, case: str, var: str, value: str, valid: list[str]) -> None:
    msg = _error(option_errors, case)
    assert var in msg and value in msg, msg
    for v in valid:
        assert v in msg, (v, msg)


@pytest.mark.parametrize(
    "case, key, value", [("workers_as_text", "'workers'", "'2'"), ("trace_as_text", "'trace'", "'yes'")]
)
def test_text_where_a_number_or_flag_belongs_is_refused(option_errors, case: str, key: str, value: str) -> None:
    # In options= a string is a mistake (the environment, where everything is text, parses it).
    msg = _error(option_errors, case)
    assert key in msg and value in msg and "(str)" in msg, msg


def test_an_uncaught_option_error_is_short(tmp_path: Path) -> None:
    """What a user sees when nothing catches it: the message once, the user's own line, no torch traceback
    beyond the one frame torch re-raises from, and no BackendCompilerFailed."""
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\n"
        "f = torch.compile(lambda x: x * 2, backend='sandbox', options={'workerz': 2})\n"
        "f(torch.randn(3))\n"
    )
    env_case = {"SANDBOX_TIMEOUT_S": "abc"}
    for extra, needle in (({}, "unknown option 'workerz'"), (env_case, "SANDBOX_TIMEOUT_S has a bad value 'abc'")):
        if extra:
            script.write_text(
                "import torch\nf = torch.compile(lambda x: x * 2, backend='sandbox')\nf(torch.randn(3))\n"
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")} | extra
        proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert sum(needle in line for line in lines) == 1, proc.stderr  # once
        assert lines[-1].startswith("sandbox.options.OptionError: "), proc.stderr
        assert "BackendCompilerFailed" not in proc.stderr and "Set TORCHDYNAMO_VERBOSE" not in proc.stderr, proc.stderr
        assert len(lines) <= 7, proc.stderr  # Traceback, the user's line (2), torch's re-raise (3), the error


@pytest.mark.parametrize("case", ["bad_mode", "bad_mode_in_options"])
def test_unknown_mode_lists_valid_modes(option_errors, case: str) -> None:
    msg = _error(option_errors, case)
    assert "'fastest'" in msg
    for mode in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        assert mode in msg, (mode, msg)


def test_a_mode_in_options_must_be_a_name(option_errors) -> None:
    msg = _error(option_errors, "mode_in_options_not_text")
    assert "option 'mode'" in msg and "3" in msg and "mode name" in msg, msg


def test_options_beat_environment(option_errors) -> None:
    res = option_errors["options_beat_env"]
    assert res["raised"] is None, res["raised"]
    assert res["correct"] is True


@pytest.fixture(scope="module")
def modes(module_cache_dir) -> dict:
    return run_script("script_modes.py", cache_dir=module_cache_dir)


def _fx_counters(report: dict) -> dict:
    return {k: v for k, v in report["counters"].get("inductor", {}).items() if k.startswith("fxgraph_cache_")}


def test_mode_maps_to_inductor_options(modes) -> None:
    res = modes["results"]
    assert all(step["correct"] for step in res.values()), {k: v["correct"] for k, v in res.items()}
    assert modes["mode_options"].get("max_autotune") is True
    outcome = {name: [r["outcome"] for r in step["reports"]] for name, step in res.items()}
    # Same config again: served by the cache (so a miss below means the config changed).
    assert outcome["default"] == ["isolated"], outcome
    assert outcome["default_again"] == ["cache_hit"], outcome
    # The mode given in options= changed Inductor's config (cache key): compiled anew, in a worker ...
    assert outcome["mode_in_options"] == ["isolated"], outcome
    assert _fx_counters(res["mode_in_options"]["reports"][0]) == {"fxgraph_cache_miss": 1}
    # ... to the config mode= gives ...
    assert outcome["mode"] == ["cache_hit"], outcome
    # ... which is exactly list_mode_options(mode): the same keys given as options= hit.
    assert outcome["mode_as_options"] == ["cache_hit"], outcome


def test_inductor_config_key_passes_through(modes) -> None:
    step = modes["results"]["no_fx_graph_cache"]
    assert [r["outcome"] for r in step["reports"]] == ["isolated"]
    # options={"fx_graph_cache": False} reached Inductor: no FX graph cache lookup at all
    # (with it on, this graph would have been a hit: see default_again).
    assert _fx_counters(step["reports"][0]) == {}

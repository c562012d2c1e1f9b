"""Options: errors that name the key and list what is valid (``options=`` and the
``SANDBOX_*`` environment), ``mode=`` mapped to Inductor's config, Inductor config
keys passed through."""

from __future__ import annotations

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
    # What the user sees (dynamo wraps backend errors) carries the same text.
    assert res["option_error"] in res["raised"]["message"], res["raised"]["message"]
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


def test_unknown_mode_lists_valid_modes(option_errors) -> None:
    msg = _error(option_errors, "bad_mode")
    assert "'fastest'" in msg
    for mode in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        assert mode in msg, (mode, msg)


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
    # mode= changed Inductor's config (cache key): compiled anew, in a worker ...
    assert outcome["mode"] == ["isolated"], outcome
    assert _fx_counters(res["mode"]["reports"][0]) == {"fxgraph_cache_miss": 1}
    # ... and it is exactly list_mode_options(mode): the same keys given as options= hit.
    assert outcome["mode_as_options"] == ["cache_hit"], outcome


def test_inductor_config_key_passes_through(modes) -> None:
    step = modes["results"]["no_fx_graph_cache"]
    assert [r["outcome"] for r in step["reports"]] == ["isolated"]
    # options={"fx_graph_cache": False} reached Inductor: no FX graph cache lookup at all
    # (with it on, this graph would have been a hit: see default_again).
    assert _fx_counters(step["reports"][0]) == {}

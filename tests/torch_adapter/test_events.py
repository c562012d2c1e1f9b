"""Tests of timed events and metrics (``sandbox/torch_adapter/events.py``): chromium events,
Inductor's metrics, dynamo's time metrics, compilation metrics and the Inductor config diff.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

from typing import Any

from recording import WRITTEN_AGAINST

from sandbox.torch_adapter import dynamo, events


def test_capture_chromium_events() -> None:
    """torch 2.13.0: ``ChromiumEventLogger._log_timed_event`` looks
    ``torch._dynamo.utils.record_chromium_event_internal`` up at call time and hands
    it every ``dynamo_timed`` begin/end event (``name``, ``ts`` in microseconds,
    ``ph``, ``args.compile_id``); the capture ends with the block."""
    import torch._dynamo.utils as dynamo_utils
    from torch._dynamo.utils import dynamo_timed

    assert callable(dynamo_utils.record_chromium_event_internal)
    with events.capture_chromium_events() as captured:
        with dynamo.compile_context("2/0"), dynamo_timed("sandbox_compat_test_stage"):
            pass
    mine = [e for e in captured if e["name"] == "sandbox_compat_test_stage"]
    assert [e["ph"] for e in mine] == ["B", "E"], captured
    assert mine[0]["args"]["compile_id"] == "2/0"
    assert 0 < mine[1]["ts"] - mine[0]["ts"] < 10e6  # microseconds of one clock
    with dynamo_timed("sandbox_compat_test_after"):
        pass
    assert not any(e["name"] == "sandbox_compat_test_after" for e in captured)


def test_chromium_logger_id() -> None:
    """torch 2.13.0: ``torch._dynamo.utils.get_chromium_event_logger()`` is one
    ``ChromiumEventLogger`` per process with a uuid string ``id_``; the worker takes
    the parent's."""
    from torch._dynamo.utils import get_chromium_event_logger

    own = events.chromium_logger_id()
    assert isinstance(own, str) and own == get_chromium_event_logger().id_
    try:
        events.set_chromium_logger_id("parent-logger-id")
        assert events.chromium_logger_id() == "parent-logger-id"
        events.set_chromium_logger_id(None)  # no id from the parent: left as it is
        assert events.chromium_logger_id() == "parent-logger-id"
    finally:
        get_chromium_event_logger().id_ = own


def test_inductor_metrics(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``torch._inductor.metrics`` keeps its counters as module-level
    ints and lists (``generated_kernel_count``, ``ir_nodes_pre_fusion``,
    ``parallel_reduction_count``, ``nodes_num_elem``, ...); a compile moves them; the
    worker's counts beyond the stock wire's six are added to this process's."""
    from torch._inductor import metrics

    snapshot = recorded["metrics_after"]
    for name in (
        "generated_kernel_count",
        "generated_cpp_vec_kernel_count",
        "ir_nodes_pre_fusion",
        "num_bytes_accessed",
        "parallel_reduction_count",
        "nodes_num_elem",
    ):
        assert name in snapshot, f"torch._inductor.metrics.{name} is gone (written against {WRITTEN_AGAINST})"
    delta = events.inductor_metrics_delta(recorded["metrics_before"], snapshot)
    assert delta["generated_kernel_count"] >= 1, delta
    assert isinstance(delta["nodes_num_elem"], list)

    saved = (metrics.parallel_reduction_count, metrics.generated_kernel_count)
    try:
        events.apply_inductor_metrics(
            {"parallel_reduction_count": 3, "generated_kernel_count": 5, "nodes_num_elem": [1]}
        )
        assert metrics.parallel_reduction_count == saved[0] + 3
        assert metrics.generated_kernel_count == saved[1]  # carried by the stock wire already
    finally:
        metrics.parallel_reduction_count, metrics.generated_kernel_count = saved


def test_time_metrics(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``dynamo_timed`` appends seconds to
    ``torch._dynamo.utils.compilation_time_metrics[key]`` and, for events with a
    CompilationMetrics column, adds ns to ``cumulative_time_spent_ns[event]``."""
    from torch._dynamo.utils import compilation_time_metrics, cumulative_time_spent_ns

    delta = events.time_metrics_delta(recorded["times_before"], recorded["times_after"])
    assert delta["compilation_time_metrics"].get("GraphLowering.run"), sorted(delta["compilation_time_metrics"])
    assert delta["cumulative_time_spent_ns"], delta
    key = "sandbox_compat_test.worker_stage"
    try:
        events.apply_time_metrics({"compilation_time_metrics": {key: [0.25]}, "cumulative_time_spent_ns": {key: 250}})
        assert compilation_time_metrics[key] == [0.25]
        assert cumulative_time_spent_ns[key] == 250
    finally:
        compilation_time_metrics.pop(key, None)
        cumulative_time_spent_ns.pop(key, None)


def test_compilation_metrics_capture_and_apply() -> None:
    """torch 2.13.0: ``torch._dynamo.utils._metrics_context_tls.metrics_context`` is the
    ``MetricsContext`` (``torch._dynamo.metrics_context``) that ``dynamo_timed(...,
    dynamo_compile_column_us=...)`` increments while a compile id is current;
    ``get_metrics_context().in_progress()`` / ``increment`` add to it."""
    import time

    from torch._dynamo.utils import dynamo_timed, get_metrics_context

    events.apply_compilation_metrics({"post_grad_pass_time_us": 5})  # no compile in progress: nothing
    with events.capture_compilation_metrics() as captured:
        with (
            dynamo.compile_context("5/0"),
            dynamo_timed("sandbox_compat_test", dynamo_compile_column_us="post_grad_pass_time_us"),
        ):
            time.sleep(0.002)
        assert get_metrics_context().in_progress()
        events.apply_compilation_metrics(
            {"inductor_code_gen_cumulative_compile_time_us": 7, "duration_us": 99, "is_forward": True, "fn_name": "x"}
        )
    assert captured["post_grad_pass_time_us"] >= 2000, captured
    assert captured["inductor_code_gen_cumulative_compile_time_us"] == 7
    assert captured.get("duration_us", 0) < 99_000  # never copied from the worker
    assert "is_forward" not in captured and "fn_name" not in captured
    assert not get_metrics_context().in_progress()


def test_inductor_config_diff() -> None:
    """torch 2.13.0: ``torch._inductor.config._config`` entries carry ``default``;
    ``get_config_copy()`` gives current values. A patched key shows up, an unpatched one does not."""
    from torch._inductor import config

    assert "max_autotune" not in events.inductor_config_diff() or config.max_autotune
    with config.patch(max_autotune=not config._config["max_autotune"].default):
        diff = events.inductor_config_diff()
        assert diff["max_autotune"] == (not config._config["max_autotune"].default)
    assert "max_autotune" not in events.inductor_config_diff()


def test_jsonable_turns_inductor_values_into_json() -> None:
    """Metric and config values cross the wire as JSON: torch objects (a dtype, a device)
    become their repr, containers become lists and string-keyed dicts, scalars stay."""
    import json

    import torch

    value = {"dtype": torch.float32, 1: (2, {3}), "ok": [None, True, 1.5, "s"], "dev": torch.device("cpu")}
    out = events.jsonable(value)
    assert out == {"dtype": "torch.float32", "1": [2, [3]], "ok": [None, True, 1.5, "s"], "dev": "device(type='cpu')"}
    assert json.loads(json.dumps(out)) == out
    assert len(events.jsonable(type("Long", (), {"__repr__": lambda self: "r" * 2000})())) == 500


def test_cache_keys_of_real_lookups(tmp_path: Any) -> None:
    """torch 2.13.0: ``ChromiumEventLogger.log_instant_event`` gets ``fx_graph_cache_<state>`` and
    ``autograd_cache_<state>`` instants whose metadata carry ``key``, ``cache_state`` and
    ``components`` (``"[<hash>] <name>: <value>"``: ``FxGraphCachePickler.debug_lines``; AOTAutograd's
    are computed only with DEBUG logging on). The capture sees them as ``ph == "i"`` events."""
    import torch
    from torch._inductor.utils import fresh_cache

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 5

    with fresh_cache(dir=str(tmp_path)):
        with events.capture_chromium_events() as first:
            torch.compile(fn, backend="inductor")(torch.randn(4))
        torch._dynamo.reset()
        with torch._functorch.config.patch(enable_autograd_cache=False), events.capture_chromium_events() as again:
            torch.compile(fn, backend="inductor")(torch.randn(4))
    names = [e["name"] for e in first if e["ph"] == "i"]
    assert "autograd_cache_miss" in names and "fx_graph_cache_miss" in names, names
    raw = next(e for e in first if e["name"] == "fx_graph_cache_miss")["args"]
    assert all(line.startswith("[") and "] " in line for line in raw["components"])
    keys = events.cache_keys(first)
    fx, aot = keys["fx_graph"], keys["aot_autograd"]
    assert fx["state"] == "miss" and fx["key"] == raw["key"]
    assert {"gm", "example_inputs[0]", "fx_kwargs[is_inference]", "torch_version", "inductor_config"} <= set(
        fx["components"]
    )
    assert aot["state"] == "miss" and aot["key"] and aot["components"] == {}
    hit = events.cache_keys(again)
    assert hit == {"fx_graph": {**fx, "state": "hit"}}


def test_cache_key_components_fold_config_mappings() -> None:
    """Names as written before the colon, values dropped; a config mapping folded into one entry."""
    lines = [
        "[aaa] gm: GraphModule()\n\ndef forward(self, x):\n    return (x,)",
        "[bbb] example_inputs[0]: TensorMetadata(dtype=torch.float32)",
        "[ccc] cache_key_tag: ",
        "[c01] inductor_config[max_fusion_size]: 64",
        "[c02] inductor_config[TYPE_CHECKING]: False",
        "[ddd] fx_kwargs[is_backward]: False",
        "not a debug line",
    ]
    out = events.cache_key_components(lines)
    assert list(out) == ["gm", "example_inputs[0]", "cache_key_tag", "inductor_config", "fx_kwargs[is_backward]"]
    assert out["gm"] == "aaa" and out["cache_key_tag"] == "ccc" and out["fx_kwargs[is_backward]"] == "ddd"
    changed = events.cache_key_components([*lines[:3], "[c99] inductor_config[max_fusion_size]: 32", *lines[4:]])
    assert len(out["inductor_config"]) == 32 and changed["inductor_config"] != out["inductor_config"]
    assert {k: v for k, v in changed.items() if k != "inductor_config"} == {
        k: v for k, v in out.items() if k != "inductor_config"
    }
    # A process's graphs mostly share the config: read again, the same run gives the same digest.
    assert events.cache_key_components(list(lines)) == out
    assert events.cache_key_components(None) == {} and events.cache_key_components([]) == {}

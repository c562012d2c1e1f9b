"""What happens inside a compile: Inductor's timed events, metrics and compilation metrics, and
what its compile caches looked up (their keys and the components of each key).

Private symbols touched here: torch._dynamo.utils.record_chromium_event_internal (looked up at call
time by ChromiumEventLogger._log_timed_event), ChromiumEventLogger.log_instant_event (the cache
hit / miss / bypass instants, whose ``components`` are FxGraphCachePickler.debug_lines),
get_chromium_event_logger().id_;
torch._inductor.metrics (module globals), torch._dynamo.utils.compilation_time_metrics,
cumulative_time_spent_ns, _metrics_context_tls / MetricsContext; torch._inductor.config._config (the
config diff).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import operator
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("sandbox")


_event_sink: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "sandbox_events", default=None
)
_tap_lock = threading.Lock()


def _install_event_tap() -> None:
    """Replace ``record_chromium_event_internal`` once with a tap that also hands
    each event to the capture active in the current context (if any); the same for
    ``ChromiumEventLogger.log_instant_event``, which only instants go through."""
    import torch._dynamo.utils as dynamo_utils

    with _tap_lock:
        if getattr(dynamo_utils.record_chromium_event_internal, "_sandbox_tap", False):
            return
        original = dynamo_utils.record_chromium_event_internal
        original_instant = dynamo_utils.ChromiumEventLogger.log_instant_event

        def record(event: dict[str, Any]) -> None:
            sink = _event_sink.get()
            if sink is not None:
                sink.append({k: event.get(k) for k in ("name", "ts", "ph", "args")})
            original(event)

        def instant(self: Any, event_name: str, time_ns: int, metadata: Any = None, *args: Any, **kwargs: Any) -> None:
            sink = _event_sink.get()
            if sink is not None:
                # The same dict the logger sends on: it gets the compile id there.
                metadata = {} if metadata is None else metadata
                sink.append({"name": event_name, "ts": time_ns / 1000, "ph": "i", "args": metadata})
            original_instant(self, event_name, time_ns, metadata, *args, **kwargs)

        record._sandbox_tap = True  # type: ignore[attr-defined]
        dynamo_utils.ChromiumEventLogger.log_instant_event = instant  # type: ignore[method-assign]
        dynamo_utils.record_chromium_event_internal = record


@contextlib.contextmanager
def capture_chromium_events() -> Iterator[list[dict[str, Any]]]:
    """Collect every chromium begin/end/instant event (``dynamo_timed`` stages, cache
    hit/miss/bypass instants) emitted in this context meanwhile. An inner capture takes
    its block's events; the outer one gets the rest."""
    _install_event_tap()
    events: list[dict[str, Any]] = []
    token = _event_sink.set(events)
    try:
        yield events
    finally:
        _event_sink.reset(token)


# The compile caches' lookups: Inductor's FX graph cache emits ``fx_graph_cache_<state>``,
# AOTAutograd's cache ``autograd_cache_<state>``, each with the key and its components.
_CACHE_INSTANTS = (("fx_graph_cache_", "fx_graph"), ("autograd_cache_", "aot_autograd"))


def _config_run(lines: list[str], i: int, close: int, marker: str) -> tuple[int, str]:
    """Where the run of config members starting at ``lines[i]`` ends, and their hashes joined.

    torch writes a mapping's entries in a row and each attribute once, so the members are one
    block: its end is found by bisection, without reading every line (the block is most lines)."""
    lo, hi = i + 1, len(lines)  # lines[lo - 1] is a member; the first non-member is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if lines[mid].startswith(marker, close):
            lo = mid + 1
        else:
            hi = mid
    return lo, "".join(map(operator.itemgetter(slice(1, close)), lines[i:lo]))


def cache_key_components(lines: Any) -> dict[str, str]:
    """``{name: hash}`` from a cache key's debug lines (``"[<hash>] <name>: <value>"``); the
    values (the graph's code, each setting's value) are dropped, the hash is what decides.

    A config mapping (``inductor_config[<setting>]``: hundreds of entries, one per setting) is
    folded into one ``<family>`` entry, so a report stays small: the first 32 hex digits of the
    SHA-256 of its members' hashes, concatenated in torch's order (which a torch version fixes).
    """
    out: dict[str, str] = {}
    folded: dict[str, Any] = {}
    try:
        i, n = 0, len(lines or ())
        while i < n:
            line = lines[i]
            close = line.find("] ")
            if close < 0:
                i += 1
                continue
            colon = line.find(":", close + 2)
            name = line[close + 2 : colon if colon >= 0 else len(line)]
            cut = name.find("[")
            if cut <= 0 or "config" not in name[:cut]:
                out[name] = line[1:close]
                i += 1
                continue
            # torch lists a mapping's entries in a row: the whole run at once, it is most of the lines
            family = name[:cut]
            i, joined = _config_run(lines, i, close, line[close : close + cut + 3])
            out.setdefault(family, "")
            folded.setdefault(family, hashlib.sha256()).update(joined.encode())
    except Exception:  # components explain a miss; never fail a compile for them
        log.debug("sandbox: unreadable cache key components", exc_info=True)
    for family, digest in folded.items():
        out[family] = digest.hexdigest()[:32]
    return out


def cache_keys(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per compile cache looked up in ``events`` (a capture's list), the last lookup:
    ``{"fx_graph" | "aot_autograd": {"key", "state", "components": {name: hash}}}``."""
    out: dict[str, Any] = {}
    for e in events:
        if e.get("ph") != "i":
            continue
        name = e.get("name") or ""
        for prefix, cache in _CACHE_INSTANTS:
            if name.startswith(prefix):
                args = e.get("args") or {}
                out[cache] = {
                    "key": args.get("key"),
                    "state": args.get("cache_state") or name[len(prefix) :],
                    "components": cache_key_components(args.get("components")),
                }
    return out


# torch._inductor.metrics (module globals), torch._dynamo.utils.compilation_time_metrics,
# cumulative_time_spent_ns, _metrics_context_tls / MetricsContext.

# Carried across the stock wire already (CachedMetricsDeltas); the rest are added here.
_STOCK_METRICS = frozenset(
    {
        "generated_kernel_count",
        "generated_cpp_vec_kernel_count",
        "ir_nodes_pre_fusion",
        "cpp_to_dtype_count",
        "num_bytes_accessed",
        "num_matches_for_scatter_upon_const_tensor",
    }
)


def jsonable(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [jsonable(x) for x in v]
    return repr(v)[:500]


def inductor_metrics_snapshot() -> dict[str, Any]:
    """Every counter and list in ``torch._inductor.metrics``, as JSON values."""
    from torch._inductor import metrics

    out: dict[str, Any] = {}
    for name, value in vars(metrics).items():
        if name.startswith("_") or name.isupper() or name == "TYPE_CHECKING":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, list)):
            continue
        out[name] = jsonable(value)
    return out


def inductor_metrics_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in after.items():
        prev = before.get(name)
        if isinstance(value, list):
            out[name] = value[len(prev or []) :]
        elif isinstance(value, (int, float)):
            out[name] = value - (prev or 0)
    return out


def apply_inductor_metrics(delta: dict[str, Any]) -> None:
    """Add the worker's counts that the stock wire drops to this process's metrics."""
    from torch._inductor import metrics

    for name, value in delta.items():
        if name in _STOCK_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(getattr(metrics, name, None), (int, float)):
            setattr(metrics, name, getattr(metrics, name) + value)


def time_metrics_snapshot() -> dict[str, Any]:
    from torch._dynamo.utils import compilation_time_metrics, cumulative_time_spent_ns

    return {
        "compilation_time_metrics": {k: list(v) for k, v in compilation_time_metrics.items()},
        "cumulative_time_spent_ns": dict(cumulative_time_spent_ns),
    }


def time_metrics_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    ctm_b, ctm_a = before["compilation_time_metrics"], after["compilation_time_metrics"]
    cum_b, cum_a = before["cumulative_time_spent_ns"], after["cumulative_time_spent_ns"]
    return {
        "compilation_time_metrics": {
            k: v[len(ctm_b.get(k, [])) :] for k, v in ctm_a.items() if len(v) > len(ctm_b.get(k, []))
        },
        "cumulative_time_spent_ns": {k: v - cum_b.get(k, 0) for k, v in cum_a.items() if v != cum_b.get(k, 0)},
    }


def apply_time_metrics(delta: dict[str, Any]) -> None:
    """Put the worker's ``dynamo_timed`` timings where an in-process compile leaves them."""
    from torch._dynamo.utils import compilation_time_metrics, cumulative_time_spent_ns

    for k, v in delta.get("compilation_time_metrics", {}).items():
        compilation_time_metrics.setdefault(k, []).extend(v)
    for k, v in delta.get("cumulative_time_spent_ns", {}).items():
        cumulative_time_spent_ns[k] += v


@contextlib.contextmanager
def capture_compilation_metrics() -> Iterator[dict[str, Any]]:
    """Worker side: collect what ``dynamo_timed(..., dynamo_compile_column_us=...)``
    adds to CompilationMetrics (e.g. ``inductor_code_gen_cumulative_compile_time_us``,
    ``post_grad_pass_time_us``); outside a dynamo compile those would be dropped."""
    from torch._dynamo import utils as dynamo_utils
    from torch._dynamo.metrics_context import MetricsContext

    captured: dict[str, Any] = {}
    tls = dynamo_utils._metrics_context_tls
    previous = getattr(tls, "metrics_context", None)
    ctx = MetricsContext(on_exit=lambda start, end, metrics, exc_type, exc: captured.update(metrics))
    tls.metrics_context = ctx
    try:
        # Inductor adds some metrics to the outermost timed event: give it one.
        with ctx, dynamo_utils.dynamo_timed("worker_compile", log_pt2_compile_event=True):
            yield captured
    finally:
        if previous is None:
            del tls.metrics_context
        else:
            tls.metrics_context = previous


def apply_compilation_metrics(values: dict[str, Any]) -> None:
    """Parent side: add the worker's integer CompilationMetrics columns to the
    compile in progress, as an in-process compile would have."""
    from torch._dynamo.utils import get_metrics_context

    ctx = get_metrics_context()
    if not ctx.in_progress():
        return
    for k, v in values.items():
        if k.endswith("_us") and isinstance(v, int) and not isinstance(v, bool) and k != "duration_us":
            ctx.increment(k, v)


def inductor_config_diff() -> dict[str, Any]:
    """Inductor config entries whose current value differs from the default
    (``torch._inductor.config._config`` entries' ``default``)."""
    from torch._inductor import config

    current = config.get_config_copy()
    out: dict[str, Any] = {}
    for key, entry in getattr(config, "_config", {}).items():
        if key in current and current[key] != entry.default:
            out[key] = jsonable(current[key])
    return out


def chromium_logger_id() -> str:
    from torch._dynamo.utils import get_chromium_event_logger

    return get_chromium_event_logger().id_


def set_chromium_logger_id(value: str | None) -> None:
    """Make this process's ChromiumEventLogger speak under the parent's id."""
    if value:
        from torch._dynamo.utils import get_chromium_event_logger

        get_chromium_event_logger().id_ = value

"""One "machine" of a team sharing Inductor's Redis caches: the zoo's MLP trained for one
step through the sandbox, with an empty local cache directory of its own. The test turns
the remote caches on (TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE / _AUTOGRAD_REMOTE_CACHE) and
points them at its redis-server (TORCHINDUCTOR_REDIS_URL), up or down.

Prints the reports, whether the result matches eager, and the sandbox's remote cache
metrics (from its Prometheus registry)."""

import common
import sandbox
from sandbox import zoo

registry = sandbox.enable_metrics()
eager = zoo.run("mlp", backend=None, steps=1)
compiled = zoo.run("mlp", steps=1)
correct = common.close(compiled["outputs"], eager["outputs"]) and common.close(compiled["grads"], eager["grads"])
metrics = {}
for cache in ("fx_graph_remote", "aot_autograd_remote"):
    for result in ("hit", "miss", "unavailable", "error"):
        metrics[f"{cache}/{result}"] = registry.get_sample_value(
            "sandbox_cache_lookups_total", {"cache": cache, "result": result}
        )
    metrics[f"{cache}/saved_s"] = registry.get_sample_value(
        "sandbox_remote_cache_saved_seconds_total", {"cache": cache}
    )
assert sandbox.flush(60), "reports not stored"
common.emit({"reports": common.reports(), "correct": correct, "metrics": metrics})

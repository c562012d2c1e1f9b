"""Causes: why each graph compiled as it did (``compile_reason``, ``recompile``, ``inputs``,
``cache_keys``, the kernels' ``ops``), read from real compiles through ``backend="sandbox"``.

Modes (argv[1]), run in this order on one cache dir by ``tests/record/test_causes.py``:

* ``first``: a graph break in a trained function (forward + backward of both graphs), a
  recompile for a new shape under ``dynamic=False``, a graph with known input shapes and dtypes,
  a ``dynamic=True`` compile, and ``cached`` (relu, the cache-key graph) on an empty cache.
* ``again``: ``cached`` again, first as AOTAutograd's cache serves it (the pair's key is that
  of ``first``), then - dynamo reset, AOTAutograd's cache off - as the FX graph cache serves it.
* ``config``: ``cached`` again with ``max_fusion_size=32``, an Inductor setting in the cache key.
"""

import sys

import torch

import common
import sandbox

mode = sys.argv[1]
BREAK_LINE = next(i for i, line in enumerate(open(__file__), 1) if line.strip() == "torch._dynamo.graph_break()")


def broken(x):
    y = torch.relu(x) * 2
    torch._dynamo.graph_break()
    return (y.sin() + 1).sum()


def reshaped(x):
    return torch.cos(x) + 1


def typed(x, w):
    return (x.to(torch.float64) * w).sum(1)


def dynamic(x, n):
    return torch.tanh(x) * n


def cached(x):
    return torch.relu(x) + 3


def reports_of(fn, *args, **compile_kwargs):
    n0 = len(sandbox.reports())
    torch.compile(fn, backend="sandbox", **compile_kwargs)(*args)
    return common.reports()[n0:]


out = {"mode": mode, "file": __file__, "break_line": BREAK_LINE}
if mode == "first":
    n0 = len(sandbox.reports())
    x = torch.randn(8, 4, requires_grad=True)
    torch.compile(broken, backend="sandbox")(x).backward()
    out["broken"] = common.reports()[n0:]
    n0 = len(sandbox.reports())
    compiled = torch.compile(reshaped, backend="sandbox", dynamic=False)
    compiled(torch.randn(8))
    compiled(torch.randn(16))
    out["reshaped"] = common.reports()[n0:]
    out["typed"] = reports_of(typed, torch.randn(4, 3), torch.randn(3, dtype=torch.float64))
    out["dynamic"] = reports_of(dynamic, torch.randn(5, 3), 2, dynamic=True)
    out["cached"] = reports_of(cached, torch.randn(16))
elif mode == "again":
    out["aot_hit"] = reports_of(cached, torch.randn(16))
    torch._dynamo.reset()
    with torch._functorch.config.patch(enable_autograd_cache=False):
        out["fx_hit"] = reports_of(cached, torch.randn(16))
elif mode == "config":
    out["cached"] = reports_of(cached, torch.randn(16), options={"max_fusion_size": 32})
else:
    raise SystemExit(f"unknown mode {mode!r}")
common.emit(out)

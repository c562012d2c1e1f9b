"""A training loop with kernel runtimes in the record (option ``profile_steps``), for
``tests/record/test_profiled_steps.py``. argv[1]:

``on``: a LayerNorm + GELU MLP, five steps, call 3 of each graph profiled. ``simd``: the same with
Inductor's ``cpp.simdlen=1`` (scalar C++ kernels: the planted reason B's kernels run slower).
``off``: the same model without the option, the user's own ``torch.profiler`` around step 3 (what
it sees of the sandbox: nothing), and a second model with the option whose profiled call meets
the user's profiler (skipped, and said so). Both ``on`` and ``simd`` are named ``profiled``.
"""

import sys
import time

import torch

import common
import sandbox

case = sys.argv[1]
torch.manual_seed(0)


def model(width: int) -> torch.nn.Module:
    wide = 2 * width
    return torch.nn.Sequential(
        torch.nn.Linear(width, wide), torch.nn.LayerNorm(wide), torch.nn.GELU(), torch.nn.Linear(wide, width)
    )


def steps(fn, x, n, profile_at=None):
    times, seen = [], []
    for step in range(1, n + 1):
        t = time.perf_counter()
        if step == profile_at:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                fn(x).sum().backward()
            seen = sorted({e.name for e in prof.events()})
        else:
            fn(x).sum().backward()
        times.append(time.perf_counter() - t)
    return times, seen


options = {"run_name": "profiled" if case != "off" else "unprofiled"}
if case != "off":
    options["profile_steps"] = "3"
if case == "simd":
    options["cpp.simdlen"] = 1
x = torch.randn(256, 256)
compiled = torch.compile(model(256), backend="sandbox", options=options)
times, seen = steps(compiled, x, 5, profile_at=3 if case == "off" else None)
out = {"case": case, "times": times, "user_profiler_saw": seen}
if case == "off":
    # The option on, and the user's own profiler open at the chosen call: that call is skipped.
    other = torch.compile(model(128), backend="sandbox", options={"profile_steps": 2, "run_name": "unprofiled"})
    steps(other, torch.randn(64, 128), 3, profile_at=2)
sandbox.flush()
out["reports"] = common.reports()
out["run_id"] = out["reports"][0]["run_id"]
common.emit(out)

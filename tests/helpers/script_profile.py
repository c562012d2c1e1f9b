"""A training loop with kernel runtimes in the record (option ``profile_steps``), for
``tests/record/test_profiled_steps.py``. argv[1]:

``on``: a LayerNorm + GELU MLP, five steps, call 3 of each graph profiled; then a narrower one
without the option, the user's own ``torch.profiler`` around its step 3 (what it sees of the
sandbox: nothing), and a third with the option whose profiled call meets the user's profiler
(skipped, and said so). ``simd``: the first model only, with Inductor's ``cpp.simdlen=1`` (scalar
C++ kernels: the planted reason B's kernels run slower). Every run is named ``profiled``.
"""

import sys
import time

import torch

import common
import sandbox

case = sys.argv[1]
torch.manual_seed(0)
# One thread: with two on two busy cores, a kernel's parallel region waits for a descheduled
# thread, and under the suite's other work one profiled call took many times its usual time,
# more than the planted scalar kernels cost (docs/decisions/profiled-steps.md saw the same).
torch.set_num_threads(1)


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


options = {"run_name": "profiled", "profile_steps": "3"}
if case == "simd":
    options["cpp.simdlen"] = 1
x = torch.randn(256, 256)
compiled = torch.compile(model(256), backend="sandbox", options=options)
times, _ = steps(compiled, x, 5)
out = {"case": case, "times": times}
if case == "on":
    # Another model without the option, under the user's own profiler at its call 3: the sandbox
    # adds nothing there.
    plain = torch.compile(model(128), backend="sandbox", options={"run_name": "profiled"})
    _, out["user_profiler_saw"] = steps(plain, torch.randn(64, 128), 3, profile_at=3)
    # With the option, a chosen call that the user's profiler records is skipped, and said so.
    other = torch.compile(model(64), backend="sandbox", options={"profile_steps": 2, "run_name": "profiled"})
    steps(other, torch.randn(32, 64), 3, profile_at=2)
sandbox.flush()
out["reports"] = common.reports()
out["run_id"] = out["reports"][0]["run_id"]
common.emit(out)

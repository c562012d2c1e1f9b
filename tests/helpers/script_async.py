"""Async mode (``options={"async": True}``): ``script_async.py SCENARIO [SCENARIO ...]``.

Scenarios run in one process, in the order given (none pays an interpreter and worker
start of its own); the result is keyed by scenario.

* ``natural``: no rule (``SANDBOX_ASYNC=1`` from the environment): train until both
  graphs switched by themselves; losses against eager at every step; the thread count
  outside the stand-in, and the number of graphs (no recompile).
* ``failure``: a graph whose background compile fails (the worker raises): it stays eager,
  warns, never raises.
* ``dropout``: a model with dropout, replicas switching at different steps, all from the
  same seed: their losses and gradients must agree with each other.
* ``parallel``: blocking mode with 2 workers: forward and backward compile side by side.
* ``zoo``: each training entry of the zoo, 30 AdamW steps, once per switch step: replica
  ``r`` switches its forward graphs at step ``r`` and its backward graphs a step later or
  earlier (a test rule forces the switch: waiting for the compile when it is not back yet,
  and going back to eager for the next replica). One model instance whose parameters are
  reset per replica, so the graphs compile once. Every replica's losses and final
  gradients against eager's.
* ``cached``: one training step of ``natural``'s model (``SWITCH=1``: until both graphs
  switched).
"""

import os
import sys
import time
import warnings

import torch
from torch import nn

import common
import sandbox
from sandbox import zoo
from sandbox.isolation import deferred

RTOL = ATOL = 1e-4  # fp32, as in Inductor's own tests
STEPS = int(os.environ.get("ASYNC_STEPS", "30"))
BATCH = 16  # natural and cached: not the zoo's MLP shape (32), so not its cache entries


def switch_rule(state):
    def rule(kind):
        return state["step"] >= (state["backward_at"] if kind == "backward" else state["forward_at"])

    return rule


def train(model, fn, inputs, entry_dynamic=False, seed=None):
    """Train for len(inputs) steps; losses per step and final gradients."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    grads = {}
    if seed is not None:
        torch.manual_seed(seed)
    for step, xs in enumerate(inputs):
        STATE["step"] = step
        xs = [x.clone() for x in xs]
        if entry_dynamic:
            for x in xs:
                torch._dynamo.mark_dynamic(x, 0)
        opt.zero_grad(set_to_none=True)
        loss = fn(*xs).float().pow(2).mean()
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        losses.append(loss.detach())
    return losses, grads


def compare(ref, got, rtol=RTOL, atol=ATOL):
    problems = []
    (ref_losses, ref_grads), (losses, grads) = ref, got
    for i, (a, b) in enumerate(zip(ref_losses, losses)):
        if not common.close(b, a, rtol, atol):
            problems.append(f"loss[{i}]: {b.item()!r} vs {a.item()!r}")
    if len(ref_losses) != len(losses):
        problems.append(f"{len(losses)} losses vs {len(ref_losses)}")
    for name, g in ref_grads.items():
        if name not in grads or not common.close(grads[name], g, rtol, atol):
            problems.append(f"grad[{name}]")
    return problems


STATE = {"step": 0, "forward_at": 0, "backward_at": 0}


def schedule(r):
    """Replica r: forward at step r, backward one step later (even r) or earlier (odd r)."""
    return r, (r + 1 if r % 2 == 0 else r - 1)


def replicas(model, fn, inputs, dynamic=False, seed=None, n=None):
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    out = []
    for r in range(STEPS if n is None else n):
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(initial[k])
        STATE["forward_at"], STATE["backward_at"] = schedule(r)
        out.append(train(model, fn, inputs, dynamic, seed))
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(initial[k])
    return out


def scenario_zoo(names):
    results = {}
    deferred.set_switch_rule(switch_rule(STATE))
    for name in names:
        entry = zoo.ZOO[name]
        torch.manual_seed(0)
        model = entry.build()
        model.train(True)
        torch.manual_seed(1)
        inputs = [entry.inputs(step) for step in range(STEPS)]
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        ref = train(model, model, inputs, entry.dynamic)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(initial[k])
        n0, t0 = len(sandbox.reports()), time.time()
        fn = torch.compile(model, backend="sandbox", options={"async": True}, **entry.compile_kwargs)
        problems, raised = [], None
        try:
            for r, got in enumerate(replicas(model, fn, inputs, entry.dynamic)):
                problems += [f"replica {r} {schedule(r)}: {p}" for p in compare(ref, got)]
        except Exception as e:  # noqa: BLE001 - reported to the test
            raised = common.exception_info(e)
        results[name] = {
            "problems": problems[:20],
            "raised": raised,
            "reports": common.reports()[n0:],
            "seconds": time.time() - t0,
        }
        torch._dynamo.reset()
    deferred.set_switch_rule(None)
    return {"results": results}


class DropoutMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def scenario_dropout():
    deferred.set_switch_rule(switch_rule(STATE))
    torch.manual_seed(0)
    model = DropoutMLP()
    torch.manual_seed(1)
    inputs = [[torch.randn(32, 64)] for _ in range(STEPS)]
    fn = torch.compile(model, backend="sandbox", options={"async": True})
    # Replicas switch at steps 0, 7, 14, ...; one more never switches (STEPS: past the end).
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {}
    for r in list(range(0, STEPS, 7)) + [STEPS]:
        STATE["forward_at"], STATE["backward_at"] = r, r + 1
        model.load_state_dict(initial)
        runs[r] = train(model, fn, inputs, seed=2)
    # Another seed: dropout is really on (the losses must differ).
    STATE["forward_at"], STATE["backward_at"] = 0, 0
    model.load_state_dict(initial)
    other_seed = train(model, fn, inputs, seed=3)
    deferred.set_switch_rule(None)
    base = runs[STEPS]
    return {
        "problems": {r: compare(base, got) for r, got in runs.items() if r != STEPS},
        "switch_steps": sorted(runs),
        "other_seed_differs": bool(compare(base, other_seed)),
        "reports": common.reports(),
    }


def scenario_natural():
    # Spans through the OpenTelemetry SDK's in-memory exporter (the application's provider).
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sandbox.enable_tracing(provider)
    threads_outside = torch.get_num_threads()
    torch.manual_seed(0)
    model = zoo.MLP()
    ref_model = zoo.MLP()
    ref_model.load_state_dict(model.state_dict())
    fn = torch.compile(model, backend="sandbox")  # SANDBOX_ASYNC=1 in the environment
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-2)
    problems, step, t0 = [], 0, time.time()
    first_step_s = None
    switched = lambda: sum(1 for r in sandbox.reports() if r.switched_at)  # noqa: E731
    while time.time() - t0 < 240:
        x = torch.randn(BATCH, 64)
        losses = []
        for f, o in ((fn, opt), (ref_model, ref_opt)):
            o.zero_grad(set_to_none=True)
            loss = f(x).pow(2).mean()
            loss.backward()
            o.step()
            losses.append(loss.detach())
        if first_step_s is None:
            first_step_s = time.time() - t0
        if not common.close(losses[0], losses[1]):
            problems.append(f"step {step}: {losses[0].item()!r} vs eager {losses[1].item()!r}")
        step += 1
        if switched() >= 2:
            break
        time.sleep(0.01)  # a step of a real job takes longer than this MLP's
    # Keep going a few steps on the compiled graphs.
    for _ in range(3):
        x = torch.randn(BATCH, 64)
        opt.zero_grad(set_to_none=True)
        fn(x).pow(2).mean().backward()
        opt.step()
    return {
        "steps": step,
        "first_step_s": first_step_s,
        "problems": problems[:20],
        "reports": common.reports(),
        "threads_outside": threads_outside,
        "threads_after": torch.get_num_threads(),
        "frame_count": torch._dynamo.utils.counters["stats"]["unique_graphs"],
        "spans": [
            {
                "name": sp.name,
                "attributes": dict(sp.attributes),
                "events": [e.name for e in sp.events],
                "start": sp.start_time / 1e9,
                "end": sp.end_time / 1e9,
            }
            for sp in exporter.get_finished_spans()
            if sp.name.startswith("torch.compile ")
        ],
    }


def scenario_paired():
    """cudagraphs on (Inductor skips them for CPU graphs, but the switch rule is the same):
    forward and backward switch together, in the same step."""
    torch.manual_seed(0)
    model = zoo.MLP()
    ref_model = zoo.MLP()
    ref_model.load_state_dict(model.state_dict())
    fn = torch.compile(model, backend="sandbox", options={"async": True, "triton.cudagraphs": True})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-2)
    problems, step, t0 = [], 0, time.time()
    n0 = len(sandbox.reports())
    while time.time() - t0 < 240:
        x = torch.randn(24, 64)
        losses = []
        for f, o in ((fn, opt), (ref_model, ref_opt)):
            o.zero_grad(set_to_none=True)
            loss = f(x).pow(2).mean()
            loss.backward()
            o.step()
            losses.append(loss.detach())
        if not common.close(losses[0], losses[1]):
            problems.append(f"step {step}: {losses[0].item()!r} vs eager {losses[1].item()!r}")
        step += 1
        if sum(1 for r in sandbox.reports()[n0:] if r.switched_at) >= 2:
            break
        time.sleep(0.01)
    return {"steps": step, "problems": problems[:20]}


def scenario_failure():
    import failing_ops

    def f(x):
        return failing_ops.raise_op(torch.sin(x)) + 1

    fn = torch.compile(f, backend="sandbox", options={"async": True})
    x = torch.randn(8)
    outputs, raised = [], None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            t0 = time.time()
            while time.time() - t0 < 120:
                outputs.append(common.close(fn(x), torch.sin(x) * 2 + 1))
                if any(r.outcome == "failed" for r in sandbox.reports()):
                    break
                time.sleep(0.05)
            for _ in range(3):
                outputs.append(common.close(fn(x), torch.sin(x) * 2 + 1))
        except Exception as e:  # noqa: BLE001
            raised = common.exception_info(e)
    return {
        "outputs": outputs,
        "raised": raised,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        "reports": common.reports(),
    }


def scenario_parallel():
    torch.manual_seed(0)
    model = zoo.TransformerBlock()
    ref = zoo.TransformerBlock()
    ref.load_state_dict(model.state_dict())
    fn = torch.compile(model, backend="sandbox", options={"workers": 2, "async": False})
    torch.manual_seed(1)
    inputs = [[torch.randn(2, 8, 64)] for _ in range(3)]
    got = train(model, fn, inputs)
    want = train(ref, ref, inputs)
    return {"problems": compare(want, got), "reports": common.reports(), "workers": sandbox.workers()}


def scenario_cached():
    torch.manual_seed(0)
    model = zoo.MLP()
    fn = torch.compile(model, backend="sandbox")
    x = torch.randn(BATCH, 64)
    t0 = time.time()
    while True:
        fn(x).pow(2).mean().backward()
        if os.environ.get("SWITCH") != "1" or sum(1 for r in sandbox.reports() if r.switched_at) >= 2:
            break
        if time.time() - t0 > 240:
            break
        time.sleep(0.05)
    return {"reports": common.reports(), "workers": sandbox.workers()}


if __name__ == "__main__":
    # Several scenarios in one process (each pays no interpreter and worker start of its own):
    # ``script_async.py natural failure dropout parallel zoo``; results keyed by scenario.
    names = sys.argv[1:]
    sandbox.warmup(workers=2 if "parallel" in names else None)
    out = {}
    seconds = {}
    for name in names:
        n0, t0 = len(sandbox.reports()), time.time()
        if name == "zoo":
            out[name] = scenario_zoo([n for n, e in zoo.ZOO.items() if e.train])
        else:
            out[name] = globals()[f"scenario_{name}"]()
            out[name]["reports"] = common.reports()[n0:]
        torch._dynamo.reset()
        seconds[name] = time.time() - t0
    sandbox.flush()
    common.emit({"pid": os.getpid(), "seconds": seconds, **out})

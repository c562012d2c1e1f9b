"""Entry point + isolation: a training script that never imports ``sandbox`` to compile.

Compiles (a) a model class defined in this ``__main__`` with a graph break, trained
(forward + lazily compiled backward; softmax, so a backward carries prims.fma), then
called with a new shape (recompile); (b) a model class local to a function. Run twice
on one cache dir: the second run must be served by the caches.
"""

import os
import sys

SANDBOX_IMPORTED_AT_START = "sandbox" in sys.modules

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402  (does not import sandbox)

CACHE_FILES_AT_START = common.cache_files()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)

    def forward(self, x):
        x = F.gelu(self.fc1(x))
        torch._dynamo.graph_break()
        # softmax's backward decomposes to prims.fma (Inductor's decomposition of
        # _softmax_backward_data): the stock pickler refuses that graph.
        return F.softmax(self.fc2(x), dim=-1) * 2


def local_model() -> nn.Module:
    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x):
            return F.silu(self.fc(x)) + x

    return Local()


def step(fn, x):
    out = fn(x)
    out.pow(2).mean().backward()
    return out.detach()


torch.manual_seed(0)
net = Net()
ref = Net()
ref.load_state_dict(net.state_dict())
compiled = torch.compile(net, backend="sandbox")
SANDBOX_IMPORTED_BY_RESOLUTION = "sandbox" in sys.modules

import sandbox  # noqa: E402  (only to read what happened)

workers_after_resolve = sandbox.workers()  # before the first call
received = []
sandbox.on_report(lambda report: received.append(report.report_id))

ok = {}
x1, x2 = torch.randn(8, 16), torch.randn(5, 16)
ok["train_shape1"] = common.close(step(compiled, x1), step(ref, x1))
ok["train_shape2"] = common.close(step(compiled, x2), step(ref, x2))  # recompile: new shape
ok["grads"] = all(common.close(p.grad, q.grad) for p, q in zip(net.parameters(), ref.parameters()))

local = local_model()
with torch.no_grad():
    y = torch.compile(local, backend="sandbox")(x1)
    ok["local_class"] = common.close(y, local(x1))


def prims_in_backward() -> list[str]:
    """The prims ops in Net's backward graphs after Inductor's decompositions (what the
    sandbox had to carry across). Traced with a capturing backend, outside the sandbox,
    so the test notices if a torch release stops producing them here."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.decomposition import select_decomp_table

    seen = set()

    def bw(gm, example_inputs):
        seen.update(
            str(n.target) for n in gm.graph.nodes if n.op == "call_function" and str(n.target).startswith("prims.")
        )
        return make_boxed_func(gm.forward)

    capture = aot_autograd(
        fw_compiler=lambda gm, example_inputs: make_boxed_func(gm.forward),
        bw_compiler=bw,
        decompositions=select_decomp_table(),
    )
    step(torch.compile(Net(), backend=capture), x1)
    return sorted(seen)


reports = common.reports()
prims = prims_in_backward()
common.emit(
    {
        "pid": os.getpid(),
        "sandbox_imported_at_start": SANDBOX_IMPORTED_AT_START,
        "sandbox_imported_by_resolution": SANDBOX_IMPORTED_BY_RESOLUTION,
        "workers_after_resolve": workers_after_resolve,
        "ok": ok,
        "reports": reports,
        "prims_in_backward": prims,
        "reports_after_capture": len(sandbox.reports()) - len(reports),
        "on_report_ids": received,
        "workers": sandbox.workers(),
        "pool_processes": common.worker_trees(),
        "cache_files_at_start": CACHE_FILES_AT_START,
        "cache_files": common.cache_files(),
    }
)

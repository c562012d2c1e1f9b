"""``mode=``, ``options["mode"]`` and Inductor ``options=`` reach Inductor.

Observed through the FX graph cache, whose key covers Inductor's config: the same
function compiled again (after ``torch._dynamo.reset()``) hits the cache only when
the config is the same. So ``options={"mode": "max-autotune-no-cudagraphs", "workers": 1}``
(a mode beside sandbox options: torch.compile refuses ``mode=`` and ``options=`` together)
must miss, and then ``mode=`` and the same config spelled as Inductor ``options=``
(``list_mode_options``) must hit;
``fx_graph_cache=False`` (an Inductor key) must keep the FX graph cache out entirely.
"""

import os

import torch

import common
import sandbox


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(32, 64)
        self.fc2 = torch.nn.Linear(64, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


torch.manual_seed(0)
net = Net().eval()
x = torch.randn(16, 32)
with torch.no_grad():
    expected = net(x)

mode = "max-autotune-no-cudagraphs"
mode_options = dict(torch._inductor.list_mode_options(mode))
steps = [
    ("default", {}),
    ("default_again", {}),
    ("mode_in_options", {"options": {"mode": mode, "workers": 1}}),
    ("mode", {"mode": mode}),
    ("mode_as_options", {"options": mode_options}),
    ("no_fx_graph_cache", {"options": {"fx_graph_cache": False}}),
]
results = {}
for name, kwargs in steps:
    torch._dynamo.reset()
    n0 = len(sandbox.reports())
    with torch.no_grad():
        y = torch.compile(net, backend="sandbox", **kwargs)(x)
    results[name] = {"kwargs": kwargs, "correct": common.close(y, expected), "reports": common.reports()[n0:]}
common.emit({"pid": os.getpid(), "mode_options": mode_options, "results": results})

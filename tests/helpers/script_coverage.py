"""Isolation coverage: custom ops.

- an op from an importable module (``custom_ops``): crosses, compiled isolated;
- an op defined here in ``__main__``: cannot cross; with the default
  ``unpicklable="in_process"`` it is compiled in this process with the reason recorded;
  with ``unpicklable="error"`` the compile raises UnpicklableGraphError.
"""

import os

import torch

import common
import custom_ops
import sandbox


@torch.library.custom_op("sandbox_tests_main::shifted_relu", mutates_args=())
def shifted_relu(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x - 0.5)


@shifted_relu.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def uses_importable_op(x):
    return custom_ops.scaled_tanh(x * 2, 3.0) + 1


def uses_main_op(x):
    return shifted_relu(x.sin()) * 2


def uses_main_op_strict(x):
    return shifted_relu(x.cos()) * 3


x = torch.randn(32)
out = {"pid": os.getpid()}

n0 = len(sandbox.reports())
out["importable_correct"] = common.close(torch.compile(uses_importable_op, backend="sandbox")(x), uses_importable_op(x))
out["importable"] = common.reports()[n0:]

n0 = len(sandbox.reports())
out["main_correct"] = common.close(torch.compile(uses_main_op, backend="sandbox")(x), uses_main_op(x))
out["main"] = common.reports()[n0:]

n0 = len(sandbox.reports())
strict = torch.compile(uses_main_op_strict, backend="sandbox", options={"unpicklable": "error"})
try:
    strict(x)
    out["strict_raised"] = None
except Exception as e:  # noqa: BLE001 - the test looks at it
    out["strict_raised"] = common.exception_info(e)
    out["strict_is_unpicklable_error"] = any(isinstance(c, sandbox.UnpicklableGraphError) for c in common.chain(e))
    out["strict_raised_itself"] = isinstance(e, sandbox.UnpicklableGraphError)  # what `except` catches
out["strict"] = common.reports()[n0:]
out["workers"] = sandbox.workers()
out["pool_processes"] = common.worker_trees()
common.emit(out)

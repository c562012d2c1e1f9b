"""The program behind script_prestart.py and script_prestart_unnamed.py: which workers
exist right after ``import torch``, after ``torch.compile``, and after the first call.
(The two scripts differ only in whether their text names the backend.) Importing this
module imports neither torch nor ``sandbox``."""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any

import common


def _workers() -> list[dict[str, Any]]:
    if "sandbox" not in sys.modules:
        return []
    import sandbox

    return [{"pid": w["pid"], "started_by": w["started_by"]} for w in sandbox.workers()]


def after_import() -> dict[str, Any]:
    return {"sandbox_imported": "sandbox" in sys.modules, "workers": _workers()}


def _spawned_child(queue: Any) -> None:
    import torch  # noqa: F401 - the hook runs (again) here, in a multiprocessing child

    queue.put({"sandbox_imported": "sandbox" in sys.modules, "workers": _workers()})


def run(at_import: dict[str, Any], compile_model: Any, argv: list[str]) -> None:
    import torch

    out: dict[str, Any] = {"after_import": at_import}
    if "spawn" in argv:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_spawned_child, args=(queue,))
        child.start()
        out["spawned_child"] = queue.get(timeout=120)
        child.join(60)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    try:
        compiled = compile_model(model)
    except Exception as e:  # noqa: BLE001 - the test reads what was raised
        out["compile_error"] = common.exception_info(e)
        common.emit(out)
        return
    out["after_compile"] = _workers()
    x = torch.randn(3, 8)
    out["ok"] = common.close(compiled(x), model(x))
    out["reports"] = [{"outcome": r["outcome"], "worker_pid": r["worker_pid"]} for r in common.reports()]
    out["after_first_call"] = _workers()
    common.emit(out)

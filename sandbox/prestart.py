"""When the workers start: at ``import torch``, at ``torch.compile``, or at the first graph.

A worker is a fresh interpreter that imports torch, CUDA and Inductor before it can compile.
Started at ``torch.compile``, it is not ready when the program's first graph is, and that
graph waits for it. Started when the program imports torch, it comes up while the program
builds its model and loads its data (docs/decisions/workers-start-at-import-torch.md).

torch calls each function registered under the ``torch.backends`` entry-point group at
the end of ``import torch`` (its extension autoload; ``TORCH_DEVICE_BACKEND_AUTOLOAD=0``
turns every such hook off). This package registers :func:`at_torch_import` there. It
starts the workers only in a program that is about to compile through the sandbox: one
whose main script names the backend (``backend="sandbox"``), or every program where
``SANDBOX_PRESTART=import``. Never in a worker, in Inductor's compile pool, or in a
process started by ``multiprocessing`` (spawned DataLoader workers re-import torch). It
never raises: ``import torch`` must not fail because of it.

``SANDBOX_PRESTART``:
  auto     (default) at ``import torch`` where the main script names the backend, else
           when ``torch.compile`` resolves the backend
  import   at ``import torch`` in every program (not in the processes above)
  compile  when ``torch.compile`` resolves the backend
  off      no pre-start: the first graph that misses the caches starts a worker (and waits
           for it); a program whose graphs all hit the caches starts none
``sandbox.warmup()`` starts them whatever the setting.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from sandbox import env
from sandbox.options import OptionError, Options

log = logging.getLogger("sandbox")

ENV = "SANDBOX_PRESTART"
MODES = ("auto", "import", "compile", "off")
_BACKEND_NAMED = re.compile(r"""backend\s*=\s*(['"])sandbox\1""")
_SCRIPT_LIMIT = 4 << 20  # bytes of the main script searched for the backend's name


def mode() -> str:
    """``SANDBOX_PRESTART``, validated (OptionError names the valid values)."""
    value = env.get(ENV).lower()
    if value not in MODES:
        raise OptionError(f"{ENV}={os.environ.get(ENV)!r} is not valid; valid values: {', '.join(MODES)}")
    return value


def main_script_names_backend() -> bool:
    """The program's main script (``__main__.__file__``) contains ``backend="sandbox"``."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return False
    try:
        with open(path, "rb") as f:
            text = f.read(_SCRIPT_LIMIT).decode("utf-8", "replace")
    except OSError:
        return False
    return bool(_BACKEND_NAMED.search(text))


def _child_of_multiprocessing() -> bool:
    """A process that ``multiprocessing`` started (spawn, forkserver). It re-imports the main
    script before its ``parent_process()`` is set, but after its process got its own name.
    (While it re-imports the script, ``__main__`` is still the child's own stub, which names
    no file: ``auto`` never starts workers there anyway; ``import`` needs this check.)"""
    mp = sys.modules.get("multiprocessing")
    try:
        return mp is not None and (mp.parent_process() is not None or mp.current_process().name != "MainProcess")
    except Exception:  # noqa: BLE001
        return False


def wanted_at_import() -> bool:
    """Whether ``import torch`` should start the workers in this process."""
    if env.get("SANDBOX_IN_WORKER") == "1" or _child_of_multiprocessing():
        return False
    try:
        chosen = mode()
    except OptionError:
        return False  # torch.compile reports the bad value
    if chosen == "import":
        return True
    return chosen == "auto" and main_script_names_backend()


def wanted_at_compile() -> bool:
    """Whether resolving the backend at ``torch.compile`` should start the workers."""
    return mode() != "off"


def at_torch_import() -> None:
    """The ``torch.backends`` entry point, called at the end of ``import torch``."""
    try:
        if not wanted_at_import():
            return
        from sandbox import runtime  # imports torch's compile stack: only in a program that compiles

        runtime.current().get_pool(Options.resolve(), started_by="import torch")
    except Exception:  # noqa: BLE001 - never fail import torch; torch.compile starts them then
        log.debug("sandbox: no pre-start at import torch", exc_info=True)

"""Which processes may share one compile service, and where its socket lives.

Two processes share a service only when everything a worker's compile depends on besides the
job itself is the same: the user, the interpreter, torch, Triton and the sandbox (version and
installed location), and the environment variables Inductor and Triton read when a worker
starts (``TORCHINDUCTOR_*``, ``TRITON_*``, ``CUDA_VISIBLE_DEVICES``). The cache folders are
left out: they travel with each job, and the service shares a compile only between jobs with
the same ones. Inductor's Python-level config travels with each graph and is part of its FX
graph cache key, the key a compile is shared by. The socket's name is a hash of all of it, and
the service compares a client's at hello as well. Imports no torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from sandbox import env as sandbox_env
from sandbox.version import __version__

# Travel with each job (and take part in the key a compile is shared by), so they do not split services.
PER_JOB = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
_PREFIXES = ("TORCHINDUCTOR_", "TRITON_")
_EXACT = ("CUDA_VISIBLE_DEVICES",)
# AF_UNIX paths are limited to 108 bytes, the terminating NUL included.
_MAX_SOCKET_PATH = 100


class ServiceUnavailable(Exception):
    """No service can be used: the folder is unsafe, or the service could not be started or reached."""


def _distribution(name: str) -> list[str] | None:
    """A package's version and where it is installed, found without importing it."""
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    spec = importlib.util.find_spec(name)
    return [version, os.path.dirname(spec.origin) if spec is not None and spec.origin else ""]


def _sandbox_sources() -> str:
    """The sandbox's worker-side code as installed (sizes and modification times): two checkouts
    of one version that differ in their code do not share a service."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for folder in ("isolation", "torch_adapter"):
        path = os.path.join(here, folder)
        for name in sorted(os.listdir(path)):
            if name.endswith(".py"):
                st = os.stat(os.path.join(path, name))
                h.update(f"{folder}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def versions() -> dict[str, Any]:
    """What this interpreter runs: each process computes its own (the service its own too)."""
    return {
        "python": sys.version,
        "executable": sys.executable,
        "torch": _distribution("torch"),
        "triton": _distribution("triton"),
        "sandbox": [__version__, os.path.dirname(os.path.dirname(os.path.abspath(__file__))), _sandbox_sources()],
    }


def compatibility(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything that must be equal for two processes to share a service."""
    environ = os.environ if environ is None else environ
    shared_env = {
        k: v for k, v in sorted(environ.items()) if (k.startswith(_PREFIXES) or k in _EXACT) and k not in PER_JOB
    }
    return {"uid": os.getuid(), "versions": versions(), "env": shared_env}


def key_hash(compat: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(compat, sort_keys=True).encode()).hexdigest()[:20]


def _safe_folder(path: str) -> str:
    """``path`` as a folder of this user's only (created 0700); refuses a symlink, another
    user's folder or one others may write to (someone could plant a socket there)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise ServiceUnavailable(f"cannot use the folder {path}: {e}") from e
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ServiceUnavailable(f"{path} is not a private folder of this user (a symlink, another user's, or open)")
    return path


def service_dir(environ: Mapping[str, str] | None = None) -> str:
    """The private folder of this user's compile services' sockets and locks: SANDBOX_SERVICE_DIR,
    else $XDG_RUNTIME_DIR/torch-compile-sandbox, else the temp folder's torch-compile-sandbox-<uid>."""
    environ = os.environ if environ is None else environ
    chosen = sandbox_env.get("SANDBOX_SERVICE_DIR", environ)
    if chosen:
        return _safe_folder(chosen)
    runtime_dir = environ.get("XDG_RUNTIME_DIR", "")
    if runtime_dir and os.path.isdir(runtime_dir):
        path = os.path.join(runtime_dir, "torch-compile-sandbox")
        if len(path) + 30 <= _MAX_SOCKET_PATH:
            return _safe_folder(path)
    return _safe_folder(os.path.join(tempfile.gettempdir(), f"torch-compile-sandbox-{os.getuid()}"))


def paths(folder: str, compat: Mapping[str, Any]) -> dict[str, str]:
    """The service's socket, the lock its start is decided under, its log and its description."""
    base = os.path.join(folder, key_hash(compat))
    if len(base) + 5 > _MAX_SOCKET_PATH:
        raise ServiceUnavailable(
            f"the socket path {base}.sock is too long for a Unix socket (at most {_MAX_SOCKET_PATH} bytes):"
            " set SANDBOX_SERVICE_DIR to a shorter folder"
        )
    return {"socket": base + ".sock", "lock": base + ".lock", "log": base + ".log", "info": base + ".json"}

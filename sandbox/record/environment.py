"""What a Run records about where it ran: versions, device, config, code revision."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any

import torch

from sandbox import env
from sandbox.options import Options
from sandbox.record import context
from sandbox.record.report import Run
from sandbox.torch_adapter import events
from sandbox.version import __version__


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _device() -> str | None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    return _cpu_model()


def git_revision(cwd: str | None = None) -> str | None:
    # An explicit copy of the environment: with none, git would be started from the C environment
    # array, which Inductor's first kernel load on another thread can move and free mid-start
    # (docs/decisions/worker-environment-settled.md).
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or os.getcwd(),
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=2,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def job_id(options: Options | None = None) -> str | None:
    """The job this process is a rank of: option ``job`` / ``SANDBOX_JOB``, else torchrun's
    ``TORCHELASTIC_RUN_ID`` (its rendezvous id; ``none``, torchrun's default without
    ``--rdzv-id`` on several nodes, names no job)."""
    job = options.job if options is not None else env.get("SANDBOX_JOB")
    if job:
        return job
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "").strip()
    return run_id if run_id and run_id.lower() != "none" else None


def describe_run(options: Options | None = None) -> Run:
    try:
        import triton  # type: ignore[import-not-found]  # optional: CPU-only installs have none

        triton_version = triton.__version__
    except Exception:
        triton_version = None

    dist = context.distributed()
    config: dict[str, Any] = {}
    try:
        config = events.inductor_config_diff()
    except Exception:
        pass
    if options is not None:
        config.update({k: events.jsonable(v) for k, v in dict(options.inductor).items()})
    return Run(
        name=options.run_name if options is not None else None,
        tags=list(options.tags) if options is not None else [],
        job=job_id(options),
        rank=dist["rank"],
        local_rank=dist["local_rank"],
        world_size=dist["world_size"],
        torch=torch.__version__,
        triton=triton_version,
        cuda=getattr(torch.version, "cuda", None),
        device=_device(),
        sandbox=__version__,
        inductor_config=config,
        git_revision=git_revision(),
    )

"""What a Run records about where it ran: versions, device, config, code revision."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from sandbox.isolation import compat
from sandbox.telemetry import context
from sandbox.telemetry.report import Run


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

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
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or os.getcwd(), capture_output=True, text=True, timeout=2
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def job_id(options: Any = None) -> str | None:
    """The job this process is a rank of: option ``job`` / ``SANDBOX_JOB``, else torchrun's
    ``TORCHELASTIC_RUN_ID`` (its rendezvous id; ``none``, torchrun's default without
    ``--rdzv-id`` on several nodes, names no job)."""
    job = getattr(options, "job", None) or os.environ.get("SANDBOX_JOB", "").strip()
    if job:
        return job
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "").strip()
    return run_id if run_id and run_id.lower() != "none" else None


def describe_run(options: Any = None) -> Run:
    import torch

    try:
        import triton  # type: ignore[import-not-found]

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    from sandbox import __version__

    dist = context.distributed()
    config: dict[str, Any] = {}
    try:
        config = compat.inductor_config_diff()
    except Exception:
        pass
    if options is not None:
        config.update({k: compat._jsonable(v) for k, v in dict(options.inductor).items()})
    return Run(
        name=getattr(options, "run_name", None),
        tags=list(getattr(options, "tags", ()) or ()),
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

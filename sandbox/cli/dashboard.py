"""``sandbox dashboard``: the Streamlit dashboard, started the safe way from any folder.

The dashboard shows argv, code locations and generated kernels, so it listens on the loopback
interface only, sends no usage statistics and offers no "Deploy" button, whatever folder it is
started from (Streamlit reads ``.streamlit/config.toml`` from the current folder only, so these
settings are passed on its command line instead).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from sandbox.store import default_location, masked

__all__ = ["DashboardError", "app_path", "streamlit_argv", "run_dashboard"]


class DashboardError(RuntimeError):
    """The dashboard cannot start here: what is missing and how to get it."""


def app_path() -> Path:
    """The dashboard's entry script: inside the installed package, or the checkout's dashboard/."""
    spec = importlib.util.find_spec("sandbox.dashboard")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            app = Path(folder) / "app.py"
            if app.is_file():
                return app
    checkout = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    if checkout.is_file():
        return checkout
    raise DashboardError(
        "the dashboard's files are not installed; reinstall with: pip install 'compile-sandbox[dashboard]'"
    )


def streamlit_argv(port: int | None, address: str) -> list[str]:
    """The ``streamlit run`` command line, settings on it so a config file cannot widen them (the store
    travels in the environment)."""
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        f"--server.address={address}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        f"--browser.serverAddress={address}",
        "--client.toolbarMode=minimal",
    ]
    if port is not None:
        argv.append(f"--server.port={port}")
    return argv


def run_dashboard(store: str | None, port: int | None, address: str = "127.0.0.1", out=sys.stdout) -> int:
    """Replace this process with Streamlit serving the dashboard on ``store`` (default: the default store)."""
    if importlib.util.find_spec("streamlit") is None:
        raise DashboardError("Streamlit is not installed; install it with: pip install 'compile-sandbox[dashboard]'")
    argv = streamlit_argv(port, address)
    env = dict(os.environ)
    if store:
        # The store travels in the environment, not argv: a URL's password stays out of `ps`.
        env["SANDBOX_STORE"] = store
    where = masked(store or default_location())
    out.write(f"sandbox dashboard: serving {where} on http://{address}:{port or 8501} (Ctrl-C stops it)\n")
    out.flush()
    os.execve(sys.executable, argv, env)
    return 0  # not reached: execve replaces the process

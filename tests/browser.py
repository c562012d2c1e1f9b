"""The dashboard in a real browser, for the tests that open it: ``streamlit run
dashboard/app.py`` from the repository root (so the shipped ``.streamlit/config.toml``
applies) on a free port (:func:`serve`), and pages loaded by headless Chromium through
Playwright (:func:`load`), checked for Streamlit's error element and saved as screenshots
under ``test-artifacts/dashboard/``.

Needs Debian's ``chromium`` (``apt-get install chromium``, or ``SANDBOX_TEST_CHROMIUM``) and
the ``playwright`` Python package (no browser download): :func:`missing` says what is missing,
:func:`unavailable` skips with it locally and fails under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import IN_CI, ROOT, free_port

CHROMIUM = os.environ.get("SANDBOX_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
APP = ROOT / "dashboard" / "app.py"
LOAD_TIMEOUT_MS = 60_000


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


def missing() -> str | None:
    """What is missing for these tests, with the hint to install it; None when nothing is."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: .venv/bin/pip install -c constraints.txt -e '.[test]'"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM}: apt-get install -y --no-install-recommends chromium"
    if shutil.which("streamlit", path=os.path.dirname(sys.executable)) is None:
        return "streamlit is missing: .venv/bin/pip install -c constraints.txt -e '.[test]'"
    return None


@contextlib.contextmanager
def serve(store: Path, log_name: str = "dashboard-server.log") -> Iterator[str]:
    """``streamlit run dashboard/app.py`` on ``store`` and a free loopback port, until the block ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["SANDBOX_STORE"] = str(store)
    log = ARTIFACTS.parent / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "streamlit", "run", str(APP.relative_to(ROOT)), "--server.port", str(port)]
    with running(command, port, log, cwd=ROOT, env=env) as url:
        yield url


@contextlib.contextmanager
def running(command: list[str], port: int, log: Path, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """A dashboard server started by ``command`` (its output in ``log``), once its health check
    answers on ``port``; stopped when the block ends."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=str(cwd), env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not come up on {url} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load(browser: Any, url: str, shot: str, wait_for: str) -> Any:
    """Open ``url``, wait until the script finished and ``wait_for`` is visible, check
    that no exception is shown, save a screenshot. Returns the page (caller closes it)."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="domcontentloaded", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector(wait_for, state="visible", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=LOAD_TIMEOUT_MS)
    page.wait_for_timeout(500)  # charts and grids paint after the script ends
    screenshot(page, shot)
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.all_inner_texts()
    assert not errors, errors
    return page


def screenshot(page: Any, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main container, so the viewport is
    made as tall as that container's content first."""
    height = page.evaluate(
        '() => Math.max(...[...document.querySelectorAll(\'[data-testid="stMain"], '
        '[data-testid="stMainBlockContainer"]\')]'
        ".map(e => e.scrollHeight), document.body.scrollHeight)"
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(max(int(height) + 80, size["height"]), 12000)})
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.set_viewport_size(size)


def metric_values(page: Any) -> dict[str, str]:
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return {label.strip(): value.strip() for label, value in zip(labels, values)}


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(addr) == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
                else:
                    found.add(addr)
    return found

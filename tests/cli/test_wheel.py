"""The package as a user meets it: the wheel built from this checkout, installed with its
``dashboard`` extra into a fresh venv, used from a folder that is not the checkout.

It runs the demo there, then ``sandbox dashboard``, and checks what a user would: the dashboard
listens on the loopback interface only, Chromium shows the run the demo made, the page offers no
"Deploy" and asks no host but the dashboard's own. Needs network-free pip access to torch and
the test extras (the CI machine's indexes), Chromium and playwright (tests/browser.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from browser import CHROMIUM, LOAD_TIMEOUT_MS, listening_addresses, missing, running, unavailable
from support import ROOT, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh venv with the wheel and its dashboard extra, and a user's home of its own."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel = next(dist.glob("compile_sandbox-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"), f"{wheel}[dashboard]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    home = base / "home"
    user_dir = base / "somewhere-else"
    user_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "OTEL_", "STREAMLIT_", "PYTHON"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    yield {"wheel": wheel, "venv": venv, "env": env, "cwd": user_dir, "home": home}


def test_the_wheel_holds_every_package_and_the_dashboard(installed: dict[str, Any]) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "sandbox").rglob("__init__.py")}
    missing_packages = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing_packages, f"pyproject.toml's package list lacks {missing_packages}"
    for page in (ROOT / "dashboard" / "pages").glob("*.py"):
        assert f"sandbox/dashboard/pages/{page.name}" in names
    assert "sandbox/dashboard/app.py" in names and "sandbox/dashboard/queries/shared.py" in names


@pytest.fixture(scope="module")
def demo(installed: dict[str, Any]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sandbox", "demo", "--models", "mlp"],
        cwd=installed["cwd"],
        env=installed["env"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_from_another_folder_into_the_default_store(
    installed: dict[str, Any], demo: subprocess.CompletedProcess
) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr[-3000:]
    assert (installed["home"] / ".cache" / "torch-compile-sandbox" / "runs.db").is_file()
    # With the venv on PATH, the printed commands are the bare ones, and they work.
    show = re.search(r"^See it here with: (sandbox show \w+)$", demo.stdout, re.M)
    assert show, demo.stdout
    assert re.search(r"^To see every compile in the dashboard, then: sandbox dashboard$", demo.stdout, re.M)
    shown = subprocess.run(
        show.group(1).split(), cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and "isolated" in shown.stdout, shown.stdout + shown.stderr


def test_sandbox_dashboard_from_another_folder(installed: dict[str, Any], demo: subprocess.CompletedProcess) -> None:
    assert demo.returncode == 0, demo.stderr[-3000:]
    if missing():
        unavailable(missing())  # type: ignore[arg-type]
    port = free_port()
    log = installed["cwd"] / "dashboard.log"
    command = ["sandbox", "dashboard", "--port", str(port)]
    with running(command, port, log, cwd=installed["cwd"], env=installed["env"]) as url:
        assert listening_addresses(port) == {"127.0.0.1"}, listening_addresses(port)
        _browse(url, port)
    text = log.read_text()
    store = installed["home"] / ".cache" / "torch-compile-sandbox" / "runs.db"
    assert f"serving {store} on http://127.0.0.1:{port}" in text, text
    assert "gather usage stats" not in text.lower(), text


def _browse(url: str, port: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            hosts: list[str] = []
            page.on("request", lambda r: hosts.append(r.url))
            page.goto(url, wait_until="domcontentloaded", timeout=LOAD_TIMEOUT_MS)
            done = '[data-testid="stApp"][data-test-script-state="notRunning"]'
            page.wait_for_selector(done, timeout=LOAD_TIMEOUT_MS)
            page.wait_for_selector('[data-testid="stDataFrame"]', timeout=LOAD_TIMEOUT_MS)
            # The demo's one run, read from the default store (the table itself is drawn on a canvas).
            assert "1 of 1 runs" in page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
            page.wait_for_timeout(1000)
            assert page.get_by_text("Deploy", exact=True).count() == 0
            outside = [u for u in hosts if not u.startswith((f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"))]
            outside = [u for u in outside if not u.startswith(("data:", "blob:", "about:"))]
            assert not outside, outside
        finally:
            browser.close()

"""What the browser tests stand on: a Jupyter server of the project's own
environment and Debian's headless Chromium, driven by Playwright.

Nothing here downloads a browser: Playwright is pointed at the system's
Chromium (``/usr/bin/chromium``, or ``$CHROMIUM``).  Without one the tests skip
with the reason, except in CI (``CI`` set), where a missing browser fails.

The Jupyter server runs from ``sys.executable`` (the .venv), on 127.0.0.1, on a
port the OS picks, with a random token, its own config, runtime and settings
directories (so a user's JupyterLab settings or open tabs play no part), and
no news or update checks.  It serves a temporary folder that holds a copy of
the notebook under test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SERVER_START_TIMEOUT = 120  # seconds; a loaded two-core machine can be slow


def find_chromium() -> str | None:
    candidate = os.environ.get("CHROMIUM")
    if candidate:
        return candidate if Path(candidate).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CHROMIUM"):
            reason = f"$CHROMIUM is {os.environ['CHROMIUM']!r}, which does not exist"
        else:
            reason = (
                "no Chromium found (looked for chromium and chromium-browser on PATH); "
                "install Debian's package: apt-get install chromium"
            )
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the browser test: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path):
    # Module scope, not session: while sync_playwright() is open, the main
    # thread counts as running an event loop, and asyncio.run() in any other
    # test would fail.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class JupyterServer:
    """``python -m jupyterlab`` (or ``notebook``) serving one temporary folder."""

    def __init__(self, app: str, folder: Path):
        self.app = app  # "jupyterlab" or "notebook"
        self.folder = folder
        self.token = secrets.token_hex(16)
        self.home = folder.parent / f"{app}-home"
        self.home.mkdir(exist_ok=True)
        self.log_path = self.home / "server.log"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        runtime = self.home / "runtime"
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(self.home / "config"),
            JUPYTER_RUNTIME_DIR=str(runtime),
            JUPYTERLAB_SETTINGS_DIR=str(self.home / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.home / "workspaces"),
            IPYTHONDIR=str(self.home / "ipython"),
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_TOKEN", None)
        # Answer "never" to JupyterLab's question about fetching news, so no
        # notification covers the page (and nothing asks a website).
        notification = self.home / "settings" / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        app_class = "LabApp" if self.app == "jupyterlab" else "JupyterNotebookApp"
        command = [
            sys.executable,
            "-m",
            self.app,
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.folder}",
            # window.jupyterapp, so the test can read the cells and run them
            f"--{app_class}.expose_app_in_browser=True",
            # JupyterLab's own options, which Notebook 7 (built on it) shares
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # CI containers run as root
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, cwd=self.folder, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        info = runtime / f"jpserver-{self.process.pid}.json"
        while not info.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.app} did not start in time:\n{self.log()}")
            time.sleep(0.2)
        for _ in range(50):  # the file may be seen before it is fully written
            try:
                port = json.loads(info.read_text())["port"]
                break
            except (json.JSONDecodeError, KeyError):
                time.sleep(0.1)
        self.url = f"http://127.0.0.1:{port}"

    def page_url(self, notebook: str) -> str:
        path = "lab/tree" if self.app == "jupyterlab" else "notebooks"
        return f"{self.url}/{path}/{notebook}?token={self.token}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and every kernel it started (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            child.kill()
        self._log.close()
        self.process = None


@pytest.fixture
def jupyter(tmp_path):
    """Start ``jupyter(app, notebook_path)``: the server, with a copy of the notebook."""
    servers: list[JupyterServer] = []

    def start(app: str, notebook: Path) -> tuple[JupyterServer, str]:
        folder = tmp_path / "notebooks"
        folder.mkdir(exist_ok=True)
        shutil.copy(notebook, folder / notebook.name)
        server = JupyterServer(app, folder)
        servers.append(server)
        server.start()
        return server, notebook.name

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS

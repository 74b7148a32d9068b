"""A real `locksmith serve` and a real headless Chromium (Debian's chromium
and chromium-driver, through Selenium) for the dashboard's tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BIN = os.environ.get("LOCKSMITH_BIN", "locksmith")


class Server:
    """`locksmith serve` on port 0 over its own embedded store."""

    def __init__(self, home: Path, roles: Optional[Dict[str, str]] = None) -> None:
        self.home = home
        self.env = dict(os.environ, LOCKSMITH_HOME=str(home))
        for var in ("LOCKSMITH_SERVER", "LOCKSMITH_STORE", "LOCKSMITH_TOKEN", "LOCKSMITH_OWNER"):
            self.env.pop(var, None)
        self.tokens: Dict[str, str] = {}
        for name, role in (roles or {}).items():
            out = subprocess.run([BIN, "--json", "token", "create", "--name", name, "--role", role],
                                 env=self.env, capture_output=True, text=True, check=True).stdout
            self.tokens[name] = json.loads(out)["token"]
        self.proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--sweep-interval", "200ms"],
                                     env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = self.proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:"), first
        self.url = first.removeprefix("listening on ")

    def cli(self, *args: str, token: Optional[str] = None, owner: str = "cli-user", check: bool = True) -> str:
        """`locksmith ARGS` through this server."""
        env = dict(self.env, LOCKSMITH_SERVER=self.url, LOCKSMITH_OWNER=owner)
        if token:
            env["LOCKSMITH_TOKEN"] = token
        done = subprocess.run([BIN, *args], env=env, capture_output=True, text=True)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def server(home: Path) -> Iterator[Server]:
    s = Server(home)
    yield s
    s.stop()


@pytest.fixture
def secured(home: Path) -> Iterator[Server]:
    s = Server(home, {"ops": "admin", "board": "viewer", "worker": "client"})
    yield s
    s.stop()


def chrome(width: int = 1400, height: int = 900) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='locksmith-chromium-')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=opts, service=service)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    d = chrome()
    yield d
    d.quit()

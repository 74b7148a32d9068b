"""A real `locksmith serve` and a real headless Chromium (Debian's chromium
and chromium-driver, through Selenium) for the dashboard's tests."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "crates/testkit/python"))
from served import Served  # noqa: E402 - the suites' shared server

BIN = os.environ.get("LOCKSMITH_BIN", "locksmith")


class Server(Served):
    """`locksmith serve` over the store folder `home`."""

    def __init__(self, home: Path, roles: Optional[Dict[str, str]] = None) -> None:
        super().__init__(BIN, home, roles)


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

"""Fixtures: a store folder per test, and a real `locksmith serve` on port 0.

Every test that takes `store` runs twice: on the embedded store (a SQLite
file in the test's own folder) and through a server started for it.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "crates/testkit/python"))
from served import Served  # noqa: E402 - the suites' shared server


def locksmith_bin() -> str:
    found = os.environ.get("LOCKSMITH_BIN")
    if found:
        return found
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "locksmith"
        if p.exists():
            return str(p)
    on_path = shutil.which("locksmith")
    if on_path:
        return on_path
    pytest.fail("no locksmith binary: run `cargo build` (or set LOCKSMITH_BIN)")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store folder of the test's own, for this process and its children."""
    h = tmp_path / "home"
    h.mkdir()
    for var in ("LOCKSMITH_STORE", "LOCKSMITH_SERVER", "LOCKSMITH_TOKEN", "LOCKSMITH_OWNER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOCKSMITH_HOME", str(h))
    return h


class Server(Served):
    """`locksmith serve` over a store folder of its own inside `home`."""

    def __init__(self, home: Path, roles: Optional[Dict[str, str]] = None) -> None:
        folder = home / "server"
        folder.mkdir()
        super().__init__(locksmith_bin(), folder, roles)


@pytest.fixture
def server(home: Path) -> Iterator[Server]:
    s = Server(home)
    yield s
    s.stop()


def postgres_url() -> str:
    """A fresh schema on the test PostgreSQL (`cargo test` starts one and
    passes it in LOCKSMITH_TEST_PG_URL)."""
    base = os.environ.get("LOCKSMITH_TEST_PG_URL")
    if not base:
        pytest.skip("no PostgreSQL: set LOCKSMITH_TEST_PG_URL (cargo test -p locksmith-python does)")
    return f"{base}{'&' if '?' in base else '?'}schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["embedded", "server", "postgres"])
def store(request: pytest.FixtureRequest, home: Path) -> Iterator[str]:
    """The URL of the store under test: the embedded file, a server, or PostgreSQL."""
    if request.param == "embedded":
        yield f"sqlite://{home}/locksmith.db"
    elif request.param == "postgres":
        yield postgres_url()
    else:
        s = Server(home)
        yield s.url
        s.stop()


@pytest.fixture(params=["embedded", "postgres"])
def local_store(request: pytest.FixtureRequest, home: Path) -> str:
    """A store that binds locks to processes of this machine."""
    if request.param == "embedded":
        return f"sqlite://{home}/locksmith.db"
    return postgres_url()


def helper(*args: str) -> list:
    """The command line of tests/helper.py with `args`."""
    return [sys.executable, str(HERE / "helper.py"), *args]

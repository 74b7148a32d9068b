"""A real `locksmith serve` for the pytest suites (the Python package's and
the dashboard's): on port 0 of loopback, over its own embedded store in
`folder`, with tokens of the given roles made first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Dict, Optional


class Served:
    def __init__(self, binary: str, folder: Path, roles: Optional[Dict[str, str]] = None) -> None:
        self.binary = binary
        self.env = dict(os.environ, LOCKSMITH_HOME=str(folder))
        for var in ("LOCKSMITH_SERVER", "LOCKSMITH_STORE", "LOCKSMITH_TOKEN", "LOCKSMITH_OWNER"):
            self.env.pop(var, None)
        self.tokens: Dict[str, str] = {}
        for name, role in (roles or {}).items():
            out = subprocess.run([binary, "--json", "token", "create", "--name", name, "--role", role],
                                 env=self.env, capture_output=True, text=True, check=True).stdout
            self.tokens[name] = json.loads(out)["token"]
        self.proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--sweep-interval", "200ms"],
                                     env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = self.proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:"), first
        self.url = first.removeprefix("listening on ")

    def cli(self, *args: str, token: Optional[str] = None, owner: str = "cli-user", check: bool = True) -> str:
        """`locksmith ARGS` through this server, as `owner`."""
        env = dict(self.env, LOCKSMITH_SERVER=self.url, LOCKSMITH_OWNER=owner)
        if token:
            env["LOCKSMITH_TOKEN"] = token
        done = subprocess.run([self.binary, *args], env=env, capture_output=True, text=True)
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

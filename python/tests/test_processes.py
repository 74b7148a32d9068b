"""Real processes: exclusion, SIGKILL, SIGTERM and SIGSTOP, on both stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import locksmith
from conftest import helper


def start_holder(url: str, key: str, ttl: str) -> subprocess.Popen:
    p = subprocess.Popen(helper("hold", url, key, ttl), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def reasons(client: locksmith.Client, key: str) -> list:
    return [e["reason"] for e in client.history(key) if e["kind"] != "acquired" and e["reason"]]


def test_eight_processes_never_hold_the_lock_at_once(store: str, tmp_path: Path) -> None:
    folder = tmp_path / "witness"
    folder.mkdir()
    (folder / "count").write_text("0")
    rounds = 12
    procs = [
        subprocess.Popen(helper("witness", store, "jobs/witness", str(folder), str(rounds)))
        for _ in range(8)
    ]
    for p in procs:
        assert p.wait(120) == 0, "a worker found another inside, or failed"
    assert (folder / "count").read_text() == str(8 * rounds)
    assert not (folder / "inside").exists()
    client = locksmith.Client(store)
    acquired = client.history("jobs/witness", event="acquired", limit=0)
    assert len(acquired) == 8 * rounds
    fences = [e["fence"] for e in acquired]
    assert len(set(fences)) == len(fences), "every tenure has a fence of its own"


def test_a_holder_killed_by_sigkill_is_freed_at_once(local_store: str) -> None:
    url = local_store
    p = start_holder(url, "repo/killed", "600")
    client = locksmith.Client(url)
    first = client.status("repo/killed")["holders"][0]
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    started = time.monotonic()
    with client.lock("repo/killed", ttl=30, wait=20) as lock:
        took = time.monotonic() - started
        assert lock.fence > first["fence"]
    # Freed by proof of death, not by its 10-minute lease.
    assert took < 10, took
    assert "dead_process" in reasons(client, "repo/killed")


def test_through_a_server_a_killed_holder_ends_with_its_lease(server) -> None:
    p = start_holder(server.url, "repo/killed", "1.5")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    client = locksmith.Client(server.url)
    with client.lock("repo/killed", ttl=30, wait=20):
        pass
    assert "lease_expired" in reasons(client, "repo/killed")


def test_a_holder_receiving_sigterm_releases(store: str) -> None:
    p = start_holder(store, "repo/term", "600")
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == 128 + signal.SIGTERM
    client = locksmith.Client(store)
    assert client.status("repo/term")["holders"] == []
    assert reasons(client, "repo/term") == ["failed"]


def test_sigterm_without_locks_kills_as_usual(home: Path) -> None:
    code = "import locksmith, time; locksmith.Client(); print('ready', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == -signal.SIGTERM


def test_a_lease_lost_during_a_pause_sets_lost(store: str) -> None:
    p = subprocess.Popen(helper("pause", store, "repo/paused", "1"), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    os.kill(p.pid, signal.SIGSTOP)
    try:
        client = locksmith.Client(store)
        # The paused holder cannot renew: its lease runs out and the key is free.
        with client.lock("repo/paused", ttl=30, wait=20):
            pass
    finally:
        os.kill(p.pid, signal.SIGCONT)
    out, _ = p.communicate(timeout=30)
    assert out.startswith("lost lease_expired"), out
    assert "callback=['lease_expired']" in out, out
    assert "release_raised=lost" in out, out

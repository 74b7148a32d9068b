"""Child processes of the tests: `helper.py ROLE STORE_URL ...`."""

from __future__ import annotations

import os
import sys
import time

import locksmith


def witness(url: str, key: str, folder: str, rounds: str) -> None:
    """Takes `key` `rounds` times; inside, checks that nobody else is inside."""
    client = locksmith.Client(url)
    inside = os.path.join(folder, "inside")
    count = os.path.join(folder, "count")
    for _ in range(int(rounds)):
        with client.lock(key, ttl=30, wait=60):
            fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another is inside
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            with open(count) as f:
                n = int(f.read() or 0)
            time.sleep(0.001)
            with open(count, "w") as f:
                f.write(str(n + 1))
            os.unlink(inside)


def hold(url: str, key: str, ttl: str) -> None:
    """Holds `key` inside `with`, says so, and sleeps until killed."""
    client = locksmith.Client(url)
    with client.lock(key, ttl=float(ttl), wait=10, task="held-by-helper"):
        print("held", flush=True)
        time.sleep(120)


def pause(url: str, key: str, ttl: str) -> None:
    """Holds `key`, says so, and reports when the lock is lost."""
    client = locksmith.Client(url)
    lock = client.acquire(key, ttl=float(ttl), wait=10)
    seen = []
    lock.on_lost(lambda lk: seen.append(lk.lost_reason))
    print("held", flush=True)
    if not lock.lost.wait(30):
        print("never lost", flush=True)
        return
    time.sleep(0.2)  # the callback runs on the watcher thread
    try:
        lock.release()
        print("released without error", flush=True)
    except locksmith.LockLost as e:
        print(f"lost {lock.lost_reason} callback={seen} release_raised={e.code}", flush=True)


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    {"witness": witness, "hold": hold, "pause": pause}[role](*rest)

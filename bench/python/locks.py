"""Python locks side by side, in one run: locksmith (embedded store) against
filelock and portalocker.

    python3 -m pip install ./python filelock==4.3.1 portalocker==4.4.2
    python3 bench/python/locks.py [--pairs 3000] [--kills 15]

pairs: `with lock:` enter + exit, one process, one key, uncontended; rate
and p50/p99 of one enter + exit.
kill: a holder in its `with` block is killed with SIGKILL while another
process waits in `with` on the same key; the time from the kill to the
waiter holding (both read CLOCK_MONOTONIC, which all processes share).

Every loop is bounded: `--pairs` iterations, `--kills` rounds, and each
round gives up after 30 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, ContextManager, Dict, List


def percentile(xs: List[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def make_lock(kind: str, folder: str) -> Callable[[], ContextManager]:
    """A function returning a fresh `with`-able lock on the same key."""
    if kind == "locksmith":
        import locksmith

        client = locksmith.Client(f"sqlite://{folder}/locksmith.db")
        return lambda: client.lock("bench/key", ttl=30)
    if kind == "filelock":
        import filelock

        path = os.path.join(folder, "key.lock")
        return lambda: filelock.FileLock(path)
    if kind == "portalocker":
        import portalocker

        path = os.path.join(folder, "key.lock")
        # portalocker's own default check interval (0.25 s) and a long timeout.
        return lambda: portalocker.Lock(path, timeout=60)
    raise SystemExit(f"unknown lock {kind}")


def pairs(kind: str, n: int) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        new = make_lock(kind, folder)
        for _ in range(min(200, n)):  # warm up: open, create files, caches
            with new():
                pass
        times = []
        started = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            with new():
                pass
            times.append(time.perf_counter() - t0)
        total = time.perf_counter() - started
    return {
        "per_s": n / total,
        "p50_us": percentile(times, 50) * 1e6,
        "p99_us": percentile(times, 99) * 1e6,
    }


def child(role: str, kind: str, folder: str) -> None:
    """`hold`: take the lock, say so, sleep. `wait`: say ready, take the lock,
    print CLOCK_MONOTONIC at the moment it holds."""
    new = make_lock(kind, folder)
    if role == "hold":
        with new():
            print("held", flush=True)
            time.sleep(60)
    else:
        print("ready", flush=True)
        with new():
            print(repr(time.clock_gettime(time.CLOCK_MONOTONIC)), flush=True)


def kill_once(kind: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        me = [sys.executable, os.path.abspath(__file__), "--child"]
        holder = subprocess.Popen(me + ["hold", kind, folder], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        waiter = subprocess.Popen(me + ["wait", kind, folder], stdout=subprocess.PIPE, text=True)
        assert waiter.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the waiter is inside its wait
        killed = time.clock_gettime(time.CLOCK_MONOTONIC)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        out, _ = waiter.communicate(timeout=30)
        return float(out.strip()) - killed


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--kills", type=int, default=15)
    ap.add_argument("--only", choices=["pairs", "kill"], default=None)
    args = ap.parse_args()
    kinds = ["locksmith", "filelock", "portalocker"]
    import filelock
    import portalocker

    import locksmith

    print(
        f"# python {sys.version.split()[0]}, locksmith {locksmith.__version__}, "
        f"filelock {filelock.__version__}, portalocker {portalocker.__version__}"
    )
    if args.only in (None, "pairs"):
        print(f"\n## with lock: enter + exit, 1 process, {args.pairs} pairs\n")
        print("| lock | pairs/s | p50 µs | p99 µs | locksmith ÷ this (pairs/s) |")
        print("|---|---:|---:|---:|---:|")
        results = {k: pairs(k, args.pairs) for k in kinds}
        ours = results["locksmith"]["per_s"]
        for k in kinds:
            r = results[k]
            print(
                f"| {k} | {r['per_s']:.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
                f"{ours / r['per_s']:.2f}× |"
            )
    if args.only in (None, "kill"):
        print(f"\n## SIGKILL of the holder → the waiter holds, {args.kills} rounds\n")
        print("| lock | p50 ms | p99 ms | max ms | this ÷ locksmith (p50) |")
        print("|---|---:|---:|---:|---:|")
        results2 = {k: [kill_once(k) for _ in range(args.kills)] for k in kinds}
        ours50 = percentile(results2["locksmith"], 50)
        for k in kinds:
            xs = results2[k]
            print(
                f"| {k} | {percentile(xs, 50) * 1e3:.1f} | {percentile(xs, 99) * 1e3:.1f} | "
                f"{max(xs) * 1e3:.1f} | {percentile(xs, 50) / ours50:.1f}× |"
            )


if __name__ == "__main__":
    main()

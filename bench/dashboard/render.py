"""The dashboard with 10 000 held locks: time to the first render.

    cargo build --release -p locksmith-cli
    python3 -m pip install selenium==4.45.0     # and Debian's chromium, chromium-driver
    python3 bench/dashboard/render.py [--locks 10000] [--loads 5]

Starts `locksmith serve` (target/release/locksmith, or $LOCKSMITH_BIN) on
port 0 over a fresh embedded store, takes LOCKS locks through it (64 keys
per `locksmith acquire`), then opens the dashboard LOADS times in headless
Chromium and reports, from the start of the navigation: the first render of
the table (the summary says LOCKS held locks and the first page of rows is
drawn), and the time one more lock, taken through the server, needs to show
on the open page. Bounded: LOCKS / 64 commands, LOADS page loads, 30 s per wait.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "crates/cli/tests/dashboard"))
from conftest import chrome  # noqa: E402 - the tests' own browser set-up

OBSERVE = """
window.__rendered = null;
new MutationObserver((_, obs) => {
  const s = document.getElementById('locks-summary');
  if (s && /^\d+ held/.test(s.textContent) && parseInt(s.textContent, 10) >= Number(window.__want)) {
    window.__rendered = performance.now(); obs.disconnect();
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--locks", type=int, default=10000)
    ap.add_argument("--loads", type=int, default=5)
    args = ap.parse_args()
    binary = os.environ.get("LOCKSMITH_BIN", str(REPO / "target/release/locksmith"))
    home = tempfile.mkdtemp(prefix="locksmith-dash-bench-")
    env = dict(os.environ, LOCKSMITH_HOME=home)
    for var in ("LOCKSMITH_SERVER", "LOCKSMITH_STORE", "LOCKSMITH_TOKEN"):
        env.pop(var, None)
    server = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = server.stdout.readline().strip().removeprefix("listening on ")
    client_env = dict(env, LOCKSMITH_SERVER=url)
    try:
        started = time.monotonic()
        for i in range(0, args.locks, 64):
            keys = [f"bench/k{n:06d}" for n in range(i, min(i + 64, args.locks))]
            subprocess.run([binary, "acquire", *keys, "--ttl", "1h"], env=client_env, check=True,
                           stdout=subprocess.DEVNULL)
        made = time.monotonic() - started
        driver = chrome(1400, 900)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                               {"source": f"window.__want = '{args.locks}';" + OBSERVE})
        firsts, lives = [], []
        for n in range(args.loads):
            driver.get(url + "/")
            WebDriverWait(driver, 30, 0.02).until(lambda d: d.execute_script("return window.__rendered"))
            firsts.append(driver.execute_script("return window.__rendered"))
            rows = driver.execute_script("return document.querySelectorAll('#locks-body tr').length")
            WebDriverWait(driver, 30, 0.02).until(lambda d: d.find_element(By.ID, "conn").text == "live")
            # One more lock through the server: how soon the open page shows it.
            key = f"bench/extra{n}"
            t0 = time.monotonic()
            subprocess.run([binary, "acquire", key, "--ttl", "1h"], env=client_env, check=True,
                           stdout=subprocess.DEVNULL)
            WebDriverWait(driver, 30, 0.01).until(
                lambda d: d.execute_script("return document.getElementById('locks-summary').textContent.startsWith(arguments[0] + ' held')",
                                           str(args.locks + n + 1)))
            lives.append((time.monotonic() - t0) * 1000)
        driver.quit()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    print(f"# dashboard with {args.locks} held locks")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}; "
          f"{args.locks} locks taken in {made:.1f} s; first page {rows} rows")
    print()
    print("| measure | p50 ms | max ms | runs |")
    print("|---|---:|---:|---:|")
    print(f"| navigation start → table rendered ({args.locks} locks) | {statistics.median(firsts):.0f} | {max(firsts):.0f} | {len(firsts)} |")
    print(f"| one more lock taken (CLI through the server) → shown on the open page | {statistics.median(lives):.0f} | {max(lives):.0f} | {len(lives)} |")


if __name__ == "__main__":
    main()

"""The Python surface: with / async with, options, errors, reads, on both stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import locksmith
from conftest import Server, locksmith_bin


def test_with_releases_completed_and_exposes_the_grant(store: str) -> None:
    client = locksmith.Client(store)
    with client.lock("repo/acme", ttl=30, task="T-1", metadata={"pr": 7}) as lock:
        assert lock.held and lock.key == "repo/acme" and lock.keys == ["repo/acme"]
        assert lock.fence > 0 and lock.fences == {"repo/acme": lock.fence}
        assert lock.ttl == 30
        left = lock.expires_at - dt.datetime.now(dt.timezone.utc)
        assert dt.timedelta(seconds=25) < left <= dt.timedelta(seconds=31), left
        held = client.status("repo/acme")["holders"][0]
        assert held["task"] == "T-1" and held["metadata"] == {"pr": 7}
        assert held["fence"] == lock.fence
        assert not lock.lost.is_set()
        lock.renew()
    assert not lock.held
    assert client.status("repo/acme")["holders"] == []
    assert client.history("repo/acme", event="released")[0]["reason"] == "completed"


def test_an_exception_in_the_block_releases_failed(store: str) -> None:
    client = locksmith.Client(store)
    with pytest.raises(KeyError):
        with client.lock("repo/acme"):
            raise KeyError("boom")
    assert client.history("repo/acme", event="released")[0]["reason"] == "failed"


def test_busy_and_timed_out_name_the_holder(store: str) -> None:
    client = locksmith.Client(store)
    with client.lock("repo/acme", task="first", owner="agent-a") as first:
        with pytest.raises(locksmith.LockBusy) as busy:
            client.lock("repo/acme", wait=0).acquire()
        assert busy.value.code == "busy"
        assert busy.value.holder["owner"] == "agent-a"
        assert busy.value.holder["task"] == "first"
        assert busy.value.holder["fence"] == first.fence
        started = time.monotonic()
        with pytest.raises(locksmith.WaitTimedOut) as late:
            client.lock("repo/acme", wait=0.3).acquire()
        assert time.monotonic() - started >= 0.29
        assert isinstance(late.value, TimeoutError)
        assert late.value.holder["owner"] == "agent-a"
    assert client.waiters() == [], "the timed-out request left the queue"


def test_several_keys_are_granted_all_or_none(store: str) -> None:
    client = locksmith.Client(store)
    with client.lock("b"):
        with pytest.raises(locksmith.LockBusy):
            client.lock(["a", "b"], wait=0).acquire()
        assert client.status("a")["holders"] == []
    with client.lock(["a", "b"]) as both:
        assert set(both.fences) == {"a", "b"}


def test_shared_readers_and_a_semaphore(store: str) -> None:
    client = locksmith.Client(store)
    with client.lock("db", shared=True), client.lock("db", shared=True):
        with pytest.raises(locksmith.LockBusy):
            client.lock("db", wait=0).acquire()
    with client.lock("gpu", limit=2), client.lock("gpu", limit=2):
        with pytest.raises(locksmith.LockBusy):
            client.lock("gpu", limit=2, wait=0).acquire()
    with client.lock("tree", tree=True):
        with pytest.raises(locksmith.LockBusy):
            client.lock("tree/leaf", wait=0).acquire()


@pytest.mark.parametrize(
    "key, options, words",
    [
        ("bad key//", {}, "segment 2 is empty"),
        ("k", {"ttl": "5 parsecs"}, "invalid duration"),
        ("k", {"wait": -1}, "cannot be negative"),
        ("k", {"ttl": 0.01}, "at least 100ms"),
        ("k", {"shared": True, "limit": 2}, "exclude each other"),
        ("", {}, "key"),
    ],
)
def test_wrong_input_raises_value_error_and_changes_nothing(store, key, options, words) -> None:
    client = locksmith.Client(store)
    with client.lock("other") as other:
        with pytest.raises(ValueError) as e:
            client.lock(key, **options).acquire()
        assert words in str(e.value)
        assert isinstance(e.value, locksmith.InvalidRequest) and e.value.code == "invalid"
        assert client.status("other")["holders"][0]["fence"] == other.fence
    assert [e["key"] for e in client.history(limit=0)] == ["other", "other"]


def test_a_forced_lock_sets_lost_calls_back_and_raises_on_exit(store: str) -> None:
    client = locksmith.Client(store)
    seen = threading.Event()
    with pytest.raises(locksmith.LockLost) as e:
        with client.lock("repo/acme", ttl=0.6) as lock:
            lock.on_lost(lambda lk: seen.set())
            client.force_release("repo/acme", reason="stuck deploy")
            assert lock.lost.wait(5), "lost is set by the next renewal"
            assert lock.lost_reason == "forced"
            assert seen.wait(1)
            with pytest.raises(locksmith.LockLost):
                lock.renew()
    assert e.value.reason == "forced"
    forced = client.history("repo/acme", event="forced")[0]
    assert forced["detail"]["reason"] == "stuck deploy"


def test_force_release_with_an_old_fence_ends_nothing(store: str) -> None:
    client = locksmith.Client(store)
    with client.lock("repo/acme") as old:
        seen = old.fence
    with pytest.raises(locksmith.LockLost), client.lock("repo/acme", ttl=0.6) as new:
        with pytest.raises(locksmith.LockBusy) as e:
            client.force_release("repo/acme", reason="old screen", fence=seen)
        assert e.value.fence == new.fence
        assert client.status("repo/acme")["holders"][0]["fence"] == new.fence
        ended = client.force_release("repo/acme", reason="current", fence=new.fence)
        assert [x["fence"] for x in ended] == [new.fence]
        assert new.lost.wait(5)


def test_list_history_and_stats(store: str) -> None:
    client = locksmith.Client(store)
    with client.lock("repo/a", owner="w1"), client.lock("repo/b", owner="w2"), client.lock("x"):
        assert [l["key"] for l in client.list("repo/")] == ["repo/a", "repo/b"]
        assert [l["key"] for l in client.list(owner="w2")] == ["repo/b"]
        assert client.list(stale=True) == []
        s = client.stats()
        assert s["held"] == 3
    s = client.stats()
    assert s["held"] == 0 and s["releases"]["completed"] == 3
    assert s["success_rate"] == 1.0
    assert {"count", "avg_ms", "p99_ms", "max_ms"} <= set(s["waits"])
    assert [e["key"] for e in client.history(prefix="repo/", event="released")] == ["repo/a", "repo/b"]
    with pytest.raises(ValueError):
        client.history(event="exploded")


def test_async_with_and_a_cancelled_wait_leaves_the_queue(store: str) -> None:
    client = locksmith.Client(store)

    async def main() -> None:
        async with client.lock("repo/async") as lock:
            assert lock.held
            waiter = asyncio.ensure_future(client.lock("repo/async", wait=30).acquire_async())
            for _ in range(100):
                if client.waiters("repo/async"):
                    break
                await asyncio.sleep(0.05)
            assert len(client.waiters("repo/async")) == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            for _ in range(100):
                if not client.waiters("repo/async"):
                    break
                await asyncio.sleep(0.05)
            assert client.waiters("repo/async") == []
        async with client.lock("repo/async", wait=5) as again:
            assert again.fence > lock.fence

    asyncio.run(main())
    kinds = [e["kind"] for e in client.history("repo/async", limit=0)]
    assert "wait_cancelled" in kinds
    assert client.status("repo/async")["holders"] == []


def test_a_waiter_gets_the_lock_in_fifo_order(store: str) -> None:
    client = locksmith.Client(store)
    order = []
    holder = client.acquire("q")

    def wait(name: str) -> None:
        with client.lock("q", wait=30, owner=name):
            order.append(name)

    threads = []
    for name in ("first", "second", "third"):
        t = threading.Thread(target=wait, args=(name,))
        t.start()
        threads.append(t)
        for _ in range(200):
            if len(client.waiters("q")) == len(threads):
                break
            time.sleep(0.01)
    holder.release()
    for t in threads:
        t.join(30)
    assert order == ["first", "second", "third"]


def test_client_none_is_the_store_of_the_command_line(home: Path) -> None:
    client = locksmith.Client()
    with client.lock("repo/cli", task="from-python") as lock:
        out = subprocess.run(
            [locksmith_bin(), "--json", "status", "repo/cli"], capture_output=True, text=True, check=True
        ).stdout
        holders = json.loads(out)["holders"]
        assert holders[0]["task"] == "from-python" and holders[0]["fence"] == lock.fence
    assert (home / "locksmith.db").exists()


def test_a_forked_child_never_releases_the_parents_lock(home: Path) -> None:
    client = locksmith.Client()
    parent = client.acquire("repo/parent", ttl=30)
    pid = os.fork()
    if pid == 0:  # the child: its copy of `parent` belongs to the parent
        code = 1
        try:
            with client.lock("repo/child", wait=5):
                pass
            parent = None  # drop the inherited lock object
            gc.collect()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.status("repo/parent")["holders"][0]["fence"] == parent.fence
    assert client.history("repo/child", event="released")[0]["reason"] == "completed"
    parent.release()


def test_bad_store_url_is_a_clear_error(home: Path) -> None:
    with pytest.raises(ValueError) as e:
        locksmith.Client("ftp://nowhere")
    assert "accepted stores" in str(e.value)
    with pytest.raises(locksmith.StoreError) as e:
        locksmith.Client("http://127.0.0.1:9").acquire("k", wait=0)
    assert e.value.code == "unavailable"


def test_a_wait_that_would_deadlock_is_refused(store: str) -> None:
    client = locksmith.Client(store)
    a = client.acquire("dl/a", owner="agent-a")
    b = client.acquire("dl/b", owner="agent-b")
    got = []

    def a_wants_b() -> None:
        with client.lock("dl/b", owner="agent-a", wait=30) as lock:
            got.append(lock.fence)

    t = threading.Thread(target=a_wants_b)
    t.start()
    for _ in range(200):
        if client.waiters("dl/"):
            break
        time.sleep(0.01)
    with pytest.raises(locksmith.DeadlockRefused) as e:
        client.lock("dl/a", owner="agent-b", wait=5).acquire()
    assert e.value.code == "deadlock"
    assert {"agent-a", "agent-b"} <= set(e.value.cycle), e.value.cycle
    assert [w["owner"] for w in client.waiters("dl/")] == ["agent-a"], "the first waiter keeps its place"
    b.release()
    t.join(30)
    assert got and got[0] > b.fence
    a.release()


def test_a_viewer_token_may_read_but_not_lock(home: Path) -> None:
    server = Server(home, {"watcher": "viewer", "worker": "client"})
    try:
        viewer = locksmith.Client(server.url, token=server.tokens["watcher"])
        worker = locksmith.Client(server.url, token=server.tokens["worker"])
        with pytest.raises(locksmith.Forbidden) as e:
            viewer.acquire("repo/acme", wait=0)
        assert e.value.code == "forbidden"
        with pytest.raises(locksmith.Unauthorized) as e:
            locksmith.Client(server.url).status("repo/acme")
        assert e.value.code == "unauthorized" and isinstance(e.value, locksmith.Forbidden)
        with worker.lock("repo/acme") as lock:
            assert viewer.status("repo/acme")["holders"][0]["fence"] == lock.fence
            with pytest.raises(locksmith.Forbidden):
                worker.force_release("repo/acme", reason="not mine to clear")
        assert viewer.stats()["held"] == 0
    finally:
        server.stop()

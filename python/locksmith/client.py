"""The client and its locks: ``with client.lock("repo/acme", ttl=30) as lock:``."""

from __future__ import annotations

import asyncio
import atexit
import datetime as _dt
import json
import os
import signal
import threading
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _native
from .errors import LockLost

__all__ = ["Client", "Lock", "Duration"]

_MAIN = threading.main_thread()

Duration = Union[int, float, str, _dt.timedelta]
"""Seconds (``30``, ``0.5``), text (``"500ms"``, ``"30s"``, ``"5m"``) or a ``timedelta``."""


def _span(value: Optional[Duration]) -> Union[None, float, str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"a duration is a number of seconds, a text such as '30s' or a timedelta, not {value!r}"
        )
    return float(value)


def _wall(seconds: Optional[float]) -> Optional[_dt.datetime]:
    if seconds is None:
        return None
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)


class Client:
    """A handle on one lock store; share it between threads.

    ``url``:

    - ``None``: the store the ``locksmith`` command would use here:
      ``$LOCKSMITH_SERVER``, else ``$LOCKSMITH_STORE``, else the embedded file
      ``$LOCKSMITH_HOME/locksmith.db`` (with the settings of
      ``$LOCKSMITH_HOME/locksmith.toml``);
    - ``"sqlite:"`` (that default file) or ``"sqlite:///path/to/locksmith.db"``;
    - ``"postgres://USER:PASSWORD@HOST/DATABASE"`` (``?schema=``, ``?listen=off``);
    - ``"http://HOST:PORT"``: a ``locksmith serve``; the token is ``token``,
      else ``$LOCKSMITH_TOKEN``.

    On the embedded store and PostgreSQL, a lock is bound to this process by
    default: the moment the process dies (even by SIGKILL) the next waiter
    gets it, whatever its lease had left. Through a server only the lease
    ends the lock of a dead process.

    ``release_on_sigterm`` (default ``True``): when the program has not set
    a SIGTERM handler of its own, SIGTERM while this process holds locks
    unwinds the main thread like an exception (``SystemExit(143)``), so
    ``with`` blocks release their locks (reason ``failed``) before the
    process exits; without held locks SIGTERM acts as it always does.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        release_on_sigterm: bool = True,
    ) -> None:
        self._native = _native.Client(url, token)
        self.url = url
        if release_on_sigterm:
            _install_sigterm()

    def __repr__(self) -> str:
        return f"locksmith.Client({self.url!r})"

    def lock(
        self,
        keys: Union[str, Sequence[str]],
        *,
        ttl: Optional[Duration] = 30,
        wait: Optional[Duration] = None,
        shared: bool = False,
        limit: Optional[int] = None,
        tree: bool = False,
        priority: int = 0,
        task: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        steal_stale: bool = False,
        owner: Optional[str] = None,
        request_id: Optional[str] = None,
        bind: bool = True,
    ) -> "Lock":
        """A lock request, taken by ``with``, ``async with`` or :meth:`Lock.acquire`.

        ``keys``: one key or several (granted all together or not at all).
        ``ttl``: the lease, renewed in the background at a third of it
        (``None``: no lease; the lock lasts until released or, when bound,
        until this process dies). ``wait``: how long to wait for a busy lock
        (``None``: until granted; ``0``: raise :class:`LockBusy` at once).
        ``shared``: a reader lock; ``limit=N``: a semaphore of N holders;
        ``tree``: also covers every key below. ``priority``: higher waits
        ahead. ``task`` and ``metadata`` are shown with the lock.
        ``steal_stale``: take over a lock whose holders are all stale,
        expired or dead. ``owner``: the owner name (default
        ``$LOCKSMITH_OWNER``, else user@host). ``request_id``: an
        idempotency id, so a retried request gets the same grant.
        ``bind=False``: do not free the lock when this process dies.
        """
        if isinstance(keys, str):
            keys = [keys]
        return Lock(
            self,
            list(keys),
            dict(
                ttl=_span(ttl),
                wait=_span(wait),
                shared=bool(shared),
                limit=limit,
                tree=bool(tree),
                priority=int(priority),
                task=task,
                metadata=None if metadata is None else json.dumps(dict(metadata)),
                owner=owner,
                steal_stale=bool(steal_stale),
                request_id=request_id,
                bind=bool(bind),
            ),
        )

    def acquire(self, keys: Union[str, Sequence[str]], **options: Any) -> "Lock":
        """Acquires now (options as :meth:`lock`) and returns the held lock;
        release it with :meth:`Lock.release`."""
        return self.lock(keys, **options).acquire()

    def status(self, key: str) -> Dict[str, Any]:
        """Holders and queue of one key: ``{"key", "holders": [...], "waiters": [...]}``."""
        return json.loads(self._native.status(key))

    def list(
        self,
        prefix: Optional[str] = None,
        *,
        owner: Optional[str] = None,
        stale: bool = False,
        limit: int = 0,
    ) -> List[Dict[str, Any]]:
        """Held locks in key order; ``stale=True``: only those that are not
        healthy (stale, expired, dead holder). Each is a dict with key,
        mode, owner, task, host, pid, fence, acquired_at, expires_at,
        health, ..."""
        return json.loads(self._native.list(prefix, owner, bool(stale), int(limit)))

    def waiters(
        self, prefix: Optional[str] = None, *, owner: Optional[str] = None, limit: int = 0
    ) -> List[Dict[str, Any]]:
        """Queued requests, key then queue order."""
        return json.loads(self._native.waiters(prefix, owner, int(limit)))

    def history(
        self,
        key: Optional[str] = None,
        *,
        prefix: Optional[str] = None,
        owner: Optional[str] = None,
        event: Optional[str] = None,
        after: Optional[int] = None,
        limit: int = 100,
    ) -> List[Dict[str, Any]]:
        """Events, newest first: of ``key``, or of every key under ``prefix``;
        ``event`` is one kind (acquired, released, expired, reaped, forced,
        stolen, waiting, ...); ``after`` an event id; ``limit=0`` for all."""
        if key is not None and prefix is not None:
            raise ValueError("give key or prefix, not both")
        return json.loads(
            self._native.history(
                prefix if prefix is not None else key,
                prefix is not None,
                owner,
                event,
                after,
                int(limit),
            )
        )

    def stats(self) -> Dict[str, Any]:
        """Counters: held, waiting, unhealthy, events by kind, releases by
        reason, ``waits`` (count, avg_ms, p99_ms, max_ms), ``success_rate``."""
        return json.loads(self._native.stats())

    def force_release(
        self, key: str, *, reason: str, fence: Optional[int] = None, by: Optional[str] = None
    ) -> List[Dict[str, Any]]:
        """Ends every tenure on ``key`` (admin), recording ``reason``; with
        ``fence`` (the newest fence you saw), only while no newer tenure holds
        the key (else :class:`LockBusy`, nothing ended). Returns what ended."""
        return json.loads(self._native.force_release(key, reason, fence, by))


class Lock:
    """A lock request and, once acquired, the held lock.

    Leaving a ``with`` block releases it with reason ``completed``, or
    ``failed`` when the block raised. When the lock was lost inside a block
    that ended normally, leaving it raises :class:`LockLost`: work done
    without the lock is never silent.
    """

    def __init__(self, client: Client, keys: List[str], options: Dict[str, Any]) -> None:
        self._client = client
        self._keys = keys
        self._options = options
        self._native: Optional[Any] = None
        self._callbacks: List[Callable[["Lock"], Any]] = []
        self._state = threading.Lock()
        self._finished = False
        self.lost = threading.Event()
        """Set when the lock is lost (see :attr:`lost_reason`); never while held."""
        self.lost_reason: Optional[str] = None
        """Why it was lost: ``lease_expired``, ``forced``, ``stolen``, ..."""

    # -- taking it ---------------------------------------------------------

    def _take(self, cancel: Optional[Any] = None) -> Any:
        if self._native is not None:
            raise RuntimeError("this lock is already acquired; make a new one with client.lock(...)")
        o = self._options
        return self._client._native.acquire(
            self._keys,
            o["ttl"],
            o["wait"],
            o["shared"],
            o["limit"],
            o["tree"],
            o["priority"],
            o["task"],
            o["metadata"],
            o["owner"],
            o["steal_stale"],
            o["request_id"],
            o["bind"],
            cancel,
            threading.current_thread() is _MAIN,
        )

    def _adopt(self, native: Any) -> "Lock":
        self._native = native
        _watch(self)
        return self

    def acquire(self) -> "Lock":
        """Acquires (waiting as asked); returns ``self``. Raises
        :class:`LockBusy`, :class:`WaitTimedOut`, :class:`DeadlockRefused`,
        :class:`InvalidRequest` (a ``ValueError``), ... Ctrl-C stops a wait."""
        return self._adopt(self._take())

    async def acquire_async(self) -> "Lock":
        """As :meth:`acquire`, without blocking the event loop. Cancelling
        the task stops the wait and leaves the queue; a grant that raced the
        cancellation is released."""
        loop = asyncio.get_running_loop()
        done: "asyncio.Future[Any]" = loop.create_future()
        token = _native.CancelToken()

        def settle(result: Any, error: Optional[BaseException]) -> None:
            if done.cancelled():
                if result is not None:
                    result.release("completed")
            elif error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def run() -> None:
            try:
                result, error = self._take(token), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                result, error = None, e
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:
                # The loop is closed: nobody will use the grant.
                if result is not None:
                    result.release("completed")

        threading.Thread(target=run, name="locksmith-acquire", daemon=True).start()
        try:
            native = await asyncio.shield(done)
        except asyncio.CancelledError:
            token.cancel()
            done.add_done_callback(_release_orphan)
            raise
        return self._adopt(native)

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._exit(exc_type)

    async def __aenter__(self) -> "Lock":
        return await self.acquire_async()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._exit, exc_type)

    def _exit(self, exc_type: Any) -> None:
        if exc_type is None:
            self.release("completed")
            return
        try:
            self.release("failed")
        except LockLost:
            pass  # the block's own exception goes on; `lost` tells the rest

    # -- holding it ----------------------------------------------------------

    def _held(self) -> Any:
        if self._native is None:
            raise RuntimeError("this lock is not acquired yet: use `with`, `async with` or acquire()")
        return self._native

    @property
    def key(self) -> str:
        """The (first) key."""
        return self._keys[0]

    @property
    def keys(self) -> List[str]:
        """Every key, in request order."""
        return list(self._keys)

    @property
    def fence(self) -> int:
        """The fencing token of the first key: pass it to the resource so it
        can refuse a writer whose fence is older than the newest it saw."""
        return self._held().fences[0]

    @property
    def fences(self) -> Dict[str, int]:
        """Every key with its fencing token."""
        return dict(zip(self._held().keys, self._held().fences))

    @property
    def expires_at(self) -> Optional[_dt.datetime]:
        """When the lease of the first key runs out (UTC, store time), as of
        the last renewal seen by :meth:`renew`; ``None`` without a lease."""
        return _wall(self._held().expires[0])

    @property
    def ttl(self) -> Optional[float]:
        """The lease length in seconds, ``None`` without a lease."""
        return self._held().ttl

    @property
    def owner(self) -> str:
        """The owner name recorded with the lock."""
        return self._held().owner

    @property
    def held(self) -> bool:
        """True while acquired, not released and not lost."""
        return self._native is not None and not self._finished and not self.lost.is_set()

    @property
    def renew_error(self) -> Optional[str]:
        """Why background renewals fail, while they do (the store unreachable):
        the lock is held until its lease runs out, and :attr:`lost` is set then."""
        return self._held().renew_error()

    def renew(self) -> None:
        """Renews the lease now (the background renewal goes on anyway).
        Raises :class:`LockLost` when the lock is gone."""
        try:
            self._held().renew()
        except LockLost as e:
            self._mark_lost(e.reason)
            raise

    def release(self, reason: str = "completed") -> None:
        """Releases with ``reason`` (``completed``, ``failed`` or ``exited``).
        Releasing twice does nothing. Raises :class:`LockLost` when the lock
        had been lost before this release."""
        native = self._held()
        with self._state:
            if self._finished:
                return
            self._finished = True
        lost = native.release(reason)
        with _watch_state:
            _live.pop(native.id, None)
        if lost is not None and self.lost_reason is None:
            self._mark_lost(lost[1])
        if lost is not None or self.lost.is_set():
            error = LockLost(
                f"lost {lost[0] if lost else self.key} before it was released ({self.lost_reason or 'unknown'})"
            )
            error.key, error.reason = (lost[0] if lost else self.key), self.lost_reason
            raise error

    def on_lost(self, callback: Callable[["Lock"], Any]) -> None:
        """Calls ``callback(lock)`` when the lock is lost (at once if it was),
        on locksmith's watcher thread: keep it short (set a flag, signal a
        worker)."""
        with self._state:
            if not self.lost.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def _mark_lost(self, reason: Optional[str]) -> None:
        with self._state:
            if self.lost.is_set():
                return
            self.lost_reason = reason
            self.lost.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb(self)
            except Exception:  # noqa: BLE001 - a callback's error must not stop the watcher
                import traceback

                traceback.print_exc()

    def __repr__(self) -> str:
        if self._native is None:
            return f"<locksmith.Lock {self._keys!r} not acquired>"
        state = "lost" if self.lost.is_set() else ("released" if self._finished else "held")
        return f"<locksmith.Lock {self._keys!r} fence={self.fence} {state}>"


def _release_orphan(done: "asyncio.Future[Any]") -> None:
    if done.cancelled() or done.exception() is not None:
        return
    done.result().release("completed")


# -- the loss watcher: one daemon thread per process -----------------------

_live: Dict[int, "weakref.ReferenceType[Lock]"] = {}
_watch_state = threading.Lock()
_watch_pid: Optional[int] = None


def _watch(lock: Lock) -> None:
    global _watch_pid
    with _watch_state:
        _live[lock._held().id] = weakref.ref(lock)
        if _watch_pid != os.getpid():
            _watch_pid = os.getpid()
            threading.Thread(target=_watch_loop, name="locksmith-lost", daemon=True).start()


def _watch_loop() -> None:
    while True:
        got = _native.next_lost(3600.0)
        if got is None:
            continue
        lock_id, reason = got
        with _watch_state:
            ref = _live.pop(lock_id, None)
        lock = ref() if ref is not None else None
        if lock is not None and not lock._finished:
            lock._mark_lost(reason)


def _after_fork() -> None:
    global _watch_pid
    _live.clear()
    _watch_pid = None


os.register_at_fork(after_in_child=_after_fork)


@atexit.register
def _release_at_exit() -> None:
    with _watch_state:
        refs = list(_live.values())
    for ref in refs:
        lock = ref()
        if lock is not None and lock.held:
            try:
                lock.release("exited")
            except Exception:  # noqa: BLE001 - the process is ending anyway
                pass


# -- SIGTERM -------------------------------------------------------------

_sigterm_installed = False


def _holding() -> bool:
    with _watch_state:
        refs = list(_live.values())
    return any((lk := ref()) is not None and lk.held for ref in refs)


def _on_sigterm(signum: int, frame: Any) -> None:
    if _holding():
        raise SystemExit(128 + signum)
    # Nothing to release: die of the signal as without locksmith.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_sigterm() -> None:
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        _sigterm_installed = True
    except ValueError:
        pass

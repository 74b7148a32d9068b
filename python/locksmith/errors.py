"""Exceptions of locksmith, one per outcome of the outcome table.

Every exception has ``code``: the stable name of the outcome (``busy``,
``wait_timed_out``, ``deadlock``, ...), the same as the command line's
``--json`` and the server's ``problem+json`` bodies.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

__all__ = [
    "LocksmithError",
    "LockBusy",
    "WaitTimedOut",
    "WaitCancelled",
    "DeadlockRefused",
    "NotHolder",
    "LockLost",
    "InvalidRequest",
    "Forbidden",
    "Unauthorized",
    "StoreError",
]


class LocksmithError(Exception):
    """Base of every locksmith exception."""

    code: str = "store_error"

    def _details(self, details: Dict[str, Any]) -> None:
        for name, value in details.items():
            setattr(self, name, value)


# The details below are class-level defaults; `_details` sets the values
# of each raised exception on the instance.


class _Blocked(LocksmithError):
    holders: Sequence[Dict[str, Any]] = ()
    """The locks in the way, each with owner, task, host, pid, fence, expires_at."""
    waiters_ahead: int = 0
    """Earlier waiters in the way."""
    position: Optional[int] = None
    """1-based place in the queue, when the request had queued."""

    @property
    def holder(self) -> Optional[Dict[str, Any]]:
        """The first lock in the way, if a holder (not only earlier waiters) blocks."""
        return self.holders[0] if self.holders else None


class LockBusy(_Blocked):
    """The lock is held and the request did not wait (``wait=0``).

    Also raised by ``force_release(..., fence=F)`` when a newer tenure than
    fence ``F`` holds the key: nothing was ended, ``fence`` is the newest.
    """

    code = "busy"


class WaitTimedOut(_Blocked, TimeoutError):
    """The wait ran out before the lock was granted; the request left the queue."""

    code = "wait_timed_out"


class WaitCancelled(LocksmithError):
    """The wait was cancelled; the request left the queue."""

    code = "cancelled"


class DeadlockRefused(LocksmithError):
    """Waiting would close a cycle of waiters; nothing was queued."""

    code = "deadlock"
    key: str = ""
    cycle: Sequence[str] = ()
    """The owners in the cycle, first and last the requester."""


class NotHolder(LocksmithError):
    """The caller does not hold the lock it names."""

    code = "not_holder"


class LockLost(LocksmithError):
    """The lock is no longer held: its lease ran out, it was forced, stolen, ..."""

    code = "lost"
    key: str = ""
    reason: Optional[str] = None
    """Why the tenure ended (``lease_expired``, ``forced``, ``stolen``, ...), when known."""


class InvalidRequest(LocksmithError, ValueError):
    """The request is malformed (key, duration, limit, owner, metadata); nothing changed."""

    code = "invalid"


class Forbidden(LocksmithError):
    """The token's role does not permit the request."""

    code = "forbidden"


class Unauthorized(Forbidden):
    """The server needs a token and none (or an unknown one) was sent."""

    code = "unauthorized"


class StoreError(LocksmithError):
    """The store failed or cannot be used; ``code`` says how.

    ``unavailable`` (cannot be reached or stayed busy: try again),
    ``corrupt``, ``unusable`` (foreign, newer, on a network filesystem),
    ``store_error`` (I/O, a full disk, permissions), ``too_large``,
    and ``too_many``.
    """

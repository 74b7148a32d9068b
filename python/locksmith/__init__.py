"""locksmith: locks and leases for processes, agents and machines.

>>> import locksmith
>>> client = locksmith.Client()            # the embedded store, as the CLI finds it
>>> with client.lock("repo/acme", ttl=30, wait=5) as lock:
...     print("holding with fence", lock.fence)

The same code runs over PostgreSQL (``Client("postgres://...")``) or a
``locksmith serve`` (``Client("http://HOST:PORT")``).
"""

from ._native import __version__
from .client import Client, Duration, Lock
from .errors import (
    DeadlockRefused,
    Forbidden,
    InvalidRequest,
    LockBusy,
    LocksmithError,
    LockLost,
    NotHolder,
    StoreError,
    Unauthorized,
    WaitCancelled,
    WaitTimedOut,
)

__all__ = [
    "__version__",
    "Client",
    "Lock",
    "Duration",
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

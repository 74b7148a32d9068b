"""locksmith: locks and leases for processes, agents and machines.

>>> import locksmith
>>> client = locksmith.Client()            # the embedded store, as the CLI finds it
>>> with client.lock("repo/acme", ttl=30, wait=5) as lock:
...     print("holding with fence", lock.fence)

The same code runs over PostgreSQL (``Client("postgres://...")``) or a
``locksmith serve`` (``Client("http://HOST:PORT")``).
"""

from . import errors
from ._native import __version__
from .client import Client, Duration, Lock
from .errors import *  # noqa: F403 - every exception, as listed in errors.__all__

__all__ = ["__version__", "Client", "Lock", "Duration", *errors.__all__]

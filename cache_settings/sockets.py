"""Bounded pymemcache reads and writes at no cost per operation: the kernel keeps the time.

pymemcache bounds a read or write with ``socket.settimeout(timeout)``. CPython then keeps
the socket non-blocking and waits in ``poll()`` before every ``recv()`` and ``send()``: one
more system call per step, 1.02-1.05x stock Django's ``PyMemcacheCache`` per set+get on
loopback (which sets no timeout, and so may block for good on a node that stops answering;
bench/bench_backends.py). Linux bounds a blocking socket's ``recv()``/``send()`` itself with
``SO_RCVTIMEO``/``SO_SNDTIMEO`` (socket(7)): a read past the bound fails with ``EAGAIN``, an
``OSError``, which pymemcache's ``HashClient`` treats as it treats ``socket.timeout`` (it
marks the node failed and, with ``retry_attempts=0``, leaves it out for ``dead_timeout``).

:data:`KERNEL_TIMEOUTS` goes into pymemcache's own ``socket_module`` option. pymemcache
creates each connection with its ``socket()``, wraps it for TLS if asked, calls
``settimeout(connect_timeout)``, connects, then calls ``settimeout(timeout)``
(``pymemcache/client/base.py``, ``Client._connect``). The connect keeps CPython's timeout;
the ``timeout`` given once connected becomes the kernel's, on a blocking socket. A TLS
connection is a new ``ssl.SSLSocket`` made before any of that, so it keeps CPython's
timeouts throughout: that matters, because CPython's ``ssl`` module retries a read that
failed with ``EAGAIN`` on a blocking socket, and a stopped TLS node would hold it for good.
Linux only (``struct timeval`` differs elsewhere); other systems keep ``settimeout``.
"""

from __future__ import annotations

import socket as _socket
import struct
import sys
from typing import Any

__all__ = ["KERNEL_TIMEOUTS", "KernelTimeouts", "kernel_timeouts_available"]

_LONGEST = 365 * 86400.0  # seconds; a longer timeout stays CPython's own


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    # struct timeval {time_t tv_sec; suseconds_t tv_usec;}: two C longs on Linux.
    return struct.pack("ll", whole, round((seconds - whole) * 1_000_000))


class _Socket(_socket.socket):
    """A TCP socket whose I/O timeout, once it is connected, is kept by the kernel."""

    __slots__ = ("_connected",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connected = False

    def connect(self, address: Any) -> None:
        super().connect(address)  # under CPython's timeout (pymemcache's connect_timeout)
        self._connected = True

    def settimeout(self, value: float | None) -> None:
        if not self._connected or value is None or not 0 < value <= _LONGEST:
            super().settimeout(value)
            return
        bound = _timeval(value)
        self.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, bound)
        self.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, bound)
        super().settimeout(None)  # blocking: no poll() before each recv() and send()


class KernelTimeouts:
    """The ``socket`` module, except that :meth:`socket` makes kernel-timed sockets.

    For pymemcache's ``socket_module`` option; see the module's docstring. It holds no
    state: one object serves every client.
    """

    __slots__ = ()

    def socket(self, *args: Any, **kwargs: Any) -> _socket.socket:
        """Return ``socket.socket(*args, **kwargs)``, its I/O timeout kept by the kernel."""
        return _Socket(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(_socket, name)

    def __deepcopy__(self, memo: dict[int, Any]) -> KernelTimeouts:
        return self

    def __reduce__(self) -> str:
        return "KERNEL_TIMEOUTS"  # pickles as a reference to this module's object

    def __repr__(self) -> str:
        return "cache_settings.sockets.KERNEL_TIMEOUTS"


KERNEL_TIMEOUTS = KernelTimeouts()


def kernel_timeouts_available() -> bool:
    """Return whether :data:`KERNEL_TIMEOUTS` may be used here (Linux)."""
    return sys.platform == "linux"

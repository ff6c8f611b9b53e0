"""Network I/O that ends with its attempt: tracked connections, and what their failures mean.

Every socket a source opens is registered with the current :class:`~cache_settings.attempt.Attempt`
(:meth:`~cache_settings.attempt.Attempt.track`), so that cancelling the attempt at its deadline
shuts it down and wakes whatever read is blocked on it; each read's timeout is the time the
attempt has left, and what is read counts against its ``max_reply_size``. A source called
directly, outside :func:`cache_settings.attempt.run`, gets an attempt of its own (:func:`within`).
HTTP over these connections is :mod:`cache_settings.sources._http`, imported only by the
sources that speak it (a configuration endpoint needs neither http.client nor urllib).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import TypeVar

from .. import attempt as _attempt
from ..attempt import Attempt
from ..exceptions import SourceError

__all__ = ["close", "connect", "failure", "start_tls", "within"]

T = TypeVar("T")

# getaddrinfo errors that say the name does not exist (NXDOMAIN, no address): no retry helps.
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def within(source: str, timeout: float, call: Callable[[Attempt], T]) -> T:
    """Return ``call(attempt)`` under the current attempt, else under a new one of *timeout* s.

    A direct call (no current attempt) is run by :func:`cache_settings.attempt.run`, so
    that it, too, is cancelled at its deadline. Raise SourceError when *timeout* is not
    positive.
    """
    current = _attempt.current()
    if current is not None:
        return call(current)
    if not timeout > 0:
        raise SourceError(source, "no time left for an attempt")
    own = Attempt(source, timeout)
    return _attempt.run(own, lambda: call(own))


def connect(attempt: Attempt, host: str, port: int) -> socket.socket:
    """Return a TCP connection to *host*:*port*, tracked by *attempt*; OSError if none.

    The connect waits at most the time left; so does each later read (the caller sets
    ``settimeout(attempt.check())`` before it).
    """
    sock = socket.create_connection((host, port), timeout=attempt.check())
    attempt.track(sock)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def start_tls(
    attempt: Attempt, sock: socket.socket, context: ssl.SSLContext, hostname: str
) -> ssl.SSLSocket:
    """Return *sock* wrapped in TLS (SNI and verification against *hostname*), still tracked."""
    # The handshake is done after tracking: wrap_socket takes the descriptor over from *sock*.
    tls = context.wrap_socket(sock, server_hostname=hostname, do_handshake_on_connect=False)
    attempt.untrack(sock)
    attempt.track(tls)
    try:
        tls.settimeout(attempt.check())
        tls.do_handshake()
    except BaseException:
        close(attempt, tls)
        raise
    return tls


def close(attempt: Attempt, sock: socket.socket | None) -> None:
    """Close *sock* (if any) and stop tracking it."""
    if sock is not None:
        attempt.untrack(sock)
        sock.close()


def failure(
    exc: BaseException,
    attempt: Attempt,
    peer: str,
    *,
    hint: str = "",
    malformed: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> SourceError:
    """Return the SourceError that says what *exc*, raised talking to *peer*, means.

    A name that does not exist is ``permanent``; *hint* (what to check) follows every
    failure to reach *peer*; *malformed* are the protocol's exceptions for a reply it
    could not parse (``http.client.HTTPException`` for HTTP).
    """
    suffix = f" ({hint})" if hint else ""
    # Every timeout is the time the attempt had left, so a timeout is its deadline.
    if attempt.cancelled or isinstance(exc, TimeoutError):
        return SourceError(
            attempt.source, f"no complete answer within {attempt.timeout:.2f} s from {peer}"
        )
    if isinstance(exc, socket.gaierror):
        return SourceError(
            attempt.source,
            f"cannot reach {peer}: unknown host name ({exc.strerror or exc}){suffix}",
            permanent=exc.errno in _NO_SUCH_NAME,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SourceError(
            attempt.source,
            f"TLS with {peer} failed: certificate verify failed: {exc.verify_message}",
        )
    if isinstance(exc, ssl.SSLError):
        return SourceError(attempt.source, f"TLS with {peer} failed: {exc.reason or exc}")
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return SourceError(attempt.source, f"the connection to {peer} was reset")
    if isinstance(exc, malformed):
        return SourceError(attempt.source, f"malformed reply from {peer} ({exc!r:.120})")
    if isinstance(exc, OSError):
        return SourceError(attempt.source, f"cannot reach {peer}: {exc.strerror or exc}{suffix}")
    return SourceError(attempt.source, f"{type(exc).__name__} talking to {peer}")

"""One bounded HTTP/1.1 request over a connection of :mod:`cache_settings.sources._transport`.

HTTP goes through :mod:`http.client` rather than a client library's transport: it lets us own
the socket from its creation (the libraries' urllib3 pools do not) and read the body in pieces.
Only the sources that speak HTTP (Consul, the ElastiCache API) import this module, and with it
http.client and urllib.request.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from ipaddress import ip_address
from urllib.parse import urlsplit

from ..attempt import Attempt
from ..exceptions import ConfigurationError, SourceError, brief, excerpt
from ..nodes import is_host
from ..redact import basic_credentials, proxy_url, redact_address
from ._transport import close, connect, failure, start_tls

__all__ = ["Reply", "check_status", "request"]

_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP reply: status, headers (case-insensitive) and the whole body."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(
    attempt: Attempt,
    method: str,
    url: str,
    *,
    peer: str,
    headers: Mapping[str, str | bytes] | None = None,
    body: bytes | str | None = None,
    context: ssl.SSLContext | None = None,
    hint: str = "",
) -> Reply:
    """Send one HTTP/1.1 request and return the whole reply, within *attempt*.

    *url* must carry no user info. *context* verifies an ``https`` peer. Proxies come
    from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), as with
    requests and botocore; loopback addresses never use one, as with the consul CLI.
    Raise SourceError naming *peer* for every failure; a reply over the attempt's
    ``max_reply_size`` is one.
    """
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = _proxy_for(parts.scheme, host)
    if proxy is not None and not https:
        target = url  # an http proxy takes the absolute URL
    conn = _Connection(attempt, host, port, proxy, context if https else None)
    response: http.client.HTTPResponse | None = None
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", parts.netloc.rpartition("@")[2])
        conn.putheader("Accept-Encoding", "identity")  # no decompression bomb
        if proxy is not None and not https and proxy.auth:
            conn.putheader("Proxy-Authorization", proxy.auth)
        for name, value in (headers or {}).items():
            if name.lower() not in ("host", "accept-encoding"):
                conn.putheader(name, value)
        data = body.encode("utf-8") if isinstance(body, str) else body
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        assert conn.sock is not None
        sock = conn.sock
        sock.settimeout(attempt.check())
        response = conn.getresponse()
        if response.length is not None:
            attempt.check_size(response.length)
        # The pieces are joined once at the end: one copy of the body, not two (growing a
        # bytearray, then bytes() of it), which a large Consul answer feels.
        received: list[bytes] = []
        size = 0
        while chunk := response.read1(_CHUNK):
            received.append(chunk)
            size += len(chunk)
            attempt.check_size(size)
            if response.isclosed():  # Python 3.13 closes the socket with the body's last byte
                break
            sock.settimeout(attempt.check())
        attempt.check()  # a cancelled read looks like the end of the body
        if response.length:  # http.client returns b"" when a reply stops short
            raise http.client.IncompleteRead(b"".join(received), response.length)
        return Reply(response.status, response.msg, b"".join(received))
    except SourceError:
        raise
    except http.client.BadStatusLine as exc:
        raise _not_http(exc, attempt, peer) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: bad headers
        raise failure(exc, attempt, peer, hint=hint, malformed=http.client.HTTPException) from None
    finally:
        if response is not None:
            response.close()
        close(attempt, conn.sock)
        conn.sock = None


def check_status(reply: Reply, source: str, peer: str, where: str) -> None:
    """Raise SourceError for a status other than 200 that is not a 4xx or 5xx error.

    For a client that raises for errors only and decodes any other body as the answer (both
    consul clients): a redirect's JSON body was taken as the instances, a 204 or 304 failed
    as "JSONDecodeError". A redirect is not followed; the error names where it points by
    scheme and host only (a path or query may hold a token), and *where* the address goes.
    """
    if reply.status == 200 or 400 <= reply.status < 600:
        return
    try:
        said = f"{reply.status} {HTTPStatus(reply.status).phrase}"
    except ValueError:  # a status no RFC defines: the number alone, never the peer's words
        said = str(reply.status)
    if not 300 <= reply.status < 400:
        raise SourceError(source, f"{peer} answered HTTP {said}, not 200 OK with the answer")
    shown = ""
    try:
        to = urlsplit(reply.headers.get("Location") or "")
        host = to.hostname or ""
        if to.scheme in ("http", "https") and is_host(host):
            host = f"[{host}]" if ":" in host else host
            shown = f" to {to.scheme}://{host}" + (f":{to.port}" if to.port else "")
    except ValueError:  # an unclosed '[' or a port that is not one: not said
        pass
    raise SourceError(
        source,
        f"{peer} answered HTTP {said}, a redirect{shown}, which is not followed; put the "
        f"address it points to {where}",
    )


@dataclass(frozen=True, slots=True)
class _Proxy:
    host: str
    port: int
    auth: str | None  # a Proxy-Authorization value


class _Connection(http.client.HTTPConnection):
    """An HTTP connection whose socket the attempt tracks from the start; TLS and tunnels too."""

    def __init__(
        self,
        attempt: Attempt,
        host: str,
        port: int,
        proxy: _Proxy | None,
        context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port)
        self._attempt, self._proxy, self._context = attempt, proxy, context
        self._target = (host, port)

    def connect(self) -> None:
        host, port = self._target
        if self._proxy is None:
            self.sock = connect(self._attempt, host, port)
        else:
            self.sock = connect(self._attempt, self._proxy.host, self._proxy.port)
            if self._context is not None:
                _tunnel(self._attempt, self.sock, host, port, self._proxy.auth)
        if self._context is not None:
            self.sock = start_tls(self._attempt, self.sock, self._context, host)


def _tunnel(attempt: Attempt, sock: socket.socket, host: str, port: int, auth: str | None) -> None:
    """Ask an http proxy for a tunnel to *host*:*port* (RFC 9110, 9.3.6 CONNECT)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {where} HTTP/1.1", f"Host: {where}"]
    lines += [f"Proxy-Authorization: {auth}"] if auth else []
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:
        sock.settimeout(attempt.check())
        chunk = sock.recv(4096)
        if not chunk or len(head) > _CHUNK:
            raise http.client.HTTPException("the proxy ended the CONNECT reply early")
        head += chunk
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or status[1] != b"200":
        said = excerpt(b" ".join(status[1:]).decode("latin-1"), 120)  # the proxy's words
        raise OSError(f"the proxy refused the tunnel ({said})")


# What a memcached server answers to an HTTP request line (protocol.txt, "Error strings").
_MEMCACHED_ERRORS = ("ERROR", "CLIENT_ERROR", "SERVER_ERROR")


def _not_http(exc: http.client.BadStatusLine, attempt: Attempt, peer: str) -> SourceError:
    """The SourceError for a reply whose first line is no HTTP status line."""
    line = str(exc.args[0]).strip() if exc.args else ""
    if attempt.cancelled or isinstance(exc, http.client.RemoteDisconnected) or line in ("", "''"):
        # A reply cut by the deadline, or none at all (the connection closed first).
        return failure(exc, attempt, peer, malformed=http.client.HTTPException)
    said = f"{peer} does not speak HTTP: its reply began {brief(excerpt(line, 60))}"
    if line.startswith(_MEMCACHED_ERRORS):
        return SourceError(attempt.source, f"{said}, as memcached answers: the address is a "
                           "memcached node's, not the HTTP API's")  # fmt: skip
    return SourceError(attempt.source, f"{said}; check the address and port")


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    try:
        if ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        if host.lower() == "localhost":
            return None
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    try:
        parts = proxy_url(proxy)
        port = parts.port  # raises ValueError for a port that is not 1..65535
    except ValueError:
        # A setting of the environment, not a fault of the peer: no retry can mend it, and
        # its password must not be quoted.
        raise ConfigurationError(
            f"{scheme.upper()}_PROXY (or {scheme}_proxy) {brief(redact_address(proxy))} is not "
            "a proxy URL; write http://host:port, with a port 1..65535"
        ) from None
    if not parts.hostname or port == 0 or parts.scheme.lower() not in ("http", "https"):
        # A socks5:// proxy would be sent HTTP, and its answer read as the peer's.
        raise ConfigurationError(
            f"{scheme.upper()}_PROXY (or {scheme}_proxy) {brief(redact_address(proxy))} is not "
            "an HTTP proxy; write http://host:port (SOCKS is not supported)"
        )
    basic = basic_credentials(parts)
    return _Proxy(parts.hostname, port or 8080, f"Basic {basic}" if basic else None)

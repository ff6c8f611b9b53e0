"""TLS to memcached nodes: the settings a verifying ``ssl.SSLContext`` is built from."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from .exceptions import ConfigurationError, brief

__all__ = ["TLSConfig"]


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How to verify a TLS peer and, optionally, which client certificate to present.

    ``ca`` is a PEM file of trusted CAs; without it the default trust store is used,
    which honours ``SSL_CERT_FILE``. Verification of the certificate and of the host
    name is always on. The paths are plain data, so they may appear in snapshots;
    the context itself lives only in the settings object.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        """Return a new client context that verifies the server and its host name."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
            if self.cert:
                context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"TLS settings {self.describe()}: {exc}") from exc
        if self.key and not self.cert:
            raise ConfigurationError("TLS settings: key= needs cert= (the client certificate)")
        return context

    def describe(self) -> str:
        """Return the settings as ``ca='…', cert='…'`` for messages (quoted briefly)."""
        parts = [
            f"{name}={brief(value)}"
            for name, value in (("ca", self.ca), ("cert", self.cert))
            if value
        ]
        return ", ".join(parts) or "default trust store"

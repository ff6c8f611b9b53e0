"""TLS to memcached nodes: the settings a verifying ``ssl.SSLContext`` is built from."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from .exceptions import ConfigurationError, brief, cut

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

    def context(self, where: str = "") -> ssl.SSLContext:
        """Return a new client context that verifies the server and its host name.

        *where* (a redacted source URL) begins the messages. Raises ConfigurationError
        naming the file that cannot be read or is not PEM, and what to give instead.
        """
        prefix = f"{cut(where, 100)}: " if where else ""  # the URL repeats the paths
        if self.key and not self.cert:
            raise ConfigurationError(
                f"{prefix}TLS settings: key= needs cert= (the client certificate)"
            )
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"{prefix}TLS settings ca={brief(self.ca)}: {_why(exc)}; give ca= (node_ca= "
                "on consul://, dns://, file://) a readable PEM file of the CA that signed the "
                "nodes' certificates"
            ) from None
        if self.cert:
            try:
                context.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"{prefix}TLS settings cert={brief(self.cert)}: {_why(exc)}; give cert= "
                    "(and key=, unless cert= holds it) readable PEM files of the client "
                    "certificate and its private key"
                ) from None
        return context

    def describe(self) -> str:
        """Return the settings as ``ca='…', cert='…'`` for messages (quoted briefly)."""
        parts = [
            f"{name}={brief(value)}"
            for name, value in (("ca", self.ca), ("cert", self.cert))
            if value
        ]
        return ", ".join(parts) or "default trust store"


def _why(exc: OSError | ssl.SSLError) -> str:
    """Say why a PEM file could not be loaded, without the C library's location."""
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM file ({exc.reason or exc})"
    return f"cannot read the file ({exc.strerror or exc})"

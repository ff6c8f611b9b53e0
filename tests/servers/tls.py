"""TLS material from a throw-away ``trustme`` CA: a CA file, a server certificate and key.

Fixtures: ``tls_ca`` (the ``trustme.CA``), ``tls_files`` (:class:`TLSFiles`, PEM paths) and
``other_ca_file`` (a CA that signed nothing here, for "unknown CA" tests).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import pytest
import trustme

__all__ = ["SERVER_NAMES", "TLSFiles", "other_ca_file", "tls_ca", "tls_files"]

# Names in the server certificate: clients check the host name, so a test may address
# a node as localhost, by IP, or by a made-up name under cache.test (RFC 6761 reserves .test).
SERVER_NAMES = ("localhost", "127.0.0.1", "*.cache.test")


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Paths of PEM files: ``ca`` (trusted root), ``cert`` (server chain) and ``key``.

    ``other_ca`` is a CA that did not sign ``cert``; a client trusting only it must fail.
    """

    ca: str
    cert: str
    key: str
    other_ca: str

    def client_context(self, *, ca: str | None = None) -> ssl.SSLContext:
        """Return a verifying client context trusting ``ca`` (default: :attr:`ca`)."""
        return ssl.create_default_context(cafile=ca or self.ca)


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The session's certificate authority."""
    return trustme.CA()


@pytest.fixture(scope="session")
def other_ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a PEM CA that signed none of the session's certificates."""
    path = tmp_path_factory.mktemp("other-ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tls_files(
    tls_ca: trustme.CA, other_ca_file: str, tmp_path_factory: pytest.TempPathFactory
) -> TLSFiles:
    """PEM files for a server named ``localhost``, ``127.0.0.1`` and ``*.cache.test``."""
    directory = tmp_path_factory.mktemp("tls")
    server = tls_ca.issue_cert(*SERVER_NAMES)
    files = TLSFiles(
        ca=str(directory / "ca.pem"),
        cert=str(directory / "server.pem"),
        key=str(directory / "server.key"),
        other_ca=other_ca_file,
    )
    tls_ca.cert_pem.write_to_path(files.ca)
    # memcached's ssl_chain_cert takes the leaf followed by any intermediates.
    for index, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(files.cert, append=index > 0)
    server.private_key_pem.write_to_path(files.key)
    return files

"""The mTLS listener's certificates, reloaded on SIGHUP without dropping a connection.

gRPC asks ``ServerCertificates.fetch`` for the certificate configuration
before each new TLS handshake (``grpc.dynamic_ssl_server_credentials``):
connections already established keep the session they negotiated, new ones
get whatever was loaded last.  ``reload()`` (SIGHUP, on the event loop)
reads the server certificate, its key and the platform CA from the same
paths again and checks them (each parses, the key belongs to the
certificate, the certificate has not expired) before offering them; files
that fail the check are logged and the certificates in use stay in use.

This is how a server certificate is rotated, and how a client certificate
is revoked: issue the new CA bundle (or a CA that no longer signs the
revoked certificate's chain) and SIGHUP; docs/operations.md has the recipes.
"""
from __future__ import annotations

import datetime
import logging
import threading

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import certs
from .certs import CertificateError

log = logging.getLogger("yidi.tls")


def check(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> str:
    """CertificateError unless the files can serve; a one-line description of the server certificate."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as err:
        raise CertificateError(f"cannot parse: {err}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, public):
        raise CertificateError("the key does not belong to the certificate")
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError(f"the certificate is not valid now ({cert.not_valid_before_utc:%Y-%m-%d} to "
                               f"{cert.not_valid_after_utc:%Y-%m-%d})")
    return (f"{cert.subject.rfc4514_string()}, serial {cert.serial_number:x}, valid to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}; {len(cas)} CA certificate(s)")


class ServerCertificates:
    """The listener's credentials, and what the next handshakes will use after a reload."""

    def __init__(self, cert_path: str, key_path: str, ca_path: str) -> None:
        self.paths = (cert_path, key_path, ca_path)
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.loaded = 0
        initial = self._configuration()
        self.credentials = grpc.dynamic_ssl_server_credentials(initial, self.fetch,
                                                               require_client_authentication=True)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key, ca = (certs.read(path) for path in self.paths)
        what = check(cert, key, ca)
        cert_path, _, ca_path = self.paths
        self.loaded += 1
        log.info("TLS certificates loaded: %s", what, extra={"fields": {"cert": cert_path, "ca": ca_path}})
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def reload(self) -> bool:
        """Read the files again (SIGHUP); the next handshakes use them if they pass ``check``."""
        try:
            configuration = self._configuration()
        except CertificateError as err:
            log.error("TLS certificates not reloaded, the ones in use stay: %s", err,
                      extra={"fields": {"cert": self.paths[0], "ca": self.paths[2]}})
            return False
        with self._lock:
            self._pending = configuration
        return True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's question before a handshake (its own thread): a new configuration once after a reload, else None."""
        with self._lock:
            configuration, self._pending = self._pending, None
        return configuration

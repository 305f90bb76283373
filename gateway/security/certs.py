"""Development certificates for mTLS (SPEC §9: a caller is identified by its TLS client certificate).

``write_dev_certs(out)`` makes, with the ``cryptography`` package:

* ``ca.pem`` / ``ca.key`` — a development platform CA;
* ``server.pem`` / ``server.key`` — the gateway, for ``localhost``, 127.0.0.1 and ::1;
* ``clients/<caller>.pem`` / ``.key`` — one client certificate per province
  (the 31 province codes of ``core.PROVINCES``) and one for ``national``;
* ``nodes/<name>.pem`` / ``.key`` — one certificate per gateway node
  (``DEV_NODES`` unless others are named), for serverAuth and clientAuth,
  with the URI SAN ``yidi://node/<name>`` and the server's names: a node
  presents it when it forwards a call to the node that owns the call's
  partition (gateway/transport/forward.py), and may serve with it;
* ``seal.key`` — a development seal key for the ledger (gateway/store/seal.py),
  made only if there is none: a ledger sealed with a key cannot be opened
  without it.

A caller's identity is one URI subject alternative name,
``yidi://province/460000`` or ``yidi://national`` (``caller_uri``): the
gateway reads it from the TLS auth context (``gateway.security.auth``), never from a
header.  A node's certificate names no caller: a call made with it is a
forwarded call, which names its original caller (``gateway.security.auth``).
A real deployment uses certificates issued by the platform's CA with the same
SANs; nothing else changes.  Keys are EC P-256 (fast to make, small,
supported by gRPC's TLS).  Development certificates are valid for
``DEV_VALID_DAYS`` days.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core import PROVINCES
from core.access import NATIONAL

from ..store import seal

URI_PREFIX = "yidi://"
PROVINCE_URI = URI_PREFIX + "province/"
NATIONAL_URI = URI_PREFIX + NATIONAL
NODE_URI = URI_PREFIX + "node/"
DEV_NODES = ("node-a", "node-b")
# A node's name: a DNS label (lower case), as it appears in yidi://node/<name> and in file names.
NODE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DEV_VALID_DAYS = 3650
DEFAULT_DIR = os.path.join("certs", "dev")
SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


def caller_uri(caller: str) -> str:
    """The URI SAN naming a caller: yidi://province/460000, or yidi://national."""
    return NATIONAL_URI if caller == NATIONAL else PROVINCE_URI + caller


def dev_callers() -> list[str]:
    """Every province (core.PROVINCES), and the national operator."""
    return [p[0] for p in PROVINCES] + [NATIONAL]


@dataclass(frozen=True)
class Paths:
    """Where ``write_dev_certs`` put (or ``paths`` expects) each file."""

    directory: str

    @property
    def ca(self) -> str:
        return os.path.join(self.directory, "ca.pem")

    @property
    def ca_key(self) -> str:
        return os.path.join(self.directory, "ca.key")

    @property
    def server_cert(self) -> str:
        return os.path.join(self.directory, "server.pem")

    @property
    def server_key(self) -> str:
        return os.path.join(self.directory, "server.key")

    @property
    def seal_key(self) -> str:
        return os.path.join(self.directory, "seal.key")

    def client_cert(self, caller: str) -> str:
        return os.path.join(self.directory, "clients", f"{caller}.pem")

    def client_key(self, caller: str) -> str:
        return os.path.join(self.directory, "clients", f"{caller}.key")

    def node_cert(self, name: str) -> str:
        return os.path.join(self.directory, "nodes", f"{name}.pem")

    def node_key(self, name: str) -> str:
        return os.path.join(self.directory, "nodes", f"{name}.key")

    def complete(self) -> bool:
        return all(os.path.exists(p) for p in (self.ca, self.server_cert, self.server_key,
                                               self.client_cert(NATIONAL)))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Yidi development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _write(path: str, data: bytes, private: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def issue(ca_cert: x509.Certificate, ca_key, common_name: str, sans: list[x509.GeneralName], *, server: bool,
          days: int = DEV_VALID_DAYS, usages: tuple[x509.ObjectIdentifier, ...] | None = None,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate signed by the CA, with the given subject alternative names.

    Its extended key usage is serverAuth for a server, clientAuth for a client, or ``usages`` if given
    (empty: no extended key usage extension; for tests of what the gateway refuses).
    """
    key = _key()
    if usages is None:
        usages = (ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH,)
    builder = (_builder(_name(common_name), ca_cert.subject, key.public_key(), days)
               .add_extension(x509.SubjectAlternativeName(sans), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_ca(common_name: str = "Yidi development CA", days: int = DEV_VALID_DAYS):
    key = _key()
    name = _name(common_name)
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def write_dev_certs(out: str, callers: list[str] | None = None, nodes: tuple[str, ...] = DEV_NODES) -> Paths:
    """A development CA, the server's certificate, one client certificate per caller and one per node, under out."""
    for name in nodes:
        if not NODE_NAME.match(name):
            raise ValueError(f"node name {name[:70]!r}: lower-case letters, digits and '-' (a DNS label)")
    paths = Paths(out)
    ca_cert, ca_key = make_ca()
    _write(paths.ca, pem(ca_cert))
    _write(paths.ca_key, pem_key(ca_key), private=True)
    sans = [x509.DNSName(n) for n in SERVER_NAMES] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    cert, key = issue(ca_cert, ca_key, "yidi-gateway", sans, server=True)
    _write(paths.server_cert, pem(cert))
    _write(paths.server_key, pem_key(key), private=True)
    for name in nodes:
        cert, key = issue(ca_cert, ca_key, f"yidi-{name}", [x509.UniformResourceIdentifier(NODE_URI + name), *sans],
                          server=True, usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
        _write(paths.node_cert(name), pem(cert))
        _write(paths.node_key(name), pem_key(key), private=True)
    for caller in callers or dev_callers():
        cert, key = issue(ca_cert, ca_key, f"yidi-{caller}",
                          [x509.UniformResourceIdentifier(caller_uri(caller))], server=False)
        _write(paths.client_cert(caller), pem(cert))
        _write(paths.client_key(caller), pem_key(key), private=True)
    if not os.path.exists(paths.seal_key):
        seal.write_key(paths.seal_key)
    return paths


class CertificateError(Exception):
    """Certificate files that cannot serve: named, with the reason."""


def read(path: str) -> bytes:
    """A certificate or key file's bytes; CertificateError, one clear line, if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise CertificateError(f"cannot read {path}: {err.strerror}. Create development certificates with "
                               f"`yidi certs --out {DEFAULT_DIR}` or give --cert/--key/--ca") from None

"""Who is calling, resolved in one place (what each caller may do is ``core.access``).

SPEC §9: a caller is identified by its TLS client certificate.  The server
requires one signed by the platform CA (``require_client_auth``), and the
caller is the certificate's one Yidi URI subject alternative name, read from
the call's TLS auth context: ``yidi://province/460000`` is the province
``"460000"``, ``yidi://national`` the national operator (``NATIONAL``).  No
header names a caller, except on a call from a gateway node (below).  A
certificate without exactly one such name, or one not issued for client
authentication (its extended key usage must name clientAuth), is
``UNAUTHENTICATED``.  The TLS handshake already refuses a
certificate whose extended key usage names other purposes only; one without
that extension passes it (RFC 5280 reads "none" as "any purpose"), so the
gateway asks for clientAuth by name.  Every Yidi RPC on the plaintext
loopback listener (``--insecure``), which has no certificate to read, is
``UNAUTHENTICATED`` too (health and reflection still answer there), unless the
server names its one caller for benchmarks (``--insecure-caller``), and then
only for a peer on a loopback address.  A call is over TLS when gRPC reports
the transport security type ``ssl``: a plaintext connection reports
``insecure`` (grpcio 1.85), so the type's presence says nothing.

A gateway node's certificate (``yidi://node/<name>``) names no caller: a call
made with it is a call another node forwarded to this one, the owner of the
call's partition (gateway/transport/forward.py), and its caller is the one
the forwarding node resolved from its client's certificate, carried in the
``yidi-forwarded-for`` metadata entry (``460000`` or ``national``).  That
entry is trusted only from a peer with a node certificate (which only the
platform CA issues); from any other peer it is refused
(``FORWARDING_REFUSED``), so a province cannot act as another by sending it,
and so is a node's call without it.

``resolve_caller`` is called first thing in every Yidi RPC's handler
(gateway/transport/services/base.py), followed by admission control
(``gateway.security.admission``), so an unidentified call changes nothing and an
overloaded gateway answers ``OVERLOADED`` with retry advice before any work.
"""
from __future__ import annotations

import contextvars
import ipaddress
import re
import urllib.parse

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from core.access import NATIONAL
from core.errors import YidiError

from .certs import NATIONAL_URI, NODE_NAME, NODE_URI, PROVINCE_URI, URI_PREFIX

_PROVINCE = re.compile(r"^[1-9][0-9]0000$")
# The auth context properties gRPC fills with the peer certificate's URI SANs and the certificate itself.
PEER_URI = "peer_uri"
PEER_CERT = "x509_pem_cert"
# The transport security type gRPC reports for a TLS connection (a plaintext one reports b"insecure").
SECURITY_TYPE = "transport_security_type"
TLS = b"ssl"
# Whether each client certificate seen names clientAuth, by its PEM: parsing one measured ~10 µs, the
# look-up of a call's (fresh) PEM bytes ~0.2 µs, against ~230 µs of server CPU for an empty TLS call.
# Only certificates of the platform CA get here (the TLS handshake checks the chain), so the set is
# small; the bound only stops a CA that issues without end from growing it.
CLIENT_AUTH_CACHE_CERTS = 4096
_CLIENT_AUTH: dict[bytes, bool] = {}

# The metadata entry naming a forwarded call's original caller (trusted from a node's certificate only).
FORWARDED_FOR = "yidi-forwarded-for"

_caller: contextvars.ContextVar[str] = contextvars.ContextVar("yidi_caller")

# For benchmarks only (`yidi serve --insecure --insecure-caller 460000`): the one caller every call on the
# plaintext loopback listener is taken to be, so that a client that cannot present a certificate
# (h2load) can drive the gateway.  Set from Config by the server; empty in every real deployment.
INSECURE_CALLER = ""


def current_caller() -> str:
    return _caller.get("")


def caller_of_uri(uri: str) -> str | None:
    """The caller a URI SAN names, None if it names none."""
    if uri == NATIONAL_URI:
        return NATIONAL
    if uri.startswith(PROVINCE_URI):
        code = uri[len(PROVINCE_URI):]
        if _PROVINCE.match(code):
            return code
    return None


def node_of_uri(uri: str) -> str | None:
    """The gateway node a URI SAN names (yidi://node/node-a), None if it names none."""
    if uri.startswith(NODE_URI):
        name = uri[len(NODE_URI):]
        if NODE_NAME.match(name):
            return name
    return None


def forwarded_for(context: grpc.aio.ServicerContext) -> str | None:
    """The yidi-forwarded-for entry of the call's metadata, None if it has none."""
    for key, value in context.invocation_metadata() or ():
        if key == FORWARDED_FOR:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def issued_for_clients(pem: bytes) -> bool:
    """Whether a certificate's extended key usage names clientAuth (answered once per certificate)."""
    known = _CLIENT_AUTH.get(pem)
    if known is None:
        if len(_CLIENT_AUTH) >= CLIENT_AUTH_CACHE_CERTS:
            _CLIENT_AUTH.clear()
        known = _CLIENT_AUTH[pem] = _names_client_auth(pem)
    return known


def _names_client_auth(pem: bytes) -> bool:
    try:
        usage = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except (x509.ExtensionNotFound, ValueError):
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in usage.value


def loopback_peer(peer: str) -> bool:
    """gRPC's peer string ("ipv4:127.0.0.1:5555", "ipv6:[::1]:5555") names a loopback address."""
    kind, _, address = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return False
    try:
        return ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_caller(context: grpc.aio.ServicerContext) -> str:
    """The caller named by the client certificate of this call, or for a node's certificate the original caller
    of the forwarded call (UNAUTHENTICATED or FORWARDING_REFUSED if none)."""
    auth = context.auth_context() or {}
    uris = [u.decode("utf-8", "replace") for u in auth.get(PEER_URI, ())]
    ours = [u for u in uris if u.startswith(URI_PREFIX)]
    forwarded = forwarded_for(context)
    node = node_of_uri(ours[0]) if len(ours) == 1 else None
    if node is not None:
        _check_client_auth(auth)
        return _forwarded_caller(node, forwarded)
    if forwarded is not None:
        raise YidiError("FORWARDING_REFUSED", why=f"只有结算网关节点证书可以转发调用（{FORWARDED_FOR}），"
                                                   "请删除该元数据后以本机构证书调用")
    caller = caller_of_uri(ours[0]) if len(ours) == 1 else None
    if caller is not None:
        _check_client_auth(auth)
        return caller
    if TLS not in auth.get(SECURITY_TYPE, ()):
        if INSECURE_CALLER and loopback_peer(context.peer()):
            return INSECURE_CALLER
        why = "本连接未使用 TLS 客户端证书（明文监听仅供健康检查与本机调试）"
    else:
        why = "客户端证书须含且仅含一个主题备用名称 yidi://province/<省代码> 或 yidi://national"
    raise YidiError("UNAUTHENTICATED", why=why)


def _check_client_auth(auth: dict) -> None:
    if not issued_for_clients(auth.get(PEER_CERT, (b"",))[0]):
        raise YidiError("UNAUTHENTICATED", why="客户端证书未声明客户端认证用途（扩展密钥用法须含 clientAuth），"
                                                "请使用平台 CA 签发的客户端证书")


def _forwarded_caller(node: str, forwarded: str | None) -> str:
    """The original caller a node's forwarded call names (FORWARDING_REFUSED if it names none)."""
    if forwarded is not None and (forwarded == NATIONAL or _PROVINCE.match(forwarded)):
        return forwarded
    what = "未注明原调用方" if forwarded is None else "注明的原调用方不是省份代码或 national"
    raise YidiError("FORWARDING_REFUSED", why=f"结算网关节点 {node} 的转发调用{what}（{FORWARDED_FOR}）")

"""Who is calling, resolved in one place (what each caller may do is ``core.access``).

SPEC §9: a caller is identified by its TLS client certificate.  The server
requires one signed by the platform CA (``require_client_auth``), and the
caller is the certificate's one Yidi URI subject alternative name, read from
the call's TLS auth context: ``yidi://province/460000`` is the province
``"460000"``, ``yidi://national`` the national operator (``NATIONAL``).  No
header is ever consulted.  A certificate without exactly one such name is
``UNAUTHENTICATED``; so is every Yidi RPC on the plaintext loopback listener
(``--insecure``), which has no certificate to read (health and reflection
still answer there).

``resolve_caller`` is called first thing in every Yidi RPC's handler
(gateway/services/base.py), followed by admission control
(``gateway.admission``), so an unidentified call changes nothing and an
overloaded gateway answers ``OVERLOADED`` with retry advice before any work.
"""
from __future__ import annotations

import contextvars
import re

import grpc

from core.access import NATIONAL
from core.errors import YidiError

from .certs import NATIONAL_URI, PROVINCE_URI, URI_PREFIX

_PROVINCE = re.compile(r"^[1-9][0-9]0000$")
# The auth context property gRPC fills with the peer certificate's URI SANs.
PEER_URI = "peer_uri"

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


def resolve_caller(context: grpc.aio.ServicerContext) -> str:
    """The caller named by the client certificate of this call (UNAUTHENTICATED if none)."""
    auth = context.auth_context() or {}
    uris = [u.decode("utf-8", "replace") for u in auth.get(PEER_URI, ())]
    ours = [u for u in uris if u.startswith(URI_PREFIX)]
    caller = caller_of_uri(ours[0]) if len(ours) == 1 else None
    if caller is not None:
        return caller
    if not auth.get("transport_security_type") and INSECURE_CALLER:
        return INSECURE_CALLER
    if not auth.get("transport_security_type"):
        why = "本连接未使用 TLS 客户端证书（明文监听仅供健康检查与本机调试）"
    else:
        why = "客户端证书须含且仅含一个主题备用名称 yidi://province/<省代码> 或 yidi://national"
    raise YidiError("UNAUTHENTICATED", f"无法识别调用方：{why}。")

"""Who is calling, resolved in one place (what each caller may do is ``core.access``).

The identity comes from a plain metadata header in this release; the TLS
issue replaces ``resolve_caller`` with the client certificate's subject and
nothing else changes.  A caller is a province code (``"210000"``) or
``NATIONAL`` for the national operator.
"""
from __future__ import annotations

import contextvars
import re

import grpc

from core.access import NATIONAL
from core.errors import YidiError

_PROVINCE = re.compile(r"^[1-9][0-9]0000$")

_caller: contextvars.ContextVar[str] = contextvars.ContextVar("yidi_caller")


def current_caller() -> str:
    return _caller.get()


def resolve_caller(context: grpc.aio.ServicerContext, header: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == header:
            if value == NATIONAL or _PROVINCE.match(value):
                return value
            break
    raise YidiError(
        "UNAUTHENTICATED",
        f"无法识别调用方：请求头 {header} 应为省级平台的省代码（如 210000）或 {NATIONAL}。",
    )


class CallerInterceptor(grpc.aio.ServerInterceptor):
    """Resolves the caller for every Yidi RPC before the service code runs.

    The health and reflection services need no identity.
    """

    def __init__(self, header: str, on_error) -> None:
        self._header = header
        self._on_error = on_error

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/yidi.") or handler.response_streaming:
            return handler  # bidirectional streams resolve their caller in their handler (services/base.py)
        field = "stream_unary" if handler.request_streaming else "unary_unary"
        inner = getattr(handler, field)
        header, on_error = self._header, self._on_error

        async def with_caller(request, context):
            try:
                caller = resolve_caller(context, header)
            except YidiError as err:
                await on_error(context, err)
            token = _caller.set(caller)
            try:
                return await inner(request, context)
            finally:
                _caller.reset(token)

        return handler._replace(**{field: with_caller})

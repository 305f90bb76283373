"""Registering Yidi RPCs: raw request bytes in, serialized response bytes out.

Requests arrive as bytes so that the size limit gives a proper reason
(MESSAGE_TOO_LARGE) and a malformed message gives INVALID_ARGUMENT, and so
that replayed responses can be returned byte for byte.  Every refusal becomes
a status with a google.rpc.ErrorInfo (gateway.status); anything else is a bug,
logged and answered INTERNAL.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError, Message

from core.errors import YidiError

from ..auth import current_caller
from ..status import to_status

log = logging.getLogger("yidi.rpc")

Handler = Callable[[Message], Awaitable[Message | bytes]]


async def abort(context: grpc.aio.ServicerContext, err: YidiError) -> None:
    # The reason and caller are logged, never the request (it may hold a certno).
    log.info("refused %s: %s", err.reason, err.metadata or "")
    await context.abort_with_status(to_status(err))


def unary(request_cls: type[Message], fn: Handler, max_message_bytes: int) -> grpc.RpcMethodHandler:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            if len(raw) > max_message_bytes:
                raise YidiError(
                    "MESSAGE_TOO_LARGE",
                    f"请求报文 {len(raw)} 字节，超过上限 {max_message_bytes} 字节。请分批上传费用明细。",
                )
            try:
                request = request_cls.FromString(raw)
            except DecodeError:
                raise YidiError("INVALID_ARGUMENT", "请求报文无法解析，请检查接口版本与报文格式。") from None
            result = await fn(request)
            return result if isinstance(result, bytes) else result.SerializeToString()
        except YidiError as err:
            await abort(context, err)
        except Exception:
            log.exception("internal error in %s (caller %s)", request_cls.__name__, current_caller())
            await abort(context, YidiError("INTERNAL", "结算网关内部错误，已记录。请使用相同的请求ID重试。"))

    return grpc.unary_unary_rpc_method_handler(handle)


def service_handler(service_descriptor, methods: dict[str, Handler], max_message_bytes: int):
    """A generic handler for one proto service; every method must be implemented."""
    handlers = {}
    for method in service_descriptor.methods:
        request_cls = _message_class(method.input_type)
        handlers[method.name] = unary(request_cls, methods[method.name], max_message_bytes)
    assert set(methods) == set(handlers), set(methods) ^ set(handlers)
    return grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers)


def _message_class(descriptor):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)

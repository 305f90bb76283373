"""Registering Yidi RPCs: raw request bytes in, serialized response bytes out.

Every Yidi RPC goes through ``unary``'s handler, in this order:

1. size limit (``MESSAGE_TOO_LARGE``) and decoding (``INVALID_ARGUMENT``);
2. readiness (``NOT_READY`` while the state loads);
3. authorization — SPEC §9 through the one table in ``core.access`` — before
   any service code runs;
4. the service method (translation: request → command → ``Gateway.execute``).

Requests arrive as bytes so that the size limit gives a proper reason and so
that replayed responses can be returned byte for byte.  A refusal becomes a
status with a google.rpc.ErrorInfo (gateway.status); anything else is a bug:
logged with a correlation id, counted, answered INTERNAL.
"""
from __future__ import annotations

import collections
import logging
import uuid
from typing import Awaitable, Callable, NamedTuple

import grpc
from google.protobuf.message import DecodeError, Message

from core.access import authorize
from core.errors import YidiError

from ..convert import request_digest  # noqa: F401 - re-exported for the services
from ..auth import _caller, current_caller, resolve_caller
from ..status import to_status

log = logging.getLogger("yidi.rpc")

Handler = Callable[[Message, str], Awaitable[Message | bytes]]

# Bugs answered INTERNAL, by RPC (read by the metrics endpoint and tests).
INTERNAL_ERRORS: collections.Counter[str] = collections.Counter()


class Decoded(NamedTuple):
    """A service method that reads its request bytes itself (fast paths): ``decode(raw)`` → request object."""

    decode: Callable[[bytes], object]
    fn: Handler


async def abort(context: grpc.aio.ServicerContext, err: YidiError) -> None:
    # The reason and caller are logged, never the request (it may hold a certno).
    log.info("refused %s: %s", err.reason, err.metadata or "")
    await context.abort_with_status(to_status(err))


def internal_error(method: str) -> YidiError:
    """Log the current exception as a bug with a correlation id the clerk can quote."""
    correlation_id = uuid.uuid4().hex[:16]
    INTERNAL_ERRORS[method] += 1
    log.exception("internal error %s in %s (caller %s)", correlation_id, method, current_caller())
    return YidiError("INTERNAL", f"结算网关内部错误（差错编号 {correlation_id}），已记录。请使用相同的请求ID重试。",
                     correlation_id=correlation_id)


def unary(method: str, request_cls: type[Message], fn: Handler | Decoded, gw,
          max_message_bytes: int) -> grpc.RpcMethodHandler:
    decode = fn.decode if isinstance(fn, Decoded) else None
    fn = fn.fn if isinstance(fn, Decoded) else fn

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            if len(raw) > max_message_bytes:
                raise YidiError(
                    "MESSAGE_TOO_LARGE",
                    f"请求报文 {len(raw)} 字节，超过上限 {max_message_bytes} 字节。请分批上传费用明细。",
                )
            if decode is not None:
                request = decode(raw)
            else:
                try:
                    request = request_cls.FromString(raw)
                except DecodeError:
                    raise YidiError("INVALID_ARGUMENT", "请求报文无法解析，请检查接口版本与报文格式。") from None
            caller = current_caller()
            gw.require_ready()
            authorize(method, caller, request, gw.engine)
            result = await fn(request, caller)
            return result if isinstance(result, bytes) else result.SerializeToString()
        except YidiError as err:
            await abort(context, err)
        except Exception:
            await abort(context, internal_error(method))

    return grpc.unary_unary_rpc_method_handler(handle)


def stream(method: str, request_cls: type[Message], fn, gw, max_message_bytes: int) -> grpc.RpcMethodHandler:
    """A bidirectional stream: the same checks as ``unary`` for the call, then per message.

    ``fn(items, caller)`` gets an async iterator of decoded messages (or the
    YidiError of a message that could not be read, to answer in its place) and
    yields response bytes.
    """
    decode = fn.decode if isinstance(fn, Decoded) else None
    fn = fn.fn if isinstance(fn, Decoded) else fn

    async def handle(request_iterator, context: grpc.aio.ServicerContext):
        try:
            caller = resolve_caller(context, gw.config.caller_header)
            gw.require_ready()
            authorize(method, caller, None, gw.engine)
        except YidiError as err:
            await abort(context, err)
            return

        async def items():
            async for raw in request_iterator:
                if len(raw) > max_message_bytes:
                    yield YidiError("MESSAGE_TOO_LARGE", f"报文 {len(raw)} 字节，超过上限 {max_message_bytes} 字节。")
                    continue
                if decode is not None:
                    yield decode(raw)
                    continue
                try:
                    yield request_cls.FromString(raw)
                except DecodeError:
                    yield YidiError("INVALID_ARGUMENT", "报文无法解析，请检查接口版本与报文格式。")

        token = _caller.set(caller)
        try:
            async for reply in fn(items(), caller):
                yield reply
        except YidiError as err:
            await abort(context, err)
        except Exception:
            await abort(context, internal_error(method))
        finally:
            _caller.reset(token)

    return grpc.stream_stream_rpc_method_handler(handle)


def service_handler(service_descriptor, methods: dict[str, Handler], gw, max_message_bytes: int):
    """A generic handler for one proto service; every method must be implemented."""
    from google.protobuf import message_factory

    handlers = {}
    for method in service_descriptor.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        name = f"{service_descriptor.name}/{method.name}"
        kind = stream if method.client_streaming and method.server_streaming else unary
        if method.client_streaming != method.server_streaming:
            raise RuntimeError(f"{name}: only unary and bidirectional streaming RPCs are served")
        handlers[method.name] = kind(name, request_cls, methods[method.name], gw, max_message_bytes)
    if set(methods) != set(handlers):
        raise RuntimeError(f"{service_descriptor.name}: methods without a handler {set(methods) ^ set(handlers)}")
    return grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers)

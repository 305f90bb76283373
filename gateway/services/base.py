"""Registering Yidi RPCs: raw request bytes in, serialized response bytes out.

Every Yidi RPC goes through ``unary``'s handler, in this order (the caller is
already resolved from its client certificate and admitted by gateway/auth.py):

1. size limit (``MESSAGE_TOO_LARGE``), decoding (``INVALID_ARGUMENT``) and
   the bounds of every field (gateway/bounds.py: strings, lists, oneofs),
   before any rule runs;
2. readiness (``NOT_READY`` while the state loads, ``STORAGE_UNAVAILABLE``
   while the ledger cannot be written);
3. authorization — SPEC §9 through the one table in ``core.access`` — before
   any service code runs;
4. the service method (translation: request → command → ``Gateway.execute``),
   with the caller's deadline (``app.DEADLINE``): a request whose deadline
   has passed before it is performed is not performed.

Requests arrive as bytes so that the size limit gives a proper reason and so
that replayed responses can be returned byte for byte.  A refusal becomes a
status with a google.rpc.ErrorInfo (gateway.status); anything else is a bug:
logged with a correlation id, counted, answered INTERNAL.  Mutating calls and
calls that name a person's data go to the audit log (gateway/audit.py).
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import uuid
from typing import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError, Message

from core.access import authorize
from core.errors import YidiError

from .. import bounds
from ..app import DEADLINE, NOTED
from ..auth import current_caller
from ..chain import LedgerCorrupt
from ..status import to_status

log = logging.getLogger("yidi.rpc")

Handler = Callable[[Message, str], Awaitable[Message | bytes]]

# Bugs answered INTERNAL, by RPC (read by the metrics endpoint and tests).
INTERNAL_ERRORS: collections.Counter[str] = collections.Counter()


def request_digest(request: Message) -> bytes:
    """The canonical fingerprint of a request, for SPEC §6 idempotency."""
    return hashlib.blake2b(request.SerializeToString(deterministic=True), digest_size=16).digest()


async def abort(context: grpc.aio.ServicerContext, err: YidiError) -> None:
    # The reason and caller are logged, never the request (it may hold a certno).
    log.info("refused %s: %s", err.reason, err.metadata or "")
    await context.abort_with_status(to_status(err))


def internal_error(method: str, what: str = "") -> YidiError:
    """Log the current exception as a bug with a correlation id the clerk can quote."""
    correlation_id = uuid.uuid4().hex[:16]
    INTERNAL_ERRORS[method] += 1
    if what:
        log.critical("internal error %s in %s (caller %s): %s", correlation_id, method, current_caller(), what)
    else:
        log.exception("internal error %s in %s (caller %s)", correlation_id, method, current_caller())
    return YidiError("INTERNAL", f"结算网关内部错误（差错编号 {correlation_id}），已记录。请使用相同的请求ID重试。",
                     correlation_id=correlation_id)


def _decode(request_cls: type[Message], guard: bounds.OneofGuard, raw: bytes, max_message_bytes: int) -> Message:
    """The request, bounded: size, decoding, every string and list, one member per oneof."""
    if len(raw) > max_message_bytes:
        raise YidiError(
            "MESSAGE_TOO_LARGE",
            f"请求报文 {len(raw)} 字节，超过上限 {max_message_bytes} 字节。请分批上传费用明细。",
        )
    try:
        request = request_cls.FromString(raw)
    except DecodeError:
        raise YidiError("INVALID_ARGUMENT", "请求报文无法解析，请检查接口版本与报文格式。") from None
    bounds.check(request, len(raw))
    guard.check(raw)
    return request


def unary(method: str, request_cls: type[Message], fn: Handler, gw, max_message_bytes: int) -> grpc.RpcMethodHandler:
    guard = bounds.OneofGuard(request_cls.DESCRIPTOR)
    audit = gw.audit

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = None
        caller = current_caller()
        noted: list = []
        remaining = context.time_remaining()
        DEADLINE.set(None if remaining is None else asyncio.get_running_loop().time() + remaining)
        NOTED.set(noted)
        try:
            request = _decode(request_cls, guard, raw, max_message_bytes)
            gw.require_ready()
            authorize(method, caller, request, gw.engine)
            result = await fn(request, caller)
            if audit is not None and audit.wants(method, request, None):
                key, seq = noted[-1] if noted else ("", 0)
                audit.write(caller, method, request, "ok" if noted else "replayed", key, seq)
            return result if isinstance(result, bytes) else result.SerializeToString()
        except YidiError as err:
            if audit is not None and request is not None and audit.wants(method, request, err.reason):
                audit.write(caller, method, request, err.reason)
            await abort(context, err)
        except LedgerCorrupt as err:
            await abort(context, internal_error(method, f"refusing to serve a damaged record: {err}"))
        except Exception:
            await abort(context, internal_error(method))

    return grpc.unary_unary_rpc_method_handler(handle)


def service_handler(service_descriptor, methods: dict[str, Handler], gw, max_message_bytes: int):
    """A generic handler for one proto service; every method must be implemented."""
    from google.protobuf import message_factory

    handlers = {}
    for method in service_descriptor.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        name = f"{service_descriptor.name}/{method.name}"
        handlers[method.name] = unary(name, request_cls, methods[method.name], gw, max_message_bytes)
    if set(methods) != set(handlers):
        raise RuntimeError(f"{service_descriptor.name}: methods without a handler {set(methods) ^ set(handlers)}")
    return grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers)

"""Registering Yidi RPCs: raw request bytes in, serialized response bytes out.

Every call first meets the ``Router`` as grpc.aio takes it from gRPC core,
before its request is read: the intake (gateway/security/admission.py) may refuse a
Yidi RPC there with OVERLOADED (calls in flight, time queued).  Then every
Yidi RPC goes through ``unary``'s handler, in this order (the caller is
resolved from its client certificate by gateway/security/auth.py and held to its own
limits first):

1. size limit (``MESSAGE_TOO_LARGE``), decoding (``INVALID_ARGUMENT``) and
   the bounds of every field (gateway/security/bounds.py: strings, lists, oneofs),
   before any rule runs;
2. readiness (``NOT_READY`` while the state loads, ``STORAGE_UNAVAILABLE``
   while the ledger cannot be written);
3. authorization — SPEC §9 through the one table in ``core.access`` — before
   any service code runs;
4. the service method (translation: request → command → ``Gateway.execute``),
   with the caller's deadline (``app.DEADLINE``): a request whose deadline
   has passed before it is performed is not performed.

A client-streaming RPC (``stream_unary``, e.g. the detail reconciliation)
takes the same steps: each message is size-limited and decoded as it
arrives, and the first message is authorized before any service code runs.
A bidirectional stream (``stream``, SettleStream) authorizes the call, then
each message as the service reads it (its items have their own rules).

A service method may read its request bytes itself (``Decoded``: the hot
requests, read by the core's wire reader); the checks are the same.

Requests arrive as bytes so that the size limit gives a proper reason and so
that replayed responses can be returned byte for byte.  A refusal becomes a
status with a google.rpc.ErrorInfo (gateway.transport.status); anything else is a bug:
logged with a correlation id, counted, answered INTERNAL, and a problem
report (报错处理) is opened for it automatically.  Mutating calls and calls
that name a person's data go to the audit log (gateway/security/audit.py).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import uuid
from time import perf_counter
from typing import AsyncIterator, Awaitable, Callable, NamedTuple

import grpc
from google.protobuf.message import DecodeError, Message

from core.access import authorize
from core.errors import REASONS, YidiError

from ...security import admission, bounds
from ...app import DEADLINE, NOTED, ledger_damaged, storage_unavailable
from ...security.audit import fields_of
from ...security.auth import _caller, current_caller, forwarded_for, resolve_caller
from ...store.chain import LedgerCorrupt
from ...store.parts import StorageDown
from ..convert import request_digest  # noqa: F401 - re-exported for the services
from ...operations.logs import log_call, wants_call
from ...operations.metrics import RpcTimer
from ..status import to_status

log = logging.getLogger("yidi.rpc")

Handler = Callable[[Message, str], Awaitable[Message | bytes]]

# Bugs answered INTERNAL, by RPC (read by the metrics endpoint and tests).
INTERNAL_ERRORS: collections.Counter[str] = collections.Counter()
# A test hook: the RPC named here ("Service/Method") fails as a bug would, so that the INTERNAL path
# (answer, log, automatic problem report) can be exercised over real gRPC.  Unset in production.
FAIL_RPC = os.environ.get("YIDI_FAIL_RPC", "")
# A test hook: "Service/Method:ms" spins the event loop that long in that RPC (as a busy-looping bug would), so
# that the watchdog (gateway/operations/watchdog.py) can be exercised over real gRPC.  Unset in production.
STALL_RPC, _, STALL_MS = os.environ.get("YIDI_STALL_RPC", "").partition(":")


class Decoded(NamedTuple):
    """A service method that reads its request bytes itself (fast paths): ``decode(raw)`` → request object."""

    decode: Callable[[bytes], object]
    fn: Handler


async def abort(context: grpc.aio.ServicerContext, err: YidiError) -> None:
    # The call's log line (``_finish``) names the reason, never the request (it may hold a certno).
    await context.abort_with_status(to_status(err))


def _finish(timer: RpcTimer, caller: str, request, code: str, reason: str, start: float) -> None:
    """A call's latency (by status), its refusal (by reason) and its log line."""
    seconds = perf_counter() - start
    timer.observe(code, seconds, reason)
    if wants_call(code):
        request_id = getattr(fields_of(request), "request_id", "") if request is not None else ""
        log_call(timer.method, caller, request_id, code, reason, seconds)


def internal_error(method: str, gw=None, what: str = "") -> YidiError:
    """Log the current exception (or ``what``) as a bug with a correlation id the clerk can quote, and report it.

    The problem report (``gw.report_internal``) is opened in the background: the
    answer does not wait for it, and if it fails it is logged, never reported again.
    """
    correlation_id = uuid.uuid4().hex[:16]
    INTERNAL_ERRORS[method] += 1
    caller = current_caller()
    if what:
        log.critical("internal error %s in %s (caller %s): %s", correlation_id, method, caller, what)
    else:
        log.exception("internal error %s in %s (caller %s)", correlation_id, method, caller)
    if gw is not None:
        _background(gw.report_internal(method, caller, correlation_id))
    return YidiError("INTERNAL", correlation_id=correlation_id)


def damaged(method: str, gw, err: LedgerCorrupt) -> YidiError:
    """A proof failed on a read: nothing is served from the ledger any more (gw.damaged reports it)."""
    log.critical("refusing to serve from a damaged ledger in %s: %s", method, err)
    _background(gw.damaged(err, f"{method} 读取时发现"))
    return ledger_damaged()


def _refusal(exc: Exception, method: str, gw) -> tuple[str, str, YidiError]:
    """(status code, reason, the error to answer) for what a handler caught: a refusal as it is, a damaged
    ledger as LEDGER_DAMAGED (and reported), a store that cannot be read as STORAGE_UNAVAILABLE, anything else as
    a bug (logged with a correlation id, reported)."""
    if isinstance(exc, YidiError):
        return REASONS[exc.reason].status, exc.reason, exc
    if isinstance(exc, LedgerCorrupt):
        return "UNAVAILABLE", "LEDGER_DAMAGED", damaged(method, gw, exc)
    if isinstance(exc, StorageDown):   # the store cannot be read now (a database server lost): retry, not a bug
        log.error("%s: %s", method, exc)
        return "UNAVAILABLE", "STORAGE_UNAVAILABLE", storage_unavailable()
    return "INTERNAL", "INTERNAL", internal_error(method, gw)


_REPORTS: set[asyncio.Task] = set()   # strong references until done (the loop keeps only weak ones)


def _background(coro) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _REPORTS.add(task)
    task.add_done_callback(_REPORTS.discard)


def _decode(raw: bytes, request_cls: type[Message], max_message_bytes: int, decode=None,
            guard: bounds.OneofGuard | None = None):
    """The request, bounded: size, decoding, every string and list, one member per oneof.

    A fast-path reader (``decode``) checks its own fields (the core validates every one, and
    falls back to ``convert.parse``, which applies the same bounds, for anything unusual).
    """
    if len(raw) > max_message_bytes:
        raise YidiError("MESSAGE_TOO_LARGE", size=len(raw), limit=max_message_bytes)
    if decode is not None:
        return decode(raw)
    try:
        request = request_cls.FromString(raw)
    except DecodeError:
        raise YidiError("INVALID_ARGUMENT", what="请求报文", problem="无法解析，请检查接口版本与报文格式") from None
    bounds.check(request, len(raw))
    if guard is not None:
        guard.check(raw)
    return request


def _admit(method: str, request, gw) -> str:
    """Readiness and SPEC §9 for a decoded request; the caller."""
    caller = current_caller()
    gw.require_ready()
    authorize(method, caller, request, gw.engine.owners)
    if method == FAIL_RPC:
        raise RuntimeError(f"YIDI_FAIL_RPC: {method} fails on purpose")
    if method == STALL_RPC:
        _spin(int(STALL_MS) / 1000)
    return caller


def _spin(seconds: float) -> None:
    end = perf_counter() + seconds
    while perf_counter() < end:
        pass


def _enter(context: grpc.aio.ServicerContext, gw) -> tuple:
    """Who is calling (its client certificate: UNAUTHENTICATED if none) and the caller's limits (OVERLOADED past
    them), before anything else; (caller, ticket, token) for ``_leave``.  Done here rather than in a
    server interceptor: an interceptor wraps every call in one more coroutine (~5% of the empty call's CPU)."""
    caller = resolve_caller(context)
    ticket = gw.admission.enter(caller, forwarded_for(context) is not None) if gw.admission is not None else None
    return caller, ticket, _caller.set(caller)


def _leave(gw, entered: tuple | None) -> None:
    if entered is not None:
        _caller.reset(entered[2])
        if entered[1] is not None:
            gw.admission.leave(entered[1])


def _unwrap(fn) -> tuple:
    """(decode or None, the service method) of a methods() entry."""
    return (fn.decode, fn.fn) if isinstance(fn, Decoded) else (None, fn)


def unary(method: str, request_cls: type[Message], fn, gw, max_message_bytes: int) -> grpc.RpcMethodHandler:
    decode, fn = _unwrap(fn)
    guard = bounds.oneof_guard(request_cls.DESCRIPTOR)
    audit = gw.audit
    timer = RpcTimer(method)

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        start, code, reason = perf_counter(), "OK", ""
        request = entered = None
        caller = ""
        noted: list = []
        remaining = context.time_remaining()
        DEADLINE.set(None if remaining is None else asyncio.get_running_loop().time() + remaining)
        NOTED.set(noted)
        try:
            entered = _enter(context, gw)
            caller = entered[0]
            request = _decode(raw, request_cls, max_message_bytes, decode, guard)
            caller = _admit(method, request, gw)
            if gw.standby:   # a read sees every record the owner committed before it (gateway/ownership.py)
                await gw.ownership.before_read()
            result = await fn(request, caller)
            if audit is not None and audit.wants(method, request, None):
                key, seq = noted[-1] if noted else ("", 0)
                # "replayed": a mutating request whose answer was already on record; a read is just "ok"
                replayed = not noted and getattr(fields_of(request), "request_id", "")
                audit.write(caller, method, request, "replayed" if replayed else "ok", key, seq)
            return result if isinstance(result, bytes) else result.SerializeToString()
        except Exception as exc:
            code, reason, err = _refusal(exc, method, gw)
            if isinstance(exc, YidiError) and audit is not None and request is not None \
                    and audit.wants(method, request, reason):
                audit.write(caller, method, request, reason)
            await abort(context, err)
        finally:
            _leave(gw, entered)
            _finish(timer, caller, request, code, reason, start)

    return grpc.unary_unary_rpc_method_handler(handle)


def stream_unary(method: str, request_cls: type[Message], fn, gw, max_message_bytes: int) -> grpc.RpcMethodHandler:
    """A client-streaming RPC: ``fn(async iterator of decoded requests, caller)``; the first is authorized."""
    timer = RpcTimer(method)

    async def handle(raw_messages: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        start, code, reason = perf_counter(), "OK", ""
        entered = None
        try:
            entered = _enter(context, gw)
            guard = bounds.oneof_guard(request_cls.DESCRIPTOR)
            messages = (_decode(raw, request_cls, max_message_bytes, None, guard) async for raw in raw_messages)
            first = await anext(messages, None)
            if first is None:
                raise YidiError("INVALID_ARGUMENT", what="请求流", problem="为空：第一条消息须说明范围")
            caller = _admit(method, first, gw)
            result = await fn(_chain(first, messages), caller)
            return result.SerializeToString()
        except Exception as exc:
            code, reason, err = _refusal(exc, method, gw)
            await abort(context, err)
        finally:
            _leave(gw, entered)
            _finish(timer, entered[0] if entered else "", None, code, reason, start)

    return grpc.stream_unary_rpc_method_handler(handle)


async def _chain(first: Message, rest: AsyncIterator[Message]) -> AsyncIterator[Message]:
    yield first
    async for message in rest:
        yield message


def stream(method: str, request_cls: type[Message], fn, gw, max_message_bytes: int) -> grpc.RpcMethodHandler:
    """A bidirectional stream: the call is checked once, then ``fn(items, caller)`` gets an async iterator of
    decoded messages (or the YidiError of a message that could not be read, to answer in its place) and
    yields response bytes.

    The handler is a coroutine that writes with ``context.write``, not an async generator: a client that
    cancels cancels the call's task, so the handler ends in its own task and context (its metrics are
    counted, the caller's context variable reset there) and ``fn`` is closed at once.  A generator left at a
    ``yield`` would be closed later by the loop in another context.  A cancel is counted ``CANCELLED`` when
    gRPC delivers it as one (a cancelled task, or a reply it can no longer send); when gRPC ends the request
    stream first and takes the replies left, the handler cannot tell it from the client's half-close (OK).
    """
    decode, fn = _unwrap(fn)
    timer = RpcTimer(method)

    async def items(request_iterator):
        async for raw in request_iterator:
            try:
                yield _decode(raw, request_cls, max_message_bytes, decode)
            except YidiError as err:
                yield err

    async def handle(request_iterator, context: grpc.aio.ServicerContext) -> None:
        start, code, reason = perf_counter(), "OK", ""
        token, writing, caller = None, False, ""
        try:
            caller = resolve_caller(context)
            token = _caller.set(caller)
            gw.require_ready()
            authorize(method, caller, None, gw.engine.owners)
            async with contextlib.aclosing(fn(items(request_iterator), caller)) as replies:
                async for reply in replies:
                    writing = True
                    await context.write(reply)
                    writing = False
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            if writing and not isinstance(exc, (YidiError, LedgerCorrupt)):
                code = "CANCELLED"  # the call ended under the reply (its client went away): nothing to answer
                return
            code, reason, err = _refusal(exc, method, gw)
            await abort(context, err)
        finally:
            if token is not None:
                _caller.reset(token)
            _finish(timer, caller, None, code, reason, start)

    return grpc.stream_stream_rpc_method_handler(handle)


def service_handlers(service_descriptor, methods: dict, gw, max_message_bytes: int) -> dict[str, grpc.RpcMethodHandler]:
    """The handlers of one proto service by method path ("/yidi.v1.Service/Method"); every method must be implemented."""
    from google.protobuf import message_factory

    handlers = {}
    for method in service_descriptor.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        name = f"{service_descriptor.name}/{method.name}"
        if method.server_streaming and not method.client_streaming:
            raise RuntimeError(f"{name}: server-streaming RPCs have no handler here")
        make = (stream if method.server_streaming else stream_unary) if method.client_streaming else unary
        handlers[method.name] = make(name, request_cls, methods[method.name], gw, max_message_bytes)
    if set(methods) != set(handlers):
        raise RuntimeError(f"{service_descriptor.name}: methods without a handler {set(methods) ^ set(handlers)}")
    return {f"/{service_descriptor.full_name}/{name}": handler for name, handler in handlers.items()}


def refusal(method: str, err: YidiError) -> grpc.RpcMethodHandler:
    """A handler that answers err at once without reading the request (a prebuilt status: a refusal must be cheap)."""
    status = to_status(err)
    code, details, trailers = status.code, status.details, status.trailing_metadata
    timer = RpcTimer(method)

    async def refuse(requests, context: grpc.aio.ServicerContext) -> None:
        start = perf_counter()
        try:
            await context.abort(code, details, trailers)
        finally:   # counted by reason; not logged one by one (the intake logs a summary at most once a second)
            timer.observe(code.name, perf_counter() - start, err.reason)

    return grpc.stream_unary_rpc_method_handler(refuse)


class Router(grpc.GenericRpcHandler):
    """Every method of the server in one table, looked up as grpc.aio takes each call from gRPC core.

    This is the first code of ours a call reaches, in arrival order and before
    its request is read: the intake (gateway/security/admission.py) may refuse a Yidi
    call there with a prebuilt OVERLOADED answer, and answers its own queue
    probes.  Health and reflection are added here too
    (``add_generic_rpc_handlers``: the router stands in for the server when
    they register), so that every call queues in one line; they are never
    refused.
    """

    def __init__(self, intake: admission.Intake, retry_after_ms: int) -> None:
        self._intake = intake
        self._retry_after_ms = retry_after_ms
        self._yidi: dict[str, tuple] = {}
        self._others: list[grpc.GenericRpcHandler] = []

    def add(self, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for path, handler in handlers.items():
            method = path.rsplit(".", 1)[-1]   # "Service/Method", as the metrics name it
            self._yidi[path] = (handler, *(refusal(method, self._intake.refusal(verdict, self._retry_after_ms))
                                           for verdict in (admission.TOO_MANY, admission.TOO_LONG)))

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._others.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        """Ignored: the generic handlers the same helpers add serve the same methods, through here."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        answers = self._yidi.get(details.method)
        if answers is not None:
            return answers[self._intake.take()]
        if details.method == admission.PROBE:
            return self._intake.probe_handler(details.invocation_metadata)
        for handlers in self._others:
            handler = handlers.service(details)
            if handler is not None:
                return handler
        return None

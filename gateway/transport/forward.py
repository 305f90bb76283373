"""Forwarded calls: a mutating call this node does not own is performed by the node that does.

``Owner.owner_address()`` says, per call, where the node that owns the
call's partition listens, or None when this node owns it (docs/operations.md,
Gateway nodes; ``StaticOwner`` is ``yidi serve --owner-address``; on
PostgreSQL, ``ownership.LeaseHolder``: the partition lease's holder while this
node is a standby).  A mutating
call (``forwarded``: its request, or a message in it, carries a request_id)
that reaches a node that is not the owner is sent on to the owner:

* here, as for any call: the caller is resolved from its client certificate
  and held to its limits (admission control), so an unidentified or
  overloaded call goes no further;
* the call's request bytes, unread and unchanged, go to the owner over one
  long-lived mTLS channel per owner address, presenting this node's
  certificate (``yidi://node/<name>``), with the original caller in the
  ``yidi-forwarded-for`` metadata entry and the client's remaining deadline;
* the owner decodes, authorizes (it holds the state the rules need), performs
  and audits the call as if the client had called it directly, and its answer
  goes back byte for byte: the reply bytes, or its status code, message and
  trailing metadata (the ErrorInfo and other details) unchanged;
* an owner that cannot be reached (no connection, or the connection lost
  mid-call) is answered ``OWNER_UNAVAILABLE`` with retry advice: the outcome is
  unknown, and a retry with the same request_id is answered from the
  owner's idempotency record if it was performed.

A forwarded call (one naming ``yidi-forwarded-for``) is always served where it
arrives, never forwarded again: ownership moving under a call cannot make it
loop.  Reads are served by the node that takes them, and so is loading the
reference data (``NODE_LOCAL``: every node loads its own).  Forwarded calls are
counted in ``yidi_forwarded_calls_total{method, outcome}`` (outcome: ``OK``,
the owner's reason code, or the gRPC code of an answer without one).
"""
from __future__ import annotations

import asyncio
import logging
import time
from time import perf_counter
from typing import Protocol

import grpc
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from prometheus_client import Counter

from core.errors import REASONS, YidiError

from ..config import Config
from ..operations.metrics import REGISTRY, RpcTimer
from ..security import certs, tls
from ..security.auth import FORWARDED_FOR, forwarded_for, resolve_caller
from ..store import is_postgresql
from .services.base import _enter, _finish, _leave, abort, internal_error
from .status import reason_of

log = logging.getLogger("yidi.forward")

FORWARDED_CALLS = Counter("yidi_forwarded_calls", "Mutating calls sent on to the node that owns their partition, "
                          "by method and outcome (OK, the owner's reason code or gRPC code, or OWNER_UNAVAILABLE)",
                          ["method", "outcome"], registry=REGISTRY)
# The trailing metadata entry of a status with details (a Yidi refusal); a failed call without it was not
# answered by the owner's code (no connection, a connection lost).
STATUS_DETAILS = "grpc-status-details-bin"
# How often an owner that cannot be reached is logged at most (the calls are counted, each one).
UNREACHABLE_LOG_INTERVAL_S = 1.0
# How long calls in flight may go on over channels a reload replaced.
CLOSE_GRACE_S = 30.0
# Mutating RPCs every node performs itself: each node loads the reference data it answers from (an operator
# loads it on every node).
NODE_LOCAL = frozenset({"AdminService/LoadReferenceData"})


class Owner(Protocol):
    """Who owns the partition of this node's mutating calls."""

    def owner_address(self) -> str | None:
        """host:port of the owner's gRPC listener; None when this node owns it (serve the call here)."""


class StaticOwner:
    """An owner named at start (``yidi serve --owner-address``): every mutating call goes to it."""

    def __init__(self, address: str) -> None:
        self.address = address

    def owner_address(self) -> str | None:
        return self.address


def forwarded(method) -> bool:
    """Whether an RPC goes to the owner: it changes state (its request, or a message within it, a batch's or a
    stream's item, carries a request_id: SPEC §6, every mutating request does) and is not ``NODE_LOCAL``."""
    name = f"{method.containing_service.name}/{method.name}"
    return name not in NODE_LOCAL and _names_request_id(method.input_type, 2)


def _names_request_id(message: Descriptor, depth: int) -> bool:
    return any(f.name == "request_id" or (depth > 0 and f.message_type is not None
                                          and _names_request_id(f.message_type, depth - 1))
               for f in message.fields)


def _identity(data: bytes) -> bytes:
    return data


class Forwarder:
    """Sends mutating calls on to the owner over one mTLS channel per owner address, with this node's certificate."""

    def __init__(self, owner: Owner, gw, config: Config) -> None:
        self.owner = owner
        self.gw = gw
        self._config = config
        self._credentials = node_credentials(config)
        self._options = channel_options(config)
        self._closing: set[asyncio.Task] = set()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[tuple[str, str], object] = {}
        self._logged_unreachable = 0.0

    def wrap(self, service: ServiceDescriptor, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        """Replace the handlers of the service's mutating RPCs (in place) by ones that forward when not the owner."""
        for method in service.methods:
            if not forwarded(method):
                continue
            path = f"/{service.full_name}/{method.name}"
            name = f"{service.name}/{method.name}"
            if method.client_streaming and method.server_streaming:
                handlers[path] = self._stream(path, name, handlers[path].stream_stream)
            elif not method.client_streaming and not method.server_streaming:
                handlers[path] = self._unary(path, name, handlers[path].unary_unary)
            else:
                raise RuntimeError(f"{name}: a mutating client-streaming RPC has no forwarding handler")

    def _call(self, address: str, path: str, kind: str):
        """The multicallable of path on the owner's channel (made once per address and method)."""
        call = self._calls.get((address, path))
        if call is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = grpc.aio.secure_channel(address, self._credentials, self._options)
                log.info("forwarding mutating calls to the owner at %s", address)
            call = getattr(channel, kind)(path, request_serializer=_identity, response_deserializer=_identity)
            self._calls[(address, path)] = call
        return call

    def _route(self, context: grpc.aio.ServicerContext) -> str | None:
        """The owner's address for a call to forward; None: serve it here (this node owns it, or it is forwarded)."""
        if forwarded_for(context) is not None:
            return None
        return self.owner.owner_address()

    def _unary(self, path: str, method: str, local) -> grpc.RpcMethodHandler:
        timer, forwarded_ok = RpcTimer(method), FORWARDED_CALLS.labels(method, "OK")

        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            address = self._route(context)
            if address is None:
                return await local(raw, context)
            start, entered, code, reason = perf_counter(), None, "OK", ""
            try:
                entered = _enter(context, self.gw)
                call = self._call(address, path, "unary_unary")
                reply = await call(raw, timeout=context.time_remaining(), metadata=((FORWARDED_FOR, entered[0]),))
                forwarded_ok.inc()
                return reply
            except asyncio.CancelledError:   # the client went away: so does the owner's call (awaited here)
                code = "CANCELLED"
                raise
            except Exception as exc:
                code, reason = self._outcome(method, address, exc)
                await self._abort(context, method, exc, reason)
            finally:
                _leave(self.gw, entered)
                _finish(timer, entered[0] if entered else "", None, code, reason, start)

        return grpc.unary_unary_rpc_method_handler(handle)

    def _stream(self, path: str, method: str, local) -> grpc.RpcMethodHandler:
        """A bidirectional stream: every message on to the owner as it arrives, every reply back as it comes."""
        timer, forwarded_ok = RpcTimer(method), FORWARDED_CALLS.labels(method, "OK")

        async def handle(requests, context: grpc.aio.ServicerContext) -> None:
            address = self._route(context)
            if address is None:
                return await local(requests, context)
            start, caller, code, reason, call = perf_counter(), "", "OK", "", None
            try:
                caller = resolve_caller(context)
                call = self._call(address, path, "stream_stream")(
                    requests, timeout=context.time_remaining(), metadata=((FORWARDED_FOR, caller),))
                async for reply in call:
                    await context.write(reply)
                forwarded_ok.inc()
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                code, reason = self._outcome(method, address, exc)
                await self._abort(context, method, exc, reason)
            finally:
                if call is not None and not call.done():
                    call.cancel()   # the client went away: so does the owner's call
                _finish(timer, caller, None, code, reason, start)

        return grpc.stream_stream_rpc_method_handler(handle)

    def _outcome(self, method: str, address: str, exc: Exception) -> tuple[str, str]:
        """(status code, reason) of a call that failed, counted as a forwarded call's outcome if it was sent: this
        node's own refusal (the caller unidentified, over its limits), the owner's answer, or OWNER_UNAVAILABLE."""
        if isinstance(exc, YidiError):
            return REASONS[exc.reason].status, exc.reason
        if not isinstance(exc, grpc.aio.AioRpcError):
            return "INTERNAL", "INTERNAL"
        code = exc.code()
        if code is grpc.StatusCode.UNAVAILABLE and not _answered(exc):
            self._log_unreachable(address, exc)
            reason = "OWNER_UNAVAILABLE"
        else:
            reason = (reason_of(exc) if _answered(exc) else None) or code.name
        FORWARDED_CALLS.labels(method, reason).inc()
        return code.name, reason

    async def _abort(self, context: grpc.aio.ServicerContext, method: str, exc: Exception, reason: str) -> None:
        """End the call with the answer ``_outcome`` found (this raises, as grpc.aio's abort does)."""
        if isinstance(exc, YidiError):
            await abort(context, exc)
        if reason == "OWNER_UNAVAILABLE":
            await abort(context, YidiError(reason, retry_after_ms=self.gw.config.overload_retry_after_ms))
        if not isinstance(exc, grpc.aio.AioRpcError):
            await abort(context, internal_error(method, self.gw))
        await context.abort(exc.code(), exc.details(), tuple(exc.trailing_metadata() or ()))

    def _log_unreachable(self, address: str, err: grpc.aio.AioRpcError) -> None:
        now = time.monotonic()
        if now - self._logged_unreachable >= UNREACHABLE_LOG_INTERVAL_S:
            self._logged_unreachable = now
            log.warning("the owner at %s cannot be reached: %s; answering OWNER_UNAVAILABLE", address,
                        (err.details() or "")[:300])

    def reload(self) -> bool:
        """Read this node's certificate and key again (SIGHUP, on the event loop): calls from now on go over new
        channels that present them, calls in flight finish on the old ones.  Files that fail ``tls.check`` are
        logged and the certificate in use stays in use."""
        try:
            credentials = node_credentials(self._config)
        except certs.CertificateError as err:
            log.error("node certificate not reloaded, the one in use stays: %s", err,
                      extra={"fields": {"cert": self._config.node_cert}})
            return False
        old, self._credentials, self._channels, self._calls = self._channels, credentials, {}, {}
        for channel in old.values():
            task = asyncio.get_running_loop().create_task(channel.close(grace=CLOSE_GRACE_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return True

    async def close(self) -> None:
        for task in list(self._closing):   # channels a reload replaced: no more grace at shutdown
            task.cancel()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._calls.clear()


def _answered(err: grpc.aio.AioRpcError) -> bool:
    """Whether a failed call was answered by a Yidi node's code (its status carries details)."""
    return any(key == STATUS_DETAILS for key, _ in err.trailing_metadata() or ())


def channel_options(config: Config) -> list[tuple]:
    limit = config.max_message_bytes
    return [
        ("grpc.max_send_message_length", 2 * limit),
        ("grpc.max_receive_message_length", -1),   # the owner's replies are bounded by the owner
        ("grpc.keepalive_time_ms", config.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_ms),
        # an owner back at its address is reached within a second, not after gRPC's default backoff (2 min); not
        # grpc.min_reconnect_backoff_ms: it is also each attempt's connect timeout (20 s), and a TLS handshake on a
        # busy machine takes more than a tenth of a second
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def node_credentials(config: Config) -> grpc.ChannelCredentials:
    """This node's certificate and key, and the platform CA that signs the owner's server certificate, checked
    as the listener's are (``tls.check``: they parse, the key is the certificate's, it is valid now)."""
    cert, key, ca = certs.read(config.node_cert), certs.read(config.node_key), certs.read(config.tls_ca)
    log.info("node certificate loaded: %s", tls.check(cert, key, ca), extra={"fields": {"cert": config.node_cert}})
    return grpc.ssl_channel_credentials(ca, key, cert)


def forwarder(config: Config, gw, owner: Owner | None) -> Forwarder | None:
    """The forwarder of a node given an owner (or ``--owner-address``; on PostgreSQL, the partition lease's holder
    while this node is a standby); None for a node that owns everything (SQLite)."""
    if owner is None and config.owner_address:
        owner = StaticOwner(config.owner_address)
    if owner is None and is_postgresql(config.store_url()):
        from ..ownership import LeaseHolder

        owner = LeaseHolder(gw)
    if owner is None:
        return None
    return Forwarder(owner, gw, config)

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
loop.  Reads are served by the node that takes them.  Forwarded calls are
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

from core import length_delimited, read_batch_items
from core.errors import REASONS, YidiError

from .._pb.yidi.v1 import settlement_pb2 as spb
from ..config import Config
from ..operations.metrics import REGISTRY, RpcTimer
from ..security import certs, tls
from ..security.auth import FORWARDED_FOR, forwarded_for, resolve_caller
from ..partitions import EVERY_PARTITION, PARTITION_READS, RequestPartitions
from ..store import is_postgresql
from ..store.parts import StorageDown
from . import convert
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
# Split across partitions when its items are of several (a ledger split by insured province).
SETTLE_BATCH = "SettlementService/SettleBatch"


class Owner(Protocol):
    """Who owns each partition (``None``: this node's own)."""

    def owner_address(self, part: int | None = None) -> str | None:
        """host:port of the partition owner's gRPC listener; None when this node owns it (serve the call here)."""

    async def look_up(self, part: int) -> None:
        """Learn who owns another partition now, if not known yet (before ``owner_address(part)``)."""

    def self_address(self) -> str:
        """Where this node listens (its advertised address)."""


class StaticOwner:
    """An owner named at start (``yidi serve --owner-address``): every mutating call goes to it."""

    def __init__(self, address: str) -> None:
        self.address = address

    def owner_address(self, part: int | None = None) -> str | None:
        return self.address

    async def look_up(self, part: int) -> None:
        return None

    def self_address(self) -> str:
        raise RuntimeError("a node given --owner-address serves one partition")


def forwarded(method) -> bool:
    """Whether an RPC goes to the owner: it changes state (its request, or a message within it, a batch's or a
    stream's item, carries a request_id: SPEC §6, every mutating request does)."""
    return _names_request_id(method.input_type, 2)


def _names_request_id(message: Descriptor, depth: int) -> bool:
    return any(f.name == "request_id" or (depth > 0 and f.message_type is not None
                                          and _names_request_id(f.message_type, depth - 1))
               for f in message.fields)


def _identity(data: bytes) -> bytes:
    return data


class Forwarder:
    """Sends mutating calls on to the owner over one mTLS channel per owner address, with this node's certificate."""

    def __init__(self, owner: Owner, gw, config: Config, partitions: RequestPartitions | None = None) -> None:
        self.owner = owner
        self.gw = gw
        self.partitions = partitions   # a ledger split by insured province: each call to its partition's owner
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
            name = f"{service.name}/{method.name}"
            path = f"/{service.full_name}/{method.name}"
            if self.partitions is not None and name in EVERY_PARTITION:
                handlers[path] = self._everywhere(path, name, method, handlers[path].unary_unary)
                continue
            if self.partitions is not None and name == SETTLE_BATCH:
                handlers[path] = self._split_batch(path, name, method, handlers[path].unary_unary)
                continue
            mutating = forwarded(method)
            if not mutating and not (self.partitions is not None and name in PARTITION_READS):
                continue
            if method.client_streaming and method.server_streaming:
                handlers[path] = self._stream(path, name, handlers[path].stream_stream)
            elif not method.client_streaming and not method.server_streaming:
                handlers[path] = self._unary(path, name, method, mutating, handlers[path].unary_unary)
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
        """The owner's address for a stream to forward; None: serve it here (this node owns it, or it is
        forwarded)."""
        if forwarded_for(context) is not None:
            return None
        return self.owner.owner_address()

    async def _route_unary(self, context: grpc.aio.ServicerContext, method, mutating: bool, raw: bytes) -> str | None:
        """The owner's address for a call to forward (its partition's, when the ledger is split); None: serve it
        here (this node owns it, it is a read of this node's partition, or it was forwarded)."""
        if forwarded_for(context) is not None:
            return None
        part = None
        if self.partitions is not None:
            part = await self.partitions.of(method, raw, lambda: resolve_caller(context))
            if part == self.gw.store.part:
                part = None
        if part is None and not mutating:
            return None
        if part is not None:
            await self._look_up(part)
        return self.owner.owner_address(part)

    async def _look_up(self, part: int) -> None:
        """Learn who owns partition ``part`` now, if not known yet; STORAGE_UNAVAILABLE if the leases cannot be read."""
        try:
            await self.owner.look_up(part)
        except StorageDown:
            raise YidiError("STORAGE_UNAVAILABLE") from None

    def _unary(self, path: str, name: str, method, mutating: bool, local) -> grpc.RpcMethodHandler:
        timer, forwarded_ok = RpcTimer(name), FORWARDED_CALLS.labels(name, "OK")

        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                address = await self._route_unary(context, method, mutating, raw)
            except YidiError as err:   # no node owns the call's partition now, or the caller is not known
                _finish(timer, "", None, REASONS[err.reason].status, err.reason, perf_counter())
                await abort(context, err)
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
                code, reason = self._outcome(name, address, exc)
                await self._abort(context, name, exc, reason)
            finally:
                _leave(self.gw, entered)
                _finish(timer, entered[0] if entered else "", None, code, reason, start)

        return grpc.unary_unary_rpc_method_handler(handle)

    def _everywhere(self, path: str, name: str, method, local) -> grpc.RpcMethodHandler:
        """A call every partition answers (a clearing calendar's change, a clearing report, every position): sent
        to each partition's owner in partition order, this node's own included (over its own listener, so each
        copy is authorized, performed and audited there as any forwarded call), one answer made of theirs
        (``partitions.EVERY_PARTITION``).  A change holds the ledger's clearing lock meanwhile, so two changes of
        the calendar never interleave across partitions; the first refusal or failure is the answer (a retry
        with the same request_id completes what was not done: each partition's copy is idempotent)."""
        timer, merge, mutating = RpcTimer(name), EVERY_PARTITION[name], forwarded(method)
        single = self._unary(path, name, method, mutating, local).unary_unary   # GetPositions of one province

        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if forwarded_for(context) is not None:
                return await local(raw, context)
            if not mutating and await self.partitions.of(method, raw, lambda: resolve_caller(context)) is not None:
                return await single(raw, context)
            start, entered, code, reason, address, lock = perf_counter(), None, "OK", "", "", None
            try:
                entered = _enter(context, self.gw)
                if mutating:
                    try:
                        lock = await asyncio.to_thread(self.gw.store.clearing_lock, context.time_remaining())
                    except StorageDown:
                        raise YidiError("STORAGE_UNAVAILABLE") from None
                replies = []
                for part in range(self.gw.partitions.n):
                    address = await self._address_of(part, mutating)
                    call = self._call(address, path, "unary_unary")
                    replies.append(await call(raw, timeout=context.time_remaining(),
                                              metadata=((FORWARDED_FOR, entered[0]),)))
                return merge(replies, self.gw.partitions, raw)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                code, reason = self._outcome(name, address, exc)
                await self._abort(context, name, exc, reason)
            finally:
                if lock is not None:
                    await asyncio.to_thread(lock.close)
                _leave(self.gw, entered)
                _finish(timer, entered[0] if entered else "", None, code, reason, start)

        return grpc.unary_unary_rpc_method_handler(handle)

    def _split_batch(self, path: str, name: str, method, local) -> grpc.RpcMethodHandler:
        """A SettleBatch whose items are of several partitions: each partition's items, in their order, as one
        batch to that partition's owner (its own partition's to this node itself, or to its holder), all at once;
        the outcomes put back in the items' order, byte for byte as the owners gave them.  A partition whose
        owner cannot answer: each of its items refused as the call was (OWNER_UNAVAILABLE: retry them with the
        same request ids).  A batch of one partition, too large or unreadable is served as any call."""
        single = self._unary(path, name, method, True, local).unary_unary
        timer, config = RpcTimer(name), self.gw.config

        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            items = None if forwarded_for(context) is not None or len(raw) > config.max_message_bytes \
                else read_batch_items(raw)
            try:
                groups = await self.partitions.batch_groups(items) if items and len(items) <= config.batch_max_items \
                    else None
            except YidiError as err:   # the routes of persons filed through the gateway cannot be read now
                await abort(context, err)
            if groups is None:
                return await single(raw, context)
            start, entered, code, reason = perf_counter(), None, "OK", ""
            try:
                entered = _enter(context, self.gw)
                outcomes: list[bytes] = [b""] * len(items)
                await asyncio.gather(*(self._batch_part(path, name, part, [items[i] for i in indices], indices,
                                                        outcomes, context, entered[0])
                                       for part, indices in groups.items()))
                return convert.settle_batch_reply(outcomes)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except YidiError as err:   # this node's own refusal of the caller (unidentified, over its limits)
                code, reason = REASONS[err.reason].status, err.reason
                await abort(context, err)
            finally:
                _leave(self.gw, entered)
                _finish(timer, entered[0] if entered else "", None, code, reason, start)

        return grpc.unary_unary_rpc_method_handler(handle)

    async def _batch_part(self, path: str, name: str, part: int, items: list[bytes], indices: list[int],
                          outcomes: list[bytes], context: grpc.aio.ServicerContext, caller: str) -> None:
        """One partition's items of a split batch, sent as one batch to its owner; their outcomes into place."""
        address = ""
        try:
            address = await self._address_of(part, True)
            request = b"".join(length_delimited(spb.SettleBatchRequest.ITEMS_FIELD_NUMBER, item) for item in items)
            reply = await self._call(address, path, "unary_unary")(request, timeout=context.time_remaining(),
                                                                    metadata=((FORWARDED_FOR, caller),))
            answers = read_batch_items(reply)
            if answers is None or len(answers) != len(items):
                raise RuntimeError(f"the owner at {address} answered a batch of {len(items)} with another")
            FORWARDED_CALLS.labels(name, "OK").inc()
        except Exception as exc:
            _, reason = self._outcome(name, address, exc)
            answers = [self._refused_item(exc, reason)] * len(items)
        for i, answer in zip(indices, answers, strict=True):
            outcomes[i] = answer

    def _refused_item(self, exc: Exception, reason: str) -> bytes:
        """A SettleOutcome refusing an item as its partition's call was refused: the owner's status as it sent it,
        or this node's (OWNER_UNAVAILABLE, NOT_PARTITION_OWNER ...)."""
        if isinstance(exc, grpc.aio.AioRpcError) and _answered(exc):
            details = dict(exc.trailing_metadata() or ())[STATUS_DETAILS]
            return length_delimited(spb.SettleOutcome.REFUSED_FIELD_NUMBER, details)
        if isinstance(exc, YidiError):
            return convert.settle_outcome(exc)
        if reason == "OWNER_UNAVAILABLE":
            return convert.settle_outcome(YidiError(reason, retry_after_ms=self.gw.config.overload_retry_after_ms))
        return convert.settle_outcome(internal_error(SETTLE_BATCH, self.gw))

    async def _address_of(self, part: int, mutating: bool) -> str:
        """Where partition ``part``'s share of a call goes (its copy of a call every partition answers, its items
        of a split batch): its owner; for this node's own partition, this node itself unless a change must go to
        its owner (this node a standby)."""
        if part != self.gw.store.part:
            await self._look_up(part)
            return self.owner.owner_address(part)
        return (self.owner.owner_address() if mutating else None) or self.owner.self_address()

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
    return Forwarder(owner, gw, config, RequestPartitions(gw) if config.partitions > 1 else None)

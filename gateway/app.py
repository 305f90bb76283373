"""The gateway's state: reference index, lifecycle engine, ledger, idempotency.

One object, owned by the event loop.  Every mutating RPC goes through
:meth:`Gateway.mutate`: idempotency check → decide (may refuse, changes
nothing) → apply to memory → append to the ledger → reply once durable.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from google.protobuf.message import Message

from core import Index
from core.engine import Engine
from core.errors import YidiError
from core.limits import check_id

from ._pb.yidi.v1 import admin_pb2
from .auth import current_caller
from .config import Config
from .ledger import GroupCommitLedger, Record, Store

log = logging.getLogger("yidi.gateway")

REFERENCE_KEY = "reference"


@dataclass(slots=True)
class LoadedState:
    """What a rebuild produces: swapped in whole, never half."""

    engine: Engine
    # (caller, request_id) -> (request digest, ledger seq)
    requests: dict[tuple[str, str], tuple[bytes, Any]]
    data_dir: str
    last_seq: int
    loaded_at_unix_ms: int


def request_digest(request: Message) -> bytes:
    """The canonical fingerprint of a request, for SPEC §6 idempotency."""
    return hashlib.blake2b(request.SerializeToString(deterministic=True), digest_size=16).digest()


def data_dir_of(store: Store, default: str) -> str:
    """The data set to load: the last one the national operator loaded, else the default."""
    # Filter by kind: a caller-chosen filing_id may be the string "reference" too.
    loads = [r for r in store.find_key(REFERENCE_KEY) if r.kind == "reference_loaded"]
    return orjson.loads(loads[-1].body)["data_dir"] if loads else default


def build_state(config: Config, store: Store, data_dir: str,
                progress: Callable[[str, int], None] | None = None) -> LoadedState:
    """Load reference data, then replay the ledger on top of it (blocking)."""
    index = Index(accepted_card_versions=config.accepted_card_versions)
    index.load_dir(data_dir, progress)
    engine = Engine(index)
    requests: dict[tuple[str, str], tuple[bytes, Any]] = {}
    replayed = 0
    for record in store.scan():
        engine.apply(orjson.loads(record.body))
        if record.request_id:
            requests[(record.caller, record.request_id)] = (record.digest, record.seq)
        replayed += 1
        if progress is not None and replayed % 100_000 == 0:
            progress("ledger", replayed)
    if progress is not None:
        progress("ledger", replayed)
    return LoadedState(engine, requests, os.path.abspath(data_dir), store.last_seq(), int(time.time() * 1000))


class Gateway:
    def __init__(self, config: Config, store: Store, on_fatal: Callable[[BaseException], None]) -> None:
        self.config = config
        self.store = store
        self.on_fatal = on_fatal
        self.ledger = GroupCommitLedger(store, max_batch=config.ledger_max_batch, on_fatal=on_fatal)
        self.state: LoadedState | None = None
        self._paused = False  # while reference data is being swapped

    @property
    def engine(self) -> Engine:
        self.require_ready()
        return self.state.engine

    def require_ready(self) -> None:
        if self.state is None or self._paused:
            raise YidiError("NOT_READY", "结算网关正在加载数据，请稍后重试（可使用相同的请求ID重试）。")

    async def rebuild(self, progress: Callable[[str, int], None] | None = None) -> None:
        data_dir = data_dir_of(self.store, self.config.data_dir)
        self.state = await asyncio.to_thread(build_state, self.config, self.store, data_dir, progress)
        self.ledger.start()

    # --------------------------------------------------------- mutation
    async def mutate(self, request: Message, decide: Callable[[], dict],
                     respond: Callable[[dict], Message]) -> bytes:
        """Run one mutating request exactly once (SPEC §6) and reply once durable."""
        caller, digest, prior = self._prior(request)
        if prior is not None:
            return await prior
        requests = self.state.requests
        event = decide()
        body = orjson.dumps(event)
        response = self._apply(event, respond)
        done = asyncio.get_running_loop().create_future()
        requests[(caller, request.request_id)] = (digest, done)
        record = Record(kind=event["type"], caller=caller, request_id=request.request_id,
                        digest=digest, key=event_key(event), body=body, response=response)
        try:
            seq = await self.ledger.append(record)
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: waiters see it, asyncio does not warn
            raise
        requests[(caller, request.request_id)] = (digest, seq)
        done.set_result(response)
        return response

    def _prior(self, request: Message):
        """(caller, digest, the first answer's awaitable or None) for a mutating request."""
        caller = current_caller()
        check_id(request.request_id, "请求ID request_id", "INVALID_REQUEST_ID")
        digest = request_digest(request)
        self.require_ready()
        prior = self.state.requests.get((caller, request.request_id))
        if prior is None:
            return caller, digest, None
        if prior[0] != digest:
            raise YidiError(
                "IDEMPOTENCY_KEY_REUSED",
                f"请求ID {request.request_id} 已用于另一笔不同的请求，本次请求未处理。请为新业务使用新的请求ID。",
            )
        return caller, digest, self._first_answer(caller, request.request_id, prior[1])

    def _apply(self, event: dict, respond: Callable[[dict], Message]) -> bytes:
        """Apply an event to memory and build its response; a failure here is a bug."""
        try:
            self.state.engine.apply(event)
            return respond(event).SerializeToString()
        except BaseException as exc:  # memory may now differ from the ledger
            log.critical("apply failed for a %s event; restarting to rebuild from the ledger", event.get("type"))
            self.on_fatal(exc)
            raise

    async def _first_answer(self, caller: str, request_id: str, seq_or_future: Any) -> bytes:
        if isinstance(seq_or_future, asyncio.Future):
            return await asyncio.shield(seq_or_future)
        record = await asyncio.to_thread(self.store.find_request, caller, request_id)
        assert record is not None, "an acknowledged request must be in the ledger"
        return record.response

    async def ledger_record(self, key: str, kind: str) -> dict | None:
        """The body of the first durable ledger record of this kind for key."""
        for record in await asyncio.to_thread(self.store.find_key, key):
            if record.kind == kind:
                return orjson.loads(record.body)
        return None

    # ------------------------------------------------- reference reload
    async def reload_reference(self, data_dir: str, request: Message) -> bytes:
        """Load a new data set; on a rejected load keep serving the old one."""
        _, _, prior = self._prior(request)
        if prior is not None:
            return await prior
        # Build from everything durable so far: pause every Yidi RPC (NOT_READY) and drain the ledger.
        self._paused = True
        try:
            await self.ledger.flush()
            state = await asyncio.to_thread(build_state, self.config, self.store, data_dir)
        finally:
            self._paused = False
        old, self.state = self.state, state
        try:
            return await self.mutate(
                request,
                lambda: {"type": "reference_loaded", "data_dir": state.data_dir,
                         "meta": dict(state.engine.index.meta)},
                self.respond_status,
            )
        except BaseException:
            self.state = old
            raise

    def respond_status(self, _event: dict | None = None) -> Message:
        state = self.state
        meta = state.engine.index.meta
        return admin_pb2.ReferenceDataStatus(
            data_dir=state.data_dir,
            counts=state.engine.index.counts(),
            seed=int(meta.get("seed", 0) or 0),
            version=str(meta.get("version", "")),
            ledger_seq=self.store.last_seq(),
            loaded_at_unix_ms=state.loaded_at_unix_ms,
        )

    async def close(self) -> None:
        await self.ledger.close()
        self.store.close()


def event_key(event: dict) -> str:
    """The object an event is about, for ledger queries."""
    kind = event["type"]
    if kind == "settled":
        return event["settlement"]["setl_id"]
    if kind == "settlement_cancelled":
        return event["setl_id"]
    if kind == "admitted":
        return event["visit"]["mdtrt_id"]
    if kind in ("filed", "filing"):
        return event["filing"]["filing_id"]
    if kind == "reference_loaded":
        return REFERENCE_KEY
    return event["mdtrt_id"]

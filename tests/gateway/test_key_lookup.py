"""The idempotency index is asked off the event loop, and exactly-once holds across that await: identical
requests racing settle once, and a key begun while a look-up is out is never taken for new."""
from __future__ import annotations

import asyncio
import threading
import builders
from builders import HK_L1
from concurrent.futures import ThreadPoolExecutor

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import admin_pb2, settlement_pb2 as spb
from gateway.store import SqliteStore
from gateway.store import idempotency
from gateway.store.idempotency import Keys, key_hash
from gateway.testing import seal_key

METHOD = "/yidi.v1.SettlementService/OutpatientSettle"


def racing(names, n: int) -> spb.OutpatientSettleRequest:
    return builders.outpatient(f"race-{n}", names["psn"]["in_service"], HK_L1, date=20260315, price=1000 + n,
                               qty_milli=1000)


async def read_index(keys: Keys, caller: str, request_ids: list[str]):
    """Keys.read_index as execute_many calls it: each key's hash computed once, beside it (the ledger's answer)."""
    return (await keys.read_index(caller, request_ids, [key_hash(caller, r) for r in request_ids]))[0]


def test_the_look_up_thread_answers_off_the_loop(tmp_path):
    store = SqliteStore(str(tmp_path / "ledger.sqlite"), seal_key())
    keys = Keys(store, capacity=2)
    on: list[str] = []
    ask = store.known_request_hashes

    def known(hashes):
        on.append(threading.current_thread().name)
        return ask(hashes)

    store.known_request_hashes = known
    try:
        looked = asyncio.run(read_index(keys, "460000", ["a", "b", "a", ""]))
    finally:
        store.close()
    assert looked == {"a": None, "b": None} and on and all(name.startswith("yidi-keys") for name in on)


def test_look_ups_of_one_turn_of_the_loop_go_in_one_query(tmp_path):
    store = SqliteStore(str(tmp_path / "ledger.sqlite"), seal_key())
    keys = Keys(store, capacity=2)
    queries: list[int] = []
    ask = store.known_request_hashes

    def known(hashes):
        queries.append(len(hashes))
        return ask(hashes)

    store.known_request_hashes = known

    async def main():
        return await asyncio.gather(read_index(keys, "460000", ["x"]), read_index(keys, "440000", ["x", "y"]),
                                    read_index(keys, "460000", ["z"]))

    try:
        answers = asyncio.run(main())
    finally:
        store.close()
    assert answers == [{"x": None}, {"x": None, "y": None}, {"z": None}] and queries == [4]


def test_a_key_begun_while_its_look_up_is_out_is_not_taken_for_new(tmp_path):
    """Begun, made durable and pushed out of a two-key cache while the look-up was out: the look-up's answer
    must leave it out, or the caller would settle it a second time."""
    store = SqliteStore(str(tmp_path / "ledger.sqlite"), seal_key())
    keys = Keys(store, capacity=2)

    async def main():
        out = asyncio.ensure_future(read_index(keys, "460000", ["k", "fresh"]))
        await asyncio.sleep(0)          # the look-up is on its thread now; its answer comes back through the loop
        done = asyncio.get_running_loop().create_future()
        keys.begin("460000", "k", b"d" * 16, b"answer", done, 7)
        keys.durable("460000", "k", 7)
        for n in range(2):
            keys.remember("460000", f"newer-{n}", b"e" * 16, 8 + n)
        return await out

    try:
        looked = asyncio.run(main())
    finally:
        store.close()
    assert looked == {"fresh": None}


def test_a_settled_key_is_hashed_once(tmp_path, monkeypatch):
    """The path execute_many takes (look the key up in the ledger and in memory, begin it, make it durable) reuses
    the hash it was given: key_hash is not computed again on the way; a later look-up finds the key by it."""
    store = SqliteStore(str(tmp_path / "ledger.sqlite"), seal_key())
    keys = Keys(store, capacity=2)
    h = key_hash("460000", "once")
    computed: list[tuple[str, str]] = []

    def counted(caller: str, request_id: str) -> bytes:
        computed.append((caller, request_id))
        return key_hash(caller, request_id)

    monkeypatch.setattr(idempotency, "key_hash", counted)

    async def main():
        looked, _ = await keys.read_index("460000", ["once"], [h])
        assert keys.lookup("460000", "once", b"d" * 16, looked, h) is None
        done = asyncio.get_running_loop().create_future()
        keys.begin("460000", "once", b"d" * 16, b"answer", done, 1, h)
        keys.durable("460000", "once", 1)

    try:
        asyncio.run(main())
        assert computed == []
        assert keys.find("460000", "once", {}) is not None and computed == [("460000", "once")]
    finally:
        store.close()


def test_identical_requests_racing_settle_once(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--idempotency-cache-keys", "2")
    national = gw.client("national")
    before = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest()).ledger_seq
    keys, copies = 12, 6
    clients = [gw.client("460000") for _ in range(3)]   # three connections, so the copies arrive together
    calls = [(clients[i % 3], n) for n in range(keys) for i in range(copies)]
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda c: c[0].raw(METHOD, racing(names, c[1])), calls))
    by_key: dict[int, set[bytes]] = {}
    for (_client, n), answer in zip(calls, answers, strict=True):
        by_key.setdefault(n, set()).add(answer)
    assert all(len(seen) == 1 for seen in by_key.values())      # every copy got the first one's answer
    after = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest()).ledger_seq
    assert after - before == keys                                # one record per key
    setl_ids = {spb.SettlementResponse.FromString(next(iter(seen))).settlement.setl_id for seen in by_key.values()}
    assert len(setl_ids) == keys

"""Idempotency in bounded memory: an old key, long out of the in-memory cache, still replays byte for byte."""
from __future__ import annotations

import grpc

from datagen.spec_fixture import write_spec_dataset
from builders import outpatient
from gateway._pb.yidi.v1 import settlement_pb2 as spb

METHOD = "/yidi.v1.SettlementService/OutpatientSettle"


def keyed(names, n: int, price: int = 1250) -> spb.OutpatientSettleRequest:
    """The in-service person's outpatient bill under key op-n."""
    return outpatient(f"op-{n}", names["psn"]["in_service"], names["inst"]["hk_l1"], price=price, qty_milli=1000)


def test_a_key_dropped_from_memory_is_answered_from_the_ledger(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--idempotency-cache-keys", "2")
    hainan = gw.client("460000")
    first = [hainan.raw(METHOD, keyed(names, n)) for n in range(6)]   # keys 0..3 leave the cache
    assert [hainan.raw(METHOD, keyed(names, n)) for n in range(6)] == first
    code, reason, _ = hainan.refused(hainan.settlement.OutpatientSettle, keyed(names, 0, price=1251))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert gw.stop() == 0
    # After a restart (every key replayed from the ledger, only two kept), the same answers again.
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--idempotency-cache-keys", "2")
    hainan = gw.client("460000")
    assert [hainan.raw(METHOD, keyed(names, n)) for n in range(6)] == first


def test_a_batch_looks_up_its_new_keys_at_once_and_still_finds_old_ones(tmp_path, gateways):
    """SettleBatch asks the ledger once which of its keys exist (Keys.new_keys); keys long out of memory
    must still replay, a reused one is still refused, and the new ones are settled once."""
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--idempotency-cache-keys", "2")
    hainan = gw.client("460000")
    first = [hainan.raw(METHOD, keyed(names, n)) for n in range(6)]   # keys 0..3 leave the cache
    items = [spb.SettleItem(outpatient=keyed(names, n)) for n in (0, 7, 1, 8, 5)]
    items.append(spb.SettleItem(outpatient=keyed(names, 2, price=1251)))   # key 2 reused for another bill
    outcomes = hainan(hainan.settlement.SettleBatch, spb.SettleBatchRequest(items=items)).outcomes
    replays = [o.settlement.SerializeToString() for o in (outcomes[0], outcomes[2], outcomes[4])]
    assert replays == [first[0], first[1], first[5]]
    assert outcomes[5].WhichOneof("outcome") == "refused" and "IDEMPOTENCY_KEY_REUSED" in outcomes[5].refused.message
    setl_id = [o.settlement.settlement.setl_id for o in outcomes[:5]]
    assert all(setl_id) and len(set(setl_id)) == 5          # two new settlements beside three old ones
    again = hainan(hainan.settlement.SettleBatch, spb.SettleBatchRequest(items=items[:5])).outcomes
    assert [o.SerializeToString() for o in again] == [o.SerializeToString() for o in outcomes[:5]]

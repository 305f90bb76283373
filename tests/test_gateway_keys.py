"""Idempotency in bounded memory: an old key, long out of the in-memory cache, still replays byte for byte."""
from __future__ import annotations

import grpc

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

METHOD = "/yidi.v1.SettlementService/OutpatientSettle"


def outpatient(names, n: int, price: int = 1250) -> spb.OutpatientSettleRequest:
    return spb.OutpatientSettleRequest(
        request_id=f"op-{n}", psn_no=names["psn"]["in_service"], fixmedins_code=names["inst"]["hk_l1"],
        setl_date=20260315, lines=[pb.FeeLine(feedetl_sn="1", code="XA01", unit_price_fen=price, qty_milli=1000)])


def test_a_key_dropped_from_memory_is_answered_from_the_ledger(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--idempotency-cache-keys", "2")
    hainan = gw.client("460000")
    first = [hainan.raw(METHOD, outpatient(names, n)) for n in range(6)]   # keys 0..3 leave the cache
    assert [hainan.raw(METHOD, outpatient(names, n)) for n in range(6)] == first
    code, reason, _ = hainan.refused(hainan.settlement.OutpatientSettle, outpatient(names, 0, price=1251))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert gw.stop() == 0
    # After a restart (every key replayed from the ledger, only two kept), the same answers again.
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--idempotency-cache-keys", "2")
    hainan = gw.client("460000")
    assert [hainan.raw(METHOD, outpatient(names, n)) for n in range(6)] == first

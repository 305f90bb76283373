"""A SettleBatch over the item limit is refused with BATCH_TOO_LARGE from its item count, before any item is
decoded: items that could not be decoded at all do not change the answer, and the count is exact."""
from __future__ import annotations

import random

import grpc
import pytest

import builders
from builders import HK_L1
from core import count_field
from core.errors import YidiError
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.config import Config
from gateway.transport import convert

LIMIT = Config().batch_max_items
BATCH = "/yidi.v1.SettlementService/SettleBatch"
ITEMS = spb.SettleBatchRequest.ITEMS_FIELD_NUMBER
# A SettleItem whose outpatient member is not protobuf at all: a length running past its end.
GARBAGE_ITEM = b"\x0a\x05\x0a\x7f\x00"


def item(n: int) -> spb.SettleItem:
    return spb.SettleItem(outpatient=builders.outpatient(f"lim-{n}", "P0", HK_L1, date=20260315, qty_milli=1000))


def framed(items: list[bytes], unknown_first: bool = False) -> bytes:
    """SettleBatchRequest bytes from item bytes; ``unknown_first``: an unknown field before them, which the
    core's fast reader leaves to upb (upb then decodes every item, and fails on a malformed one)."""
    head = b"\xa8\x06\x01" if unknown_first else b""   # field 101, varint 1
    return head + b"".join(convert.length_delimited(ITEMS, x) for x in items)


def call(gw, raw: bytes):
    """(status code, reason) of a SettleBatch sent as these bytes, or ("OK", outcomes)."""
    client = gw.client("460000")
    rpc = client.channel.unary_unary(BATCH, request_serializer=lambda b: b,
                                     response_deserializer=spb.SettleBatchResponse.FromString)
    try:
        return "OK", rpc(raw, timeout=30).outcomes
    except grpc.RpcError as err:
        from gateway.transport.status import reason_of

        return err.code().name, reason_of(err)


@pytest.mark.parametrize("unknown_first", [False, True])
def test_an_oversize_batch_with_undecodable_items_is_batch_too_large(gw, unknown_first):
    good = item(0).SerializeToString()
    raw = framed([good] * LIMIT + [GARBAGE_ITEM], unknown_first)
    assert call(gw, raw) == ("INVALID_ARGUMENT", "BATCH_TOO_LARGE")
    # Not one item of these could be decoded, and the answer is the same: nothing was decoded to give it.
    assert call(gw, framed([GARBAGE_ITEM] * (LIMIT + 1), unknown_first)) == ("INVALID_ARGUMENT", "BATCH_TOO_LARGE")


def test_a_batch_at_the_limit_is_decoded_item_by_item(gw):
    raw = framed([item(n).SerializeToString() for n in range(LIMIT - 1)] + [GARBAGE_ITEM])
    status, outcomes = call(gw, raw)
    assert status == "OK" and len(outcomes) == LIMIT
    assert outcomes[-1].WhichOneof("outcome") == "refused" and "INVALID_ARGUMENT" in outcomes[-1].refused.message
    # The same bytes with an unknown field before them: upb decodes the whole batch and refuses it whole.
    assert call(gw, framed([item(0).SerializeToString()] + [GARBAGE_ITEM], True)) == ("INVALID_ARGUMENT",
                                                                                      "INVALID_ARGUMENT")


def test_the_limit_is_decided_without_decoding_items():
    """In process: over the limit, convert.batch_items refuses bytes whose items are not messages at all."""
    with pytest.raises(YidiError) as refused:
        convert.batch_items(framed([GARBAGE_ITEM] * 3), limit=2)
    assert refused.value.reason == "BATCH_TOO_LARGE"
    assert [x.reason for x in convert.batch_items(framed([GARBAGE_ITEM] * 2), limit=2)] == ["INVALID_ARGUMENT"] * 2


def test_the_count_is_the_number_of_items_upb_reads():
    rng = random.Random(15)
    for _ in range(200):
        batch = spb.SettleBatchRequest(items=[item(n) for n in range(rng.randrange(0, 40))])
        raw = batch.SerializeToString()
        if rng.random() < 0.5:   # unknown fields of every wire type between the items
            raw = b"\xa8\x06\x01" + raw + b"\xad\x06\x01\x02\x03\x04" + b"\xa9\x06" + bytes(8) + b"\xaa\x06\x02hi"
        assert count_field(raw, ITEMS) == len(spb.SettleBatchRequest.FromString(raw).items)
    for bad in (b"\x0a\x05ab", b"\x0a", b"\x80", b"\x00\x01", b"\x0b\x0c", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"):
        assert count_field(bad, ITEMS) == -1, bad
    assert count_field(b"", ITEMS) == 0 and count_field(b"\x08\x01", ITEMS) == 0   # items with another wire type

"""Hostile input, built from the descriptors: every unary RPC gets generated requests and random bytes.

The strategies are derived from each request message's descriptor (gateway.server.SERVICES), so an RPC
added later is covered without a line here. Strings take unicode extremes, NUL and lengths past the
bounds; integers their int32/int64 extremes; enums unknown values; dates like 20250229; repeated
fields duplicates. Each call must either succeed or be refused with a status that is neither INTERNAL
nor UNKNOWN, carrying an ErrorInfo reason and a bounded message; a refusal changes nothing (the
ledger's seq stays). The gateway must still answer at the end. YIDI_HOSTILE_EXAMPLES (default 12)
sets the examples per RPC.
"""
from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf import message_factory
from hypothesis import HealthCheck, given, settings, strategies as st

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import admin_pb2, diagnostics_pb2 as dpb, settlement_pb2 as spb
from gateway.server import SERVICES
from gateway.status import reason_of
from gateway_harness import file_person, start_gateway

EXAMPLES = int(os.environ.get("YIDI_HOSTILE_EXAMPLES", "12"))
CALLERS = ("460000", "210000", "440000", "national")
TRIED = {"inputs": 0}

UNARY = [(f"/{svc.full_name}/{m.name}", message_factory.GetMessageClass(m.input_type))
         for svc, _ in SERVICES for m in svc.methods if not m.client_streaming and not m.server_streaming]

STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "\x00", "P\x00X", "H46010000003", "2300000000000003", "S000000000000001",
                     "M000000000000001", "A" * 41, "药" * 400, "\U0001F600" * 300, "\u202e", " ", "x" * 1025]),
    st.text(min_size=1000, max_size=1200),
)
INTS = st.one_of(st.integers(-3, 3), st.sampled_from([20250229, 20260230, 20261301, 19000101, 99991231, 202613,
                                                       2**31 - 1, -2**31, 2**63 - 1, -2**63, 10**15]))


def message_strategy(descriptor, depth: int = 0):
    """A strategy for dicts of field name -> value for this message (nested messages as dicts)."""
    fields = {}
    for f in descriptor.fields:
        if f.type == F.TYPE_STRING:
            value = STRINGS
        elif f.type == F.TYPE_BYTES:
            value = st.binary(max_size=40)
        elif f.type == F.TYPE_BOOL:
            value = st.booleans()
        elif f.type == F.TYPE_ENUM:
            value = st.integers(-1, len(f.enum_type.values) + 2)
        elif f.type == F.TYPE_MESSAGE:
            if depth >= 2 or f.message_type.GetOptions().map_entry:
                continue
            value = message_strategy(f.message_type, depth + 1)
        elif f.cpp_type in (F.CPPTYPE_INT32, F.CPPTYPE_INT64, F.CPPTYPE_UINT32, F.CPPTYPE_UINT64):
            value = INTS
        else:
            continue
        if f.is_repeated:
            value = st.lists(value, max_size=3).map(lambda xs: xs + xs[:1])   # one duplicate
        fields[f.name] = value
    return st.fixed_dictionaries({}, optional=fields)


def build(cls, values: dict):
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        try:
            if field.is_repeated:
                target = getattr(message, name)
                for item in value:
                    if field.type == F.TYPE_MESSAGE:
                        added = target.add()
                        added.CopyFrom(build(type(added), item))
                    else:
                        target.append(_fit(field, item))
            elif field.type == F.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(build(type(getattr(message, name)), value))
            else:
                setattr(message, name, _fit(field, value))
        except (ValueError, TypeError):
            pass   # a value the field's type cannot hold at all (e.g. 2**63 in an int32) is not sent
    return message


def _fit(field, value):
    if field.type == F.TYPE_ENUM and field.enum_type.is_closed:
        return field.enum_type.values[0].number
    return value


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    names = write_spec_dataset(base / "data")
    server = start_gateway(names["dir"], str(base / "ledger.sqlite"))
    file_person(server.client("210000"), "PH-1", "21010219800101061")
    yield server
    print(f"\nhostile inputs tried: {TRIED['inputs']}")
    assert server.stop() == 0


def seq(gw) -> int:
    national = gw.client("national")
    return national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest()).ledger_seq


def check(gw, client, path: str, raw: bytes) -> None:
    TRIED["inputs"] += 1
    before = seq(gw)
    rpc = client.channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        rpc(raw, timeout=30)
        return
    except grpc.RpcError as err:
        assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (path, err.code(), err.details())
        assert reason_of(err), (path, err.code(), err.details())
        assert len(err.details() or "") <= 1100, (path, len(err.details()))
    assert seq(gw) == before, f"{path} refused but the ledger moved"


@pytest.mark.parametrize("path,cls", UNARY, ids=[p.rsplit("/", 1)[1] for p, _ in UNARY])
def test_generated_requests_are_answered_or_refused_with_a_reason(gw, path, cls):
    clients = {c: gw.client(c) for c in CALLERS}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(values=message_strategy(cls.DESCRIPTOR), caller=st.sampled_from(CALLERS))
    def run(values, caller):
        check(gw, clients[caller], path, build(cls, values).SerializeToString())

    run()


@pytest.mark.parametrize("path,cls", UNARY, ids=[p.rsplit("/", 1)[1] for p, _ in UNARY])
def test_random_bytes_on_the_wire(gw, path, cls):
    client = gw.client("460000")

    @settings(max_examples=max(4, EXAMPLES // 2), deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    @given(raw=st.binary(max_size=300))
    def run(raw):
        check(gw, client, path, raw)

    run()


def _field(number: int, payload: bytes) -> bytes:
    return bytes([(number << 3) | 2, len(payload)]) + payload


def test_psn_no_of_one_person_with_the_certno_of_another_is_refused(gw):
    """Both members of the person oneof on the wire: upb would keep one and settle the wrong person."""
    hainan = gw.client("460000")
    request = spb.OutpatientSettleRequest(request_id="hostile-two-persons", psn_no="PH-1",
                                          fixmedins_code="H46010000003", setl_date=20260315)
    certno = spb.OutpatientSettleRequest.DESCRIPTOR.fields_by_name["certno"].number
    raw = request.SerializeToString() + _field(certno, b"11010119900101999X")
    before = seq(gw)
    rpc = hainan.channel.unary_unary("/yidi.v1.SettlementService/OutpatientSettle")
    with pytest.raises(grpc.RpcError) as refused:
        rpc(raw, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert seq(gw) == before


def test_the_gateway_still_answers_after_all_of_it(gw):
    hainan = gw.client("460000")
    hainan(hainan.diagnostics.Ping, dpb.PingRequest())
    assert TRIED["inputs"] > 0

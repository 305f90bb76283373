"""The settle paths of a gateway, each driven the same way, and what they answered and recorded, as bytes.

A *call* is one request as its caller sends it: (caller, unary method, request message, SettleItem member or
"" for a request no batch carries).  A *group* is a run of calls that a batch or a stream may carry together
(every call batchable and from one caller).  A path sends a group and returns one *answer* per call:
``("ok", the unary answer's bytes)``, exactly as sent, or ``("refused", the google.rpc.Status bytes)`` (its
details in canonical form: ``refused``):

* ``unary``: each call through its unary RPC (a refusal's Status is its ``grpc-status-details-bin`` trailer);
* ``batch``: the group as one SettleBatch (each SettleOutcome's nested answer, unparsed);
* ``stream``: the group through one SettleStream.

Calls no batch carries go through their unary RPC on every path.  A new path is a function of the same
shape added to ``SENDERS`` (and, if it needs its own gateway options, to the test's ``PATHS``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from core import commands as cmd
from gateway._pb.yidi.v1 import common_pb2 as pb, filing_pb2 as fpb, settlement_pb2 as spb
from gateway.testing import Client

HAINAN, LIAONING = "460000", "210000"
_OUTCOME = spb.SettleOutcome
_REFUSED = _OUTCOME.REFUSED_FIELD_NUMBER
_STATUS_TRAILER = "grpc-status-details-bin"


class Call(NamedTuple):
    caller: str
    method: str          # "/yidi.v1.Service/Method"
    request: Message
    item: str            # the SettleItem member that carries it, "" if none does


Answer = tuple[str, bytes]


def call_of(command: cmd.Command) -> Call:
    """The request a platform sends for a command of the settlement traffic (tests/settle_traffic.py)."""
    if isinstance(command, cmd.OutpatientSettle):
        request = spb.OutpatientSettleRequest(
            request_id=command.request_id, psn_no=command.person.psn_no, fixmedins_code=command.fixmedins_code,
            setl_date=command.setl_date, lines=_lines(command.lines), acct_used_flag=command.acct_used_flag,
            acct_mulaid_flag=command.acct_mulaid_flag)
        return Call(HAINAN, "/yidi.v1.SettlementService/OutpatientSettle", request, "outpatient")
    if isinstance(command, cmd.Admit):
        request = spb.AdmitRequest(request_id=command.request_id, psn_no=command.person.psn_no,
                                   fixmedins_code=command.fixmedins_code, adm_date=command.adm_date)
        return Call(HAINAN, "/yidi.v1.SettlementService/Admit", request, "admit")
    if isinstance(command, cmd.UploadFees):
        request = spb.UploadFeesRequest(request_id=command.request_id, mdtrt_id=command.mdtrt_id,
                                        lines=_lines(command.lines))
        return Call(HAINAN, "/yidi.v1.SettlementService/UploadFees", request, "fees")
    if isinstance(command, cmd.DischargeSettle):
        request = spb.DischargeSettleRequest(
            request_id=command.request_id, mdtrt_id=command.mdtrt_id, dscg_date=command.dscg_date,
            acct_used_flag=command.acct_used_flag, acct_mulaid_flag=command.acct_mulaid_flag,
            mid_setl_flag=command.mid_setl_flag)
        return Call(HAINAN, "/yidi.v1.SettlementService/DischargeSettle", request, "discharge")
    if isinstance(command, cmd.WithdrawFees):
        request = spb.WithdrawFeesRequest(request_id=command.request_id, mdtrt_id=command.mdtrt_id,
                                          feedetl_sns=list(command.sns))
        return Call(HAINAN, "/yidi.v1.SettlementService/WithdrawFees", request, "")
    if isinstance(command, cmd.CancelSettlement):
        request = spb.CancelSettlementRequest(request_id=command.request_id, setl_id=command.setl_id,
                                              cancel_date=command.cancel_date)
        return Call(HAINAN, "/yidi.v1.SettlementService/CancelSettlement", request, "")
    if isinstance(command, cmd.AdjustAccount):
        request = fpb.AdjustAccountRequest(request_id=command.request_id, psn_no=command.psn_no,
                                           amount_fen=command.amount_fen, reason=command.reason)
        return Call(LIAONING, "/yidi.v1.FilingService/AdjustAccount", request, "")
    raise TypeError(f"no request for {type(command).__name__}")


def _lines(lines) -> list[pb.FeeLine]:
    return [pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, name=x.name, unit_price_fen=x.unit_price_fen,
                       qty_milli=x.qty_milli, fee_date=x.fee_date, init_feedetl_sn=x.init_feedetl_sn)
            for x in lines]


def groups(calls: list[Call], most: int) -> list[list[Call]]:
    """Runs of batchable calls from one caller (at most ``most`` each); any other call alone."""
    out: list[list[Call]] = []
    for call in calls:
        last = out[-1] if out else None
        if call.item and last and last[0].item and last[0].caller == call.caller and len(last) < most:
            last.append(call)
        else:
            out.append([call])
    return out


# ------------------------------------------------------------ the wire, read as sent
def fields(raw: bytes) -> list[tuple[int, bytes]]:
    """The top-level length-delimited fields of protobuf bytes, (number, bytes as sent), in order."""
    out, pos = [], 0
    while pos < len(raw):
        key, pos = _varint(raw, pos)
        assert key & 7 == 2, f"field {key >> 3} is not length-delimited"
        size, pos = _varint(raw, pos)
        out.append((key >> 3, raw[pos:pos + size]))
        pos += size
    return out


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def outcome_answer(outcome: bytes) -> Answer:
    """A SettleOutcome's bytes as an answer: the nested unary answer or the refusal's Status."""
    [(number, inner)] = fields(outcome)
    return refused(inner) if number == _REFUSED else ("ok", inner)


_DETAILS = {cls.DESCRIPTOR.full_name: cls for cls in (error_details_pb2.ErrorInfo, error_details_pb2.LocalizedMessage,
                                                     error_details_pb2.BadRequest, error_details_pb2.RetryInfo)}


def refused(status: bytes) -> Answer:
    """A refusal's google.rpc.Status bytes with each detail written again deterministically: upb writes the
    entries of a map field (ErrorInfo.metadata) in an order that differs from one process to the next."""
    message = status_pb2.Status.FromString(status)
    for detail in message.details:
        inner = _DETAILS[detail.TypeName()]()
        detail.Unpack(inner)
        detail.Pack(inner, deterministic=True)
    return ("refused", message.SerializeToString(deterministic=True))


# ------------------------------------------------------------ the paths
def _unary_one(client: Client, call: Call) -> Answer:
    rpc = client.channel.unary_unary(call.method, request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=lambda b: b)
    try:
        return ("ok", rpc(call.request, timeout=30))
    except grpc.RpcError as err:
        trailers = dict(err.trailing_metadata() or ())
        assert _STATUS_TRAILER in trailers, f"{call.method} failed without a status of ours: {err}"
        return refused(trailers[_STATUS_TRAILER])


def send_unary(client: Client, group: list[Call]) -> list[Answer]:
    return [_unary_one(client, call) for call in group]


def _items(group: list[Call]) -> list[spb.SettleItem]:
    return [spb.SettleItem(**{call.item: call.request}) for call in group]


def send_batch(client: Client, group: list[Call]) -> list[Answer]:
    if not group[0].item:
        return send_unary(client, group)
    raw = client.raw("/yidi.v1.SettlementService/SettleBatch", spb.SettleBatchRequest(items=_items(group)))
    outcomes = fields(raw)
    assert [n for n, _ in outcomes] == [spb.SettleBatchResponse.OUTCOMES_FIELD_NUMBER] * len(group)
    return [outcome_answer(o) for _, o in outcomes]


def send_stream(client: Client, group: list[Call]) -> list[Answer]:
    if not group[0].item:
        return send_unary(client, group)
    rpc = client.channel.stream_stream("/yidi.v1.SettlementService/SettleStream",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=lambda b: b)
    return [outcome_answer(o) for o in rpc(iter(_items(group)), timeout=30)]


SENDERS: dict[str, Callable[[Client, list[Call]], list[Answer]]] = {
    "unary": send_unary, "batch": send_batch, "stream": send_stream}

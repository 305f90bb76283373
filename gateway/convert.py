"""Translation between protobuf messages and the core's commands, rows and results.

Translation only: shapes and enum names.  Business rules stay in ``core``.
``encode_reply(result)`` turns a core result into the response bytes that are
sent and stored in the ledger record (so a replay is byte for byte the same).
"""
from __future__ import annotations

from typing import Callable

from core import commands as cmd
from core.errors import YidiError
from core.events import Breakdown, FeeLine, Filing, Person

from .privacy import mask_certno
from ._pb.yidi.v1 import admin_pb2 as apb
from ._pb.yidi.v1 import common_pb2 as pb
from ._pb.yidi.v1 import filing_pb2 as fpb
from ._pb.yidi.v1 import settlement_pb2 as spb


class EnumMap:
    """proto enum <-> SPEC string, e.g. FILING_KIND_REFERRAL <-> "referral"."""

    def __init__(self, enum, prefix: str, what: str, by_number: bool = False) -> None:
        self.to_str: dict[int, str] = {}
        for value in enum.DESCRIPTOR.values:
            if value.number == 0:
                continue
            self.to_str[value.number] = str(value.number) if by_number else value.name[len(prefix):].lower()
        self.to_pb = {s: n for n, s in self.to_str.items()}
        self.what = what

    def str(self, number: int, *, required: bool = True) -> str:
        if number == 0 and not required:
            return ""
        try:
            return self.to_str[number]
        except KeyError:
            allowed = "、".join(self.to_str.values())
            raise YidiError("INVALID_ENUM", f"{self.what}取值 {number} 无效，应为：{allowed}。") from None

    def pb(self, value: str) -> int:
        return self.to_pb.get(value, 0)


INSUTYPE = EnumMap(pb.Insutype, "INSUTYPE_", "险种 insutype ", by_number=True)
PERSON_TYPE = EnumMap(pb.PersonType, "PERSON_TYPE_", "人员类别 person_type ")
PERSON_STATUS = EnumMap(pb.PersonStatus, "PERSON_STATUS_", "参保状态 status ")
FILING_KIND = EnumMap(pb.FilingKind, "FILING_KIND_", "备案类型 kind ")
FILING_STATUS = EnumMap(pb.FilingStatus, "FILING_STATUS_", "备案状态 status ")
VISIT_KIND = EnumMap(pb.VisitKind, "VISIT_KIND_", "就诊类型 ")
VISIT_STATUS = EnumMap(pb.VisitStatus, "VISIT_STATUS_", "就诊状态 ")
SETTLEMENT_STATUS = EnumMap(pb.SettlementStatus, "SETTLEMENT_STATUS_", "结算状态 ")


# ------------------------------------------------------------- rows
def person(p: pb.Person) -> Person:
    return Person(psn_no=p.psn_no, certno=p.certno, name=p.name, insuplc_admdvs=p.insuplc_admdvs,
                  insutype=INSUTYPE.str(p.insutype), person_type=PERSON_TYPE.str(p.person_type),
                  status=PERSON_STATUS.str(p.status), assistance=p.assistance, card_no=p.card_no,
                  card_version=p.card_version)


def person_pb(row: dict) -> pb.Person:
    return pb.Person(
        psn_no=row["psn_no"], certno=mask_certno(row["certno"]), name=row["name"],
        insuplc_admdvs=row["insuplc_admdvs"], insutype=INSUTYPE.pb(row["insutype"]),
        person_type=PERSON_TYPE.pb(row["person_type"]), status=PERSON_STATUS.pb(row["status"]),
        assistance=row["assistance"], card_no=row.get("card_no", ""), card_version=row.get("card_version", ""),
    )


def filing(f: pb.Filing) -> Filing:
    return Filing(filing_id=f.filing_id, psn_no=f.psn_no, kind=FILING_KIND.str(f.kind), dest_admdvs=f.dest_admdvs,
                  fixmedins_codes=tuple(f.fixmedins_codes), valid_from=f.valid_from, valid_to=f.valid_to,
                  status=FILING_STATUS.str(f.status, required=False) or "active")


def filing_revision(f: pb.Filing) -> Filing:
    """A revision: kind and status may be left unset (unchanged)."""
    return Filing(
        filing_id=f.filing_id, psn_no=f.psn_no, kind=FILING_KIND.str(f.kind, required=False),
        dest_admdvs=f.dest_admdvs, fixmedins_codes=tuple(f.fixmedins_codes), valid_from=f.valid_from,
        valid_to=f.valid_to, status=FILING_STATUS.str(f.status, required=False))


def filing_pb(row: Filing | dict) -> pb.Filing:
    if isinstance(row, Filing):
        row = row.as_row()
    return pb.Filing(
        filing_id=row["filing_id"], psn_no=row["psn_no"], kind=FILING_KIND.pb(row["kind"]),
        dest_admdvs=row["dest_admdvs"], fixmedins_codes=row["fixmedins_codes"], valid_from=row["valid_from"],
        valid_to=row["valid_to"], status=FILING_STATUS.pb(row["status"]),
    )


def fee_lines(lines) -> tuple[FeeLine, ...]:
    return tuple(FeeLine(x.feedetl_sn, x.code, x.name, x.unit_price_fen, x.qty_milli, x.fee_date) for x in lines)


def person_id(req) -> cmd.PersonId:
    """The patient of a request with a ``person`` oneof (psn_no | certno)."""
    return cmd.PersonId(psn_no=req.psn_no, certno=req.certno)


def card(req) -> cmd.Card | None:
    return cmd.Card(req.card.card_no, req.card.card_version) if req.HasField("card") else None


# ---------------------------------------------------------- commands
def file_command(req: fpb.FileRequest) -> cmd.FilePerson:
    return cmd.FilePerson(request_id=req.request_id, person=person(req.person), filing=filing(req.filing))


def admit_command(req: spb.AdmitRequest) -> cmd.Admit:
    return cmd.Admit(request_id=req.request_id, person=person_id(req), fixmedins_code=req.fixmedins_code,
                     adm_date=req.adm_date, card=card(req), ipt_no=req.ipt_no)


def outpatient_command(req: spb.OutpatientSettleRequest) -> cmd.OutpatientSettle:
    return cmd.OutpatientSettle(request_id=req.request_id, person=person_id(req), fixmedins_code=req.fixmedins_code,
                                setl_date=req.setl_date, lines=fee_lines(req.lines), card=card(req))


# ------------------------------------------------------------ replies
def settlement_pb(s: cmd.SettlementView) -> pb.Settlement:
    b: Breakdown = s.breakdown
    return pb.Settlement(
        setl_id=s.setl_id, mdtrt_id=s.mdtrt_id, psn_no=s.psn_no, psn_name=s.psn_name,
        fixmedins_code=s.fixmedins_code, fixmedins_name=s.fixmedins_name, insuplc_admdvs=s.insuplc_admdvs,
        mdtrtarea_admdvs=s.mdtrtarea_admdvs, visit_kind=VISIT_KIND.pb(s.visit_kind), insutype=INSUTYPE.pb(s.insutype),
        filing_id=s.filing_id, filing_kind=FILING_KIND.pb(s.filing_kind), setl_date=s.setl_date,
        policy_effective_from=s.policy_effective_from,
        breakdown=pb.Breakdown(**{f: getattr(b, f) for f in Breakdown.__struct_fields__}),
        lines=[pb.LineResult(feedetl_sn=x.feedetl_sn, code=x.code, chrgitm_lv=x.chrgitm_lv,
                             det_item_fee_sumamt=x.det_item_fee_sumamt, fulamt_ownpay_amt=x.fulamt_ownpay_amt,
                             overlmt_selfpay=x.overlmt_selfpay, preselfpay_amt=x.preselfpay_amt,
                             inscp_scp_amt=x.inscp_scp_amt)
               for x in s.lines],
        status=SETTLEMENT_STATUS.pb(s.status),
    )


def recorded_settlement(reply: bytes, status: str, cancel_date: int) -> pb.Settlement:
    """A settlement as its ledger record answered it, with its status as it stands now."""
    settlement = spb.SettlementResponse.FromString(reply).settlement
    settlement.status = SETTLEMENT_STATUS.pb(status)
    settlement.cancel_date = cancel_date
    return settlement


def reference_status_pb(r: cmd.ReferenceResult) -> apb.ReferenceDataStatus:
    return apb.ReferenceDataStatus(data_dir=r.data_dir, counts=r.counts, seed=r.seed, version=r.version,
                                   ledger_seq=r.ledger_seq, loaded_at_unix_ms=r.loaded_at_unix_ms,
                                   snapshot_seq=r.snapshot_seq)


def _admit_reply(r: cmd.AdmitResult) -> spb.AdmitResponse:
    v = r.visit
    return spb.AdmitResponse(mdtrt_id=v.mdtrt_id, psn_no=v.psn_no, psn_name=r.psn_name, filing_id=v.filing_id,
                             filing_kind=FILING_KIND.pb(v.filing_kind), insuplc_admdvs=v.insuplc_admdvs,
                             mdtrtarea_admdvs=v.mdtrtarea_admdvs, fixmedins_level=v.fixmedins_level)


def _visit_reply(r: cmd.VisitResult) -> spb.VisitResponse:
    return spb.VisitResponse(mdtrt_id=r.mdtrt_id, status=VISIT_STATUS.pb(r.status), line_count=r.line_count,
                             medfee_sumamt=r.medfee_sumamt)


_REPLIES: dict[type, Callable] = {
    cmd.FilingResult: lambda r: fpb.FilingResponse(filing=filing_pb(r.filing)),
    cmd.AdmitResult: _admit_reply,
    cmd.VisitResult: _visit_reply,
    cmd.SettlementView: lambda r: spb.SettlementResponse(settlement=settlement_pb(r)),
    cmd.CancelResult: lambda r: spb.SettlementResponse(
        settlement=recorded_settlement(r.original_reply, "cancelled", r.cancel_date)),
    cmd.ReferenceResult: reference_status_pb,
    cmd.ReverseResult: lambda r: _reverse_reply(r),
}

REVERSE_OUTCOME = EnumMap(spb.ReverseOutcome, "REVERSE_OUTCOME_", "冲正结果 ")


def _reverse_reply(r: cmd.ReverseResult) -> spb.ReverseResponse:
    reply = spb.ReverseResponse(outcome=REVERSE_OUTCOME.pb(r.outcome), original_request_id=r.original_request_id)
    if isinstance(r.inner, cmd.CancelResult):
        reply.settlement.CopyFrom(recorded_settlement(r.inner.original_reply, "cancelled", r.inner.cancel_date))
    elif isinstance(r.inner, cmd.VisitResult):
        reply.visit.CopyFrom(_visit_reply(r.inner))
    return reply


def encode_reply(result: cmd.Result) -> bytes:
    """The response bytes of a result: sent, and stored in the ledger record for replays."""
    return _REPLIES[type(result)](result).SerializeToString()

"""Translation between protobuf messages and the core's commands, rows and results.

Translation only: shapes and enum names.  Business rules stay in ``core``.
``encode_reply(result)`` turns a core result into the response bytes that are
sent and stored in the ledger record (so a replay is byte for byte the same).
"""
from __future__ import annotations

from typing import Callable

import hashlib
import time

import msgspec

from google.protobuf.message import DecodeError

from core import commands as cmd
from core.archive import ArchivedProblem, ProblemNote
from core import (ACCUMULATOR_KEYS, Wire, count_field, length_delimited, read_batch, read_outpatient,
                  read_outpatient_item, read_settle_item)
from core.errors import YidiError
from core.events import FeeLine, Filing, Person
from core.funds import PROBLEM_OVERDUE_DAYS, RISK_FLAG_VALUES, Figures, Position, Report, risk_flag_values

from ..security import bounds
from ..security.privacy import mask_certno
from .._pb.yidi.v1 import admin_pb2 as apb
from .._pb.yidi.v1 import common_pb2 as pb
from .._pb.yidi.v1 import filing_pb2 as fpb
from .._pb.yidi.v1 import funds_pb2 as fdpb
from .._pb.yidi.v1 import problems_pb2 as ppb
from .._pb.yidi.v1 import settlement_pb2 as spb
from .status import status_proto


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
            raise YidiError("INVALID_ENUM", what=f"{self.what}取值 {number}", problem=f"无效，应为：{allowed}") from None

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
WARNING_LEVEL = EnumMap(fdpb.WarningLevel, "WARNING_LEVEL_", "预警级别 ")
DIFFERENCE_KIND = EnumMap(fdpb.DifferenceKind, "DIFFERENCE_KIND_", "差异类型 ")
PROBLEM_CATEGORY = EnumMap(ppb.ProblemCategory, "PROBLEM_CATEGORY_", "问题类别 category ")
MED_TYPE = EnumMap(pb.MedType, "MED_TYPE_", "医疗类别 med_type ")
PROBLEM_STATE = EnumMap(ppb.ProblemState, "PROBLEM_STATE_", "问题状态 state ")
DAY_MS = 86_400_000


def risk_flags_pb(flags: int) -> list[int]:
    """Core flag bits (core.funds.RISK_FLAGS) -> RiskFlag values."""
    return list(risk_flag_values(flags))


_RISK_FLAG_BIT = {value: bit for bit, value in enumerate(RISK_FLAG_VALUES)}


def risk_flags_mask(values) -> int:
    """RiskFlag values -> core flag bits (every flag when none is named)."""
    mask = 0
    for value in values:
        if value not in _RISK_FLAG_BIT:
            raise YidiError("INVALID_ENUM", what=f"风险标记取值 {value}",
                            problem=f"无效，应为 {min(_RISK_FLAG_BIT)}–{max(_RISK_FLAG_BIT)}", field="flags")
        mask |= 1 << _RISK_FLAG_BIT[value]
    return mask or (1 << len(RISK_FLAG_VALUES)) - 1


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
    return tuple(FeeLine(x.feedetl_sn, x.code, x.name, x.unit_price_fen, x.qty_milli, x.fee_date, x.init_feedetl_sn)
                 for x in lines)


def person_id(req) -> cmd.PersonId:
    """The patient of a request with a ``person`` oneof (psn_no | certno)."""
    return cmd.PersonId(psn_no=req.psn_no, certno=req.certno)


def card(req) -> cmd.Card | None:
    return cmd.Card(req.card.card_no, req.card.card_version) if req.HasField("card") else None


# ---------------------------------------------------------- commands
def file_command(req: fpb.FileRequest) -> cmd.FilePerson:
    return cmd.FilePerson(request_id=req.request_id, person=person(req.person), filing=filing(req.filing))


def credential(cert_type: str, cert_no: str) -> cmd.Credential | None:
    """SPEC §10.5: the patient's credential, stamped with the UTC minute it arrived (for a voucher's expiry)."""
    if not cert_type and not cert_no:
        return None
    now = time.gmtime()
    minute = (((now.tm_year * 100 + now.tm_mon) * 100 + now.tm_mday) * 100 + now.tm_hour) * 100 + now.tm_min
    return cmd.Credential(cert_type, cert_no, minute)


def admit_command(req: spb.AdmitRequest) -> cmd.Admit:
    return cmd.Admit(request_id=req.request_id, person=person_id(req), fixmedins_code=req.fixmedins_code,
                     adm_date=req.adm_date, card=card(req), ipt_no=req.ipt_no,
                     credential=credential(req.mdtrt_cert_type, req.mdtrt_cert_no), emergency=req.emergency)


def outpatient_command(req: spb.OutpatientSettleRequest) -> cmd.OutpatientSettle:
    return cmd.OutpatientSettle(request_id=req.request_id, person=person_id(req), fixmedins_code=req.fixmedins_code,
                                setl_date=req.setl_date, lines=fee_lines(req.lines), card=card(req),
                                acct_used_flag=req.acct_used_flag, acct_mulaid_flag=req.acct_mulaid_flag,
                                med_type=MED_TYPE.str(req.med_type, required=False), dise_codg=req.dise_codg,
                                credential=credential(req.mdtrt_cert_type, req.mdtrt_cert_no))


def outpatient_wire(raw: bytes) -> Wire:
    """OutpatientSettleRequest bytes → command, read by the core when they are canonical (most are), else by upb.
    The core makes the command itself unless it names a credential (stamped here with its arrival minute) or a
    medical type (named here)."""
    req = read_outpatient(raw)
    if type(req) is Wire:
        return req
    if req is None:
        req = parse(spb.OutpatientSettleRequest, raw, "请求")
        return Wire(outpatient_command(req), request_digest(req))
    command = cmd.OutpatientSettle(
        request_id=req.request_id, person=cmd.PersonId(req.psn_no, req.certno), fixmedins_code=req.fixmedins_code,
        setl_date=req.setl_date, lines=req.lines, card=req.card, acct_used_flag=req.acct_used_flag,
        acct_mulaid_flag=req.acct_mulaid_flag, med_type=MED_TYPE.str(req.med_type, required=False),
        dise_codg=req.dise_codg, credential=credential(req.mdtrt_cert_type, req.mdtrt_cert_no))
    # canonical bytes are the deterministic serialization: the digest is the one request_digest would give
    return Wire(command, hashlib.blake2b(raw, digest_size=16).digest())


def request_digest(request) -> bytes:
    """The canonical fingerprint of a request, for SPEC §6 idempotency."""
    return hashlib.blake2b(request.SerializeToString(deterministic=True), digest_size=16).digest()


# ------------------------------------------------------------ replies
def recorded_settlement(reply: bytes, status: str, cancel_date: int, cancel_clearing_month: int = 0) -> pb.Settlement:
    """A settlement as its ledger record answered it, with its status as it stands now."""
    settlement = spb.SettlementResponse.FromString(reply).settlement
    settlement.status = SETTLEMENT_STATUS.pb(status)
    settlement.cancel_date = cancel_date
    settlement.cancel_clearing_month = cancel_clearing_month
    return settlement


# ------------------------------------------------------------ funds (SPEC §8)
def position_pb(p: Position, province_name: str) -> fdpb.Position:
    return fdpb.Position(
        province=p.province, province_name=province_name, prepaid_fen=p.prepaid_fen, drawn_fen=p.drawn_fen,
        given_back_fen=p.given_back_fen, used_fen=p.used_fen, balance_fen=p.balance_fen, usage_bp=p.usage_bp,
        level=WARNING_LEVEL.pb(p.level), top_up_demand_fen=p.top_up_demand_fen, yellow_bp=p.yellow_bp,
        red_bp=p.red_bp, topped_up_fen=p.topped_up_fen)


def month_pb(r: cmd.MonthResult) -> fdpb.ClearingMonth:
    return fdpb.ClearingMonth(month=r.month, closed=r.closed, confirmed=list(r.confirmed))


def report_pb(r: Report, province_name, institution_name) -> fdpb.ClearingReport:
    """A clearing report; ``province_name(code)`` and ``institution_name(code)`` name what it shows."""
    provinces = {p for pair in r.pairs for p in (pair.insured, pair.treatment)} | {n.province for n in r.nets}
    return fdpb.ClearingReport(
        month=r.month, closed=r.closed, confirmed=r.confirmed, totals=fdpb.ClearingTotals(**r.totals),
        pairs=[fdpb.ProvincePair(insured_province=p.insured, treatment_province=p.treatment,
                                 totals=fdpb.ClearingTotals(**p.totals)) for p in r.pairs],
        institutions=[fdpb.InstitutionTotals(fixmedins_code=i.fixmedins_code, fixmedins_name=institution_name(i.fixmedins_code),
                                             treatment_province=i.treatment, totals=fdpb.ClearingTotals(**i.totals))
                      for i in r.institutions],
        net_positions=[fdpb.NetPosition(province=n.province, receivable_fen=n.receivable_fen, payable_fen=n.payable_fen,
                                        net_fen=n.net_fen) for n in r.nets],
        province_names={p: province_name(p) or "" for p in provinces})


def account_pb(r: cmd.AccountResult) -> fpb.AccountResponse:
    return fpb.AccountResponse(psn_no=r.psn_no, balc=r.balance_fen, mulaid_psn_nos=r.mulaid_psn_nos,
                               mulaid_balc=r.mulaid_balances_fen)


def explanation_pb(x: dict) -> spb.SettlementExplanation:
    """SPEC §10.7 (core.engine.Engine.explanation) as its message."""
    def acc(values: tuple, chronic: tuple | None) -> pb.Accumulators:
        extra = ([pb.ChronicAccumulators(dise_codg=x["dise_codg"], deductible_used_fen=chronic[0],
                                         fund_paid_fen=chronic[1])] if chronic else [])
        return pb.Accumulators(psn_no=x["psn_no"], year=x["year"], chronic=extra,
                               **dict(zip(ACCUMULATOR_KEYS, values, strict=True)))

    layers = [spb.LayerExplanation(
        layer=layer["layer"], base_fen=layer["base_fen"], ratio_bp=layer.get("ratio_bp", 0), cap_fen=layer["cap_fen"],
        room_before_fen=layer["room_before_fen"], paid_fen=layer["paid_fen"],
        cumulative_before_fen=layer.get("cumulative_before_fen", 0), threshold_fen=layer.get("threshold_fen", 0),
        tiers=[spb.CriticalIllnessTier(**t) for t in layer.get("tiers", ())]) for layer in x["layers"]]
    lines = [spb.LineExplanation(
        feedetl_sn=ln["feedetl_sn"], code=ln["code"], chrgitm_lv=ln["chrgitm_lv"], selfpay_bp=ln["selfpay_bp"],
        price_cap_fen=ln["price_cap_fen"], unit_price_fen=ln["unit_price_fen"], qty_milli=ln["qty_milli"],
        det_item_fee_sumamt=ln["amount_fen"], fulamt_ownpay_amt=ln["fulamt_ownpay_amt"],
        overlmt_selfpay=ln["overlmt_selfpay"], preselfpay_amt=ln["preselfpay_amt"],
        inscp_scp_amt=ln["inscp_scp_amt"]) for ln in x["lines"]]
    return spb.SettlementExplanation(
        setl_id=x["setl_id"], policy_admdvs=x["policy_admdvs"], insutype=int(x["insutype"]),
        policy_effective_from=x["policy_effective_from"], catalog_province=x["catalog_province"],
        chronic_entry=x["chronic_entry"], dise_codg=x["dise_codg"], fixmedins_level=x["fixmedins_level"],
        retired=x["retired"], filing_kind=FILING_KIND.pb(x["filing_kind"]), base_ratio_bp=x["base_ratio_bp"],
        retired_bonus_bp=x["retired_bonus_bp"], reduction_bp=x["reduction_bp"], deductible_fen=x["deductible_fen"],
        lines=lines, layers=layers, before=acc(x["accumulators_before"], x.get("chronic_before")),
        after=acc(x["accumulators_after"], x.get("chronic_after")),
        accounts=[spb.AccountDraw(psn_no=p, amount_fen=a) for p, a in x["accounts"]],
        breakdown=pb.Breakdown(**msgspec.structs.asdict(x["breakdown"])), recomputed_equal=x["recomputed_equal"],
        mid_setl_flag=x["mid_setl_flag"])


def admitted_pb(row: dict) -> spb.AdmittedPatient:
    return spb.AdmittedPatient(**dict(row, filing_kind=FILING_KIND.pb(row["filing_kind"])))


def figures(f: fdpb.ReconcileFigures) -> Figures:
    return Figures(f.count, f.medfee_sumamt, f.fund_pay_sumamt, f.psn_cash_pay, f.acct_pay_sumamt)


def figures_pb(f: Figures) -> fdpb.ReconcileFigures:
    return fdpb.ReconcileFigures(count=f.count, medfee_sumamt=f.medfee_sumamt, fund_pay_sumamt=f.fund_pay_sumamt,
                                 psn_cash_pay=f.psn_cash_pay, acct_pay_sumamt=f.acct_pay_sumamt)



# ------------------------------------------------------------ problem reports
def problem_pb(row: ArchivedProblem, now_ms: int) -> ppb.Problem:
    """A report with its age as at now_ms (or its resolution): overdue if open more than PROBLEM_OVERDUE_DAYS."""
    f = row.facts
    until = row.resolved_at_ms if row.state == "resolved" else now_ms
    age_days = max(0, until - f.opened_at_ms) // DAY_MS
    return ppb.Problem(
        problem_id=f.problem_id, reporter=f.reporter, category=PROBLEM_CATEGORY.pb(f.category), text=f.text,
        setl_id=f.setl_id, mdtrt_id=f.mdtrt_id, treatment_province=f.treatment_province,
        insured_province=f.insured_province, opened_at_unix_ms=f.opened_at_ms, state=PROBLEM_STATE.pb(row.state),
        assignee=row.assignee, resolution=row.resolution, updated_at_unix_ms=row.updated_at_ms,
        resolved_at_unix_ms=row.resolved_at_ms, age_days=age_days,
        overdue=row.state == "open" and age_days > PROBLEM_OVERDUE_DAYS)


def note_pb(n: ProblemNote) -> ppb.ProblemNote:
    return ppb.ProblemNote(action=n.action, by=n.by, text=n.text, at_unix_ms=n.at_ms)


def reference_status_pb(r: cmd.ReferenceResult) -> apb.ReferenceDataStatus:
    return apb.ReferenceDataStatus(data_dir=r.data_dir, counts=r.counts, seed=r.seed, version=r.version,
                                   ledger_seq=r.ledger_seq, loaded_at_unix_ms=r.loaded_at_unix_ms,
                                   snapshot_seq=r.snapshot_seq, ledger_commits=r.ledger_commits,
                                   ledger_commit_records=r.ledger_commit_records)


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
    cmd.CancelResult: lambda r: spb.SettlementResponse(
        settlement=recorded_settlement(r.original_reply, "cancelled", r.cancel_date, r.clearing_month)),
    cmd.ReferenceResult: reference_status_pb,
    cmd.ReverseResult: lambda r: _reverse_reply(r),
    cmd.PositionResult: lambda r: position_pb(r.position, r.province_name),
    cmd.MonthResult: month_pb,
    cmd.AccountResult: account_pb,
    cmd.ProblemResult: lambda r: ppb.ProblemResponse(problem=problem_pb(r.problem, r.problem.updated_at_ms)),
}

REVERSE_OUTCOME = EnumMap(spb.ReverseOutcome, "REVERSE_OUTCOME_", "冲正结果 ")


def _reverse_reply(r: cmd.ReverseResult) -> spb.ReverseResponse:
    reply = spb.ReverseResponse(outcome=REVERSE_OUTCOME.pb(r.outcome), original_request_id=r.original_request_id)
    if isinstance(r.inner, cmd.CancelResult):
        reply.settlement.CopyFrom(recorded_settlement(r.inner.original_reply, "cancelled", r.inner.cancel_date))
    elif isinstance(r.inner, cmd.VisitResult):
        reply.visit.CopyFrom(_visit_reply(r.inner))
    return reply


def discharge_command(req: spb.DischargeSettleRequest) -> cmd.DischargeSettle:
    return cmd.DischargeSettle(request_id=req.request_id, mdtrt_id=req.mdtrt_id, dscg_date=req.dscg_date,
                               acct_used_flag=req.acct_used_flag, acct_mulaid_flag=req.acct_mulaid_flag,
                               mid_setl_flag=req.mid_setl_flag)


def parse(request_cls, raw: bytes, what: str):
    """Bytes the core's reader left to upb, with the checks every request gets (gateway/security/bounds.py): decoding,
    every string and list bounded, and at most one member of each oneof on the wire."""
    try:
        req = request_cls.FromString(raw)
    except DecodeError:
        raise YidiError("INVALID_ARGUMENT", what=f"{what}报文", problem="无法解析，请检查接口版本与报文格式") from None
    bounds.check(req, len(raw))
    bounds.oneof_guard(request_cls.DESCRIPTOR).check(raw)
    return req


def _upb_wire(request_cls, to_command, what: str):
    def read(raw: bytes) -> Wire:
        req = parse(request_cls, raw, what)
        return Wire(to_command(req), request_digest(req))
    return read


def upload_fees_command(req: spb.UploadFeesRequest) -> cmd.UploadFees:
    return cmd.UploadFees(request_id=req.request_id, mdtrt_id=req.mdtrt_id, lines=fee_lines(req.lines))


# A batch or stream item, by its SettleItem field: the unary RPC it stands for (its access rule), its reader,
# and the SettleOutcome field of its answer.
_ITEM, _OUTCOME = spb.SettleItem, spb.SettleOutcome
SETTLE_ITEMS = {
    _ITEM.OUTPATIENT_FIELD_NUMBER: ("SettlementService/OutpatientSettle", outpatient_wire,
                                    _OUTCOME.SETTLEMENT_FIELD_NUMBER),
    _ITEM.DISCHARGE_FIELD_NUMBER: ("SettlementService/DischargeSettle",
                                   _upb_wire(spb.DischargeSettleRequest, discharge_command, "出院结算"),
                                   _OUTCOME.SETTLEMENT_FIELD_NUMBER),
    _ITEM.ADMIT_FIELD_NUMBER: ("SettlementService/Admit", _upb_wire(spb.AdmitRequest, admit_command, "入院登记"),
                               _OUTCOME.ADMITTED_FIELD_NUMBER),
    _ITEM.FEES_FIELD_NUMBER: ("SettlementService/UploadFees",
                              _upb_wire(spb.UploadFeesRequest, upload_fees_command, "费用明细上传"),
                              _OUTCOME.VISIT_FIELD_NUMBER),
}
_NOT_AN_ITEM = {"what": "批量项", "problem": "须为门诊结算、出院结算、入院登记或费用明细上传之一，或报文无法解析"}


_OUTPATIENT_ITEM = SETTLE_ITEMS[_ITEM.OUTPATIENT_FIELD_NUMBER][0], _OUTCOME.SETTLEMENT_FIELD_NUMBER


def settle_item(raw: bytes) -> tuple[str, Wire, int] | YidiError:
    """A SettleItem's bytes → (its unary RPC, its request, its answer's field), or the refusal in its place."""
    read = read_outpatient_item(raw, *_OUTPATIENT_ITEM)   # the usual item, read whole by the core
    return read if read is not None else _settle_item(raw)


def _settle_item(raw: bytes) -> tuple[str, Wire, int] | YidiError:
    """settle_item of an item the core did not read whole."""
    split = read_settle_item(raw)
    if split is not None:
        field, request = split.field, split.request
    else:  # not the usual shape: let upb read it (it may still be a valid item)
        try:
            item = spb.SettleItem.FromString(raw)
        except DecodeError:
            return YidiError("INVALID_ARGUMENT", **_NOT_AN_ITEM)
        kind = item.WhichOneof("settle")
        if kind is None:
            return YidiError("INVALID_ARGUMENT", **_NOT_AN_ITEM)
        field, request = _ITEM.DESCRIPTOR.fields_by_name[kind].number, getattr(item, kind).SerializeToString()
    method, read, answer_field = SETTLE_ITEMS[field]
    try:
        return method, read(request), answer_field
    except YidiError as err:
        return err


def batch_items(raw: bytes, limit: int) -> list:
    """SettleBatchRequest bytes → each item's (unary RPC, request) or refusal; BATCH_TOO_LARGE over ``limit``
    items, decided from the items' tags in the bytes before any item is decoded."""
    count = count_field(raw, spb.SettleBatchRequest.ITEMS_FIELD_NUMBER)
    if count > limit:
        raise YidiError("BATCH_TOO_LARGE", limit=limit, count=count)
    items = read_batch(raw, *_OUTPATIENT_ITEM)
    if items is not None:   # outpatient settlements read whole by the core, the other items as bytes
        return [x if type(x) is tuple else _settle_item(x) for x in items]
    try:
        items = [x.SerializeToString() for x in spb.SettleBatchRequest.FromString(raw).items]
    except DecodeError:
        raise YidiError("INVALID_ARGUMENT", what="批量结算报文", problem="无法解析，请检查接口版本与报文格式") from None
    if len(items) > limit:   # bytes count_field could not walk (a group in them) but upb could
        raise YidiError("BATCH_TOO_LARGE", limit=limit, count=len(items))
    return [settle_item(x) for x in items]


def settle_outcome(outcome: bytes | YidiError, answer_field: int = _OUTCOME.SETTLEMENT_FIELD_NUMBER) -> bytes:
    """A SettleOutcome: the unary answer's bytes as they are (so a replay is identical), or the refusal."""
    if isinstance(outcome, YidiError):
        return length_delimited(_OUTCOME.REFUSED_FIELD_NUMBER, status_proto(outcome).SerializeToString())
    return length_delimited(answer_field, outcome)


def settle_batch_reply(outcomes: list[bytes]) -> bytes:
    """SettleBatchResponse from encoded SettleOutcomes."""
    return b"".join([length_delimited(spb.SettleBatchResponse.OUTCOMES_FIELD_NUMBER, o) for o in outcomes])


def encode_reply(result: cmd.Result) -> bytes:
    """The response bytes of a result: sent, and stored in the ledger record for replays."""
    if type(result) is cmd.Reply:  # written by the core itself (a settlement)
        return result.data
    return _REPLIES[type(result)](result).SerializeToString()

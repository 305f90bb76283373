"""Settlements (结算, SPEC §5, §6, §10): outpatient, discharge and mid-stay settlement, cancellation and 冲正.

A settlement is decided once: the core computes the benefit (``Index.bill``,
SPEC §5), the accounts pay part of the personal share (SPEC §10.1), the
funds decide its risk flags and clearing month (SPEC §7, §8), and the core
writes the answer's bytes.  The event carries every result (amounts,
accumulator deltas, account draws), so applying it, live or on replay, only
adds what was recorded; a cancellation takes back exactly that.

The person's year accumulators live in the index; a chronic disease's own
accumulators (SPEC §10.2) are kept here (``chronic``).
"""
from __future__ import annotations

from typing import Callable, Iterable

import msgspec

from . import lines as fee_lines
from .accounts import Accounts
from .archive import Archive, ArchivedSettlement, ArchivedVisit, PutSettlement, PutVisit, SettlementCancelledChange, VisitStatus
from .commands import (
    CancelAdmission, CancelResult, CancelSettlement, Decision, DischargeSettle, OutpatientSettle, Reply, Reverse,
    ReverseResult,
)
from .errors import YidiError, invariant
from .events import (
    Admitted, Breakdown, Event, FeeLine, RequestReversed, SettlementCancelled, SettlementFacts, Settled,
    settlement_id,
)
from .filing import Filings
from .funds import Funds, booking_of, risk_flag_values
from .limits import check_date, check_id, check_line_count
from .money import ACCUMULATOR_KEYS
from .visits import ADMITTED, CANCELLED, INPATIENT, OUTPATIENT, SETTLED, Visit, Visits
from ._core import FILING_KINDS, Index, untracked
from ._wire_numbers import (
    MED_TYPE_CHRONIC, MED_TYPE_UNSPECIFIED, SETTLEMENT_STATUS_SETTLED, SETTLEMENT_STATUS_UNSPECIFIED,
    VISIT_KIND_INPATIENT, VISIT_KIND_OUTPATIENT, FilingKind,
)

CHRONIC = "chronic"   # med_type of an outpatient chronic-disease settlement (SPEC §10.2)

# The contract's values (generated from common.proto) of the enums an answer carries, by the core's names; a name
# the contract lacks fails here, at import.
_VISIT_KIND_PB = {INPATIENT: VISIT_KIND_INPATIENT, OUTPATIENT: VISIT_KIND_OUTPATIENT}
_FILING_KIND_PB = {kind: FilingKind["FILING_KIND_" + kind.upper()] for kind in FILING_KINDS}


class Settlements:
    def __init__(self, index: Index, filings: Filings, visits: Visits, accounts: Accounts, funds: Funds,
                 chronic: list[tuple[str, int, str, int, int]] = ()) -> None:
        self.index = index
        self.filings = filings
        self.visits = visits
        self.accounts = accounts
        self.funds = funds
        # SPEC §10.2: (psn_no, year, dise_codg) -> (deductible used, fund paid), apart from general outpatient; keys
        # and values are tuples the collector does not track (core.untracked), so the dict is not walked by any
        # collection (a list per person and disease would be walked by every full one)
        self.chronic: dict[tuple[str, int, str], tuple[int, int]] = {untracked((p, y, c)): untracked((used, paid))
                                                                       for p, y, c, used, paid in chronic}

    @property
    def archive(self) -> Archive:
        return self.visits.archive

    def decisions(self) -> dict[type, Callable]:
        return {OutpatientSettle: self.decide_outpatient, DischargeSettle: self.decide_discharge,
                CancelSettlement: self.decide_cancel, Reverse: self.decide_reverse}

    def appliers(self) -> dict[type, Callable]:
        return {Settled: self.apply_settled, SettlementCancelled: self.apply_cancelled,
                RequestReversed: self.apply_request_reversed}

    # ------------------------------------------------------------ look-ups
    def settlement(self, setl_id: str) -> ArchivedSettlement:
        check_id(setl_id, "结算ID setl_id", field="setl_id")
        ref = self.archive.settlement(setl_id)
        if ref is None:
            raise YidiError("SETTLEMENT_NOT_FOUND", setl_id=setl_id)
        return ref

    def reply(self, ref: ArchivedSettlement) -> bytes:
        """The answer recorded with a settlement (NOT_READY in the moment before it is durable)."""
        reply = self.archive.reply(ref.seq)
        if reply is None:
            raise YidiError("NOT_READY", why=f"结算 {ref.facts.setl_id} 正在写入账本")
        return reply

    def accumulators(self, psn_no: str, year: int) -> dict[str, int]:
        return self.index.accumulators(psn_no, year)

    def chronic_accumulators(self, psn_no: str, year: int) -> list[tuple[str, int, int]]:
        """(dise_codg, deductible used, fund paid) of each chronic disease the person settled in the year."""
        return sorted((code, *values) for (p, y, code), values in self.chronic.items() if p == psn_no and y == year)

    def presettle(self, mdtrt_id: str, setl_date: int, acct_used_flag: bool = False,
                  acct_mulaid_flag: bool = False, mid_setl_flag: bool = False) -> bytes:
        """预结算: the settlement discharge would produce (a SettlementResponse), changing nothing."""
        visit = self.visits.open_visit(mdtrt_id)
        return self._settle(visit, "", setl_date, _lines_to_settle(visit, setl_date, mid_setl_flag, "setl_date"),
                            acct_used_flag, acct_mulaid_flag, mid=mid_setl_flag)[0].data

    # ------------------------------------------------------------ decide
    def decide_outpatient(self, cmd: OutpatientSettle, seq: int) -> Decision:
        """门诊一站式: eligibility, the visit, its lines and the settlement in one event."""
        psn_no = self.filings.patient(cmd.person, cmd.card, cmd.credential)
        check_date(cmd.setl_date, "结算日期", field="setl_date")
        card_no, card_version = (cmd.card.card_no, cmd.card.card_version) if cmd.card else (None, None)
        if cmd.med_type not in ("", CHRONIC):
            raise YidiError("INVALID_ENUM", what=f"医疗类别 {cmd.med_type!r}", problem="无效，应为普通门诊或门诊慢特病（14）",
                            field="med_type")
        if cmd.med_type == CHRONIC or cmd.dise_codg:
            if cmd.med_type != CHRONIC:
                raise YidiError("INVALID_ARGUMENT", what="病种编码 dise_codg", problem="只用于门诊慢特病结算（med_type 14）",
                                field="dise_codg")
            check_id(cmd.dise_codg, "门诊慢特病病种编码 dise_codg", field="dise_codg")
        elig = self.index.admission(psn_no, cmd.fixmedins_code, False, cmd.setl_date, card_no, card_version)
        if cmd.med_type == CHRONIC:  # SPEC §10.2 checks 10 and 11 (12, the policy, when the bill is computed)
            refusal = self.index.chronic_refusal(psn_no, cmd.fixmedins_code, cmd.dise_codg)
            if refusal is not None:
                raise refusal
        check_line_count(len(cmd.lines), "一次门诊")
        seen: set[str] = set()
        for i, line in enumerate(cmd.lines):
            fee_lines.check_fields(line, i)
            if line.feedetl_sn in seen:
                raise YidiError("FEE_LINE_CONFLICT", feedetl_sn=line.feedetl_sn, problem="在本次结算中重复出现")
            seen.add(line.feedetl_sn)
        fee_lines.check_refunds({line.feedetl_sn: line for line in cmd.lines}, cmd.lines, {})
        facts = Visits.new_visit(seq, psn_no, cmd.fixmedins_code, OUTPATIENT, cmd.setl_date, elig)
        reply, settlement, month = self._settle(Visit(facts), settlement_id(seq), cmd.setl_date, cmd.lines,
                                                cmd.acct_used_flag, cmd.acct_mulaid_flag, cmd.dise_codg)
        return Decision(Settled(settlement=settlement, visit=facts, lines=cmd.lines, clearing_month=month), reply)

    def decide_discharge(self, cmd: DischargeSettle, seq: int) -> Decision:
        """出院结算, or a mid-stay settlement (中途结算, SPEC §10.3) with mid_setl_flag."""
        visit = self.visits.open_visit(cmd.mdtrt_id)
        lines = _lines_to_settle(visit, cmd.dscg_date, cmd.mid_setl_flag)
        reply, facts, month = self._settle(visit, settlement_id(seq), cmd.dscg_date, lines,
                                           cmd.acct_used_flag, cmd.acct_mulaid_flag, mid=cmd.mid_setl_flag)
        return Decision(Settled(settlement=facts, lines=lines, clearing_month=month), reply)

    def decide_cancel(self, cmd: CancelSettlement, _seq: int) -> Decision:
        """结算撤销: gives back exactly the recorded deltas; an inpatient stay opens again."""
        ref = self.settlement(cmd.setl_id)
        if ref.status != SETTLED:
            raise YidiError("SETTLEMENT_ALREADY_CANCELLED", setl_id=cmd.setl_id, cancel_date=ref.cancel_date)
        check_date(cmd.cancel_date, "撤销日期", field="cancel_date")
        if cmd.cancel_date < ref.facts.setl_date:
            raise YidiError("INVALID_DATE", what=f"撤销日期 {cmd.cancel_date}",
                            problem=f"早于结算日期 {ref.facts.setl_date}，请核对",
                            field="cancel_date")
        facts = ref.facts
        if facts.mid_setl_flag:  # SPEC §10.3: only the stay's latest settlement
            stay = self.visits.open.get(facts.mdtrt_id)
            if stay is None or not stay.mids or stay.mids[-1][0] != cmd.setl_id:
                latest = stay.mids[-1][0] if stay is not None and stay.mids else "出院结算"
                raise YidiError("NOT_LATEST_SETTLEMENT", setl_id=cmd.setl_id, latest=latest)
        visit = self.archive.visit(facts.mdtrt_id)
        month = self.funds.booking_month(cmd.cancel_date)
        # A final settlement after mid ones: the mid-settled lines come back with the stay, as they were.
        settled_lines = tuple(line for sid, _d, _dedc in facts.stay_mids for line in self.settlement(sid).lines)
        event = SettlementCancelled(setl_id=cmd.setl_id, cancel_date=cmd.cancel_date, settlement=facts,
                                    visit=visit.facts if visit is not None else None, lines=ref.lines,
                                    clearing_month=month, settled_lines=settled_lines)
        return Decision(event, CancelResult(self.reply(ref), cmd.cancel_date, month))

    def decide_reverse(self, cmd: Reverse, seq: int) -> Decision:
        """冲正 (SPEC §6): cancel what the original did, exactly as a cancellation would; or mark it reversed.

        ``cmd`` names its target (``reversal``): the original's settlement or admission, or none."""
        if cmd.target_kind == "settlement":
            check_date(cmd.reverse_date, "冲正日期 reverse_date", field="reverse_date")
            decision = self.decide_cancel(CancelSettlement(
                request_id=cmd.request_id, setl_id=cmd.target_id, cancel_date=cmd.reverse_date), seq)
            outcome = "settlement_cancelled"
        elif cmd.target_kind == "admission":
            decision = self.visits.decide_cancel_admission(CancelAdmission(request_id=cmd.request_id,
                                                                           mdtrt_id=cmd.target_id), seq)
            outcome = "admission_cancelled"
        else:
            return Decision(RequestReversed(original_request_id=cmd.original_request_id),
                            ReverseResult("not_performed", cmd.original_request_id))
        return Decision(decision.event, ReverseResult(outcome, cmd.original_request_id, decision.result))

    # ----------------------------------------------------------- the benefit
    def _settle(self, visit: Visit, setl_id: str, setl_date: int, lines: tuple[FeeLine, ...],
                acct_used: bool = False, acct_mulaid: bool = False,
                dise_codg: str = "", mid: bool = False) -> tuple[Reply, SettlementFacts, int]:
        """The benefit of a visit's lines (SPEC §5): the answer (written by the core as protobuf bytes),
        the facts to record, and the clearing month it is booked in (0 for a pre-settlement)."""
        facts = visit.facts
        check_date(setl_date, "结算日期")
        if setl_date < facts.adm_date:
            raise YidiError("DATE_BEFORE_ADMISSION", what="结算日期", date=setl_date, adm_date=facts.adm_date)
        inpatient = facts.visit_kind == INPATIENT
        if not lines and not (inpatient and visit.mids and not mid):  # a stay settled in parts may close with none
            raise YidiError("NO_FEE_LINES")
        stay = None
        if inpatient and visit.mids:  # SPEC §10.3: the stay's D, less what its earlier settlements applied
            stay = (visit.stay_deductible_fen, sum(dedc for _s, _d, dedc in visit.mids))
        chronic = None
        used = paid = 0
        if dise_codg:  # SPEC §10.2: the disease's own accumulators of the settlement's year
            used, paid = self.chronic.get((facts.psn_no, setl_date // 10000, dise_codg), (0, 0))
            chronic = (dise_codg, used, paid)
        priced = fee_lines.net_lines(lines)   # SPEC §10.4: each original line with its net quantity
        bill = self.index.bill(facts.psn_no, facts.fixmedins_code, facts.filing_kind, inpatient, setl_date, priced,
                               chronic, stay)
        flags = self.funds.settlement_flags(  # SPEC §7: decided once, recorded, never blocking
            inpatient=inpatient, adm_date=facts.adm_date, setl_date=setl_date, high_cost=bill.high_cost,
            setl_id=setl_id, psn_no=facts.psn_no)
        month = self.funds.booking_month(setl_date) if setl_id else 0
        draws, acct_pay = (), 0
        if acct_used or acct_mulaid:  # SPEC §10.1: the accounts pay part of the in-policy personal share
            draws, acct_pay, mulaid_pay = self.accounts.draws(facts.psn_no, bill.acct_payable, acct_used, acct_mulaid)
            bill.set_accounts(acct_pay, mulaid_pay)
        reply = bill.settlement_response(
            setl_id=setl_id, mdtrt_id=facts.mdtrt_id, psn_no=facts.psn_no, psn_name=bill.person_name,
            fixmedins_code=facts.fixmedins_code, fixmedins_name=bill.institution_name,
            insuplc_admdvs=facts.insuplc_admdvs, mdtrtarea_admdvs=facts.mdtrtarea_admdvs,
            visit_kind=_VISIT_KIND_PB[facts.visit_kind], insutype=int(bill.insutype_code),  # its value is its code
            filing_id=facts.filing_id, filing_kind=_FILING_KIND_PB[facts.filing_kind], setl_date=setl_date,
            status=SETTLEMENT_STATUS_SETTLED if setl_id else SETTLEMENT_STATUS_UNSPECIFIED, lines=priced,
            risk_flags=risk_flag_values(flags), clearing_month=month,
            balc=self.accounts.balance(facts.psn_no) - acct_pay,
            med_type=MED_TYPE_CHRONIC if dise_codg else MED_TYPE_UNSPECIFIED, dise_codg=dise_codg, mid_setl_flag=mid)
        settlement = SettlementFacts(
            setl_id=setl_id, mdtrt_id=facts.mdtrt_id, psn_no=facts.psn_no, fixmedins_code=facts.fixmedins_code,
            insuplc_admdvs=facts.insuplc_admdvs, mdtrtarea_admdvs=facts.mdtrtarea_admdvs,
            visit_kind=facts.visit_kind, insutype=bill.insutype_code, setl_date=setl_date, year=bill.year,
            breakdown=Breakdown(*bill.breakdown), deltas=bill.deltas, risk_flags=flags, acct_draws=draws,
            dise_codg=dise_codg, mid_setl_flag=mid, stay_deductible_fen=bill.stay_deductible_fen if inpatient else -1,
            stay_mids=visit.mids if inpatient else (), acc_before=bill.acc_before,
            chronic_before=(used, paid) if dise_codg else (),
        )
        return Reply(reply), settlement, month

    # ------------------------------------------------------------- apply
    def apply_settled(self, event: Settled, seq: int) -> list:
        s = event.settlement
        self._add_deltas(s, 1)
        for psn_no, amount_fen in s.acct_draws:
            self.accounts.add(psn_no, -amount_fen)
        if event.visit is not None:  # outpatient: the visit is born settled
            changes = [PutVisit(ArchivedVisit(event.visit, SETTLED, s.setl_id)),
                       PutSettlement(ArchivedSettlement(s, seq, lines=event.lines))]
        elif s.mid_setl_flag:  # SPEC §10.3: the stay stays admitted, its settled lines set aside
            visit = self.visits.open[s.mdtrt_id]
            for line in event.lines:
                del visit.lines[line.feedetl_sn]
                visit.settled_lines[line.feedetl_sn] = line
            visit.mids = untracked((*visit.mids, untracked((s.setl_id, s.setl_date, s.breakdown.act_pay_dedc))))
            visit.stay_deductible_fen = s.stay_deductible_fen
            changes = [PutSettlement(ArchivedSettlement(s, seq, lines=event.lines))]
        else:  # inpatient: the stay closes; its lines go to the archive, to open again on cancellation
            visit = self.visits.close(s.mdtrt_id)
            lines = event.lines or tuple(visit.lines.values())  # a schema-1 record may lack them
            changes = [VisitStatus(s.mdtrt_id, SETTLED, s.setl_id), PutSettlement(ArchivedSettlement(s, seq, lines=lines))]
        self._book(s, event.clearing_month, s.setl_date, 1)
        return changes

    def apply_cancelled(self, event: SettlementCancelled, seq: int) -> list:
        facts, visit, lines = event.settlement, event.visit, event.lines
        if facts is None:  # a schema-1 record: the immutable facts are in the archive
            ref = self.archive.settlement(event.setl_id)
            facts, lines = ref.facts, ref.lines
            visit = self.archive.visit(facts.mdtrt_id).facts
        self._add_deltas(facts, -1)
        for psn_no, amount_fen in facts.acct_draws:  # exactly what it drew, back to the same accounts
            self.accounts.add(psn_no, amount_fen)
        self._book(facts, event.clearing_month, event.cancel_date, -1)
        changes: list = [SettlementCancelledChange(event.setl_id, event.cancel_date, seq, facts.fixmedins_code,
                                                   facts.setl_date, event.clearing_month)]
        if facts.visit_kind == INPATIENT and facts.mid_setl_flag:
            # SPEC §10.3: the latest mid settlement of a stay still admitted; its lines are unsettled again.
            stay = self.visits.open[facts.mdtrt_id]
            invariant(bool(stay.mids) and stay.mids[-1][0] == facts.setl_id, f"{facts.setl_id} is not the latest")
            stay.mids = untracked(stay.mids[:-1])
            for line in lines:
                del stay.settled_lines[line.feedetl_sn]
                stay.lines[line.feedetl_sn] = line
            if not stay.mids:
                stay.stay_deductible_fen = -1
        elif facts.visit_kind == INPATIENT:
            # The stay is open again for correction and a new settlement (with its mid settlements, if any).
            self.visits.open_stay(Visit(visit, lines={line.feedetl_sn: line for line in lines},
                                        mids=untracked(tuple(untracked(m) for m in facts.stay_mids)),
                                        stay_deductible_fen=facts.stay_deductible_fen if facts.stay_mids else -1,
                                        settled_lines={line.feedetl_sn: line for line in event.settled_lines}))
            changes.append(VisitStatus(facts.mdtrt_id, ADMITTED, ""))
        else:
            changes.append(VisitStatus(facts.mdtrt_id, CANCELLED, ""))
        return changes

    def apply_request_reversed(self, _event: RequestReversed, _seq: int) -> list:
        """Nothing in memory: the reversed key lives in the idempotency index."""
        return []

    def _add_deltas(self, facts: SettlementFacts, sign: int) -> None:
        """A settlement's recorded deltas, added (+1) or taken back (−1); a chronic-disease visit's outpatient
        deltas go to that disease's accumulators (SPEC §10.2)."""
        deltas, chronic = split_deltas(facts)
        self.index.add_deltas(facts.psn_no, facts.year, deltas, sign)
        if chronic is not None:
            key = untracked((facts.psn_no, facts.year, facts.dise_codg))
            used, paid = self.chronic.get(key, (0, 0))
            used, paid = used + sign * chronic[0], paid + sign * chronic[1]
            invariant(used >= 0 and paid >= 0, f"chronic accumulators of {key} below zero")
            if used or paid:
                self.chronic[key] = untracked((used, paid))
            else:
                self.chronic.pop(key, None)

    def _book(self, facts: SettlementFacts, month: int, date: int, sign: int) -> None:
        """SPEC §8 in the same record as the settlement or its cancellation: the position and the clearing month."""
        self.funds.book(booking_of(facts), month or self.funds.booking_month(date), sign)
        if facts.visit_kind == OUTPATIENT:
            self.funds.count_outpatient(facts.psn_no, facts.setl_date, sign)

    # ----------------------------------------------------------- invariants
    def check_invariants(self, settlements: Iterable[ArchivedSettlement]) -> None:
        """Every person's accumulators equal the sum of their live settlements' deltas (SPEC §5.5)."""
        expected: dict[tuple[str, int], list[int]] = {}
        for ref in settlements:
            if ref.status == SETTLED:
                sums = expected.setdefault((ref.facts.psn_no, ref.facts.year), [0] * len(ACCUMULATOR_KEYS))
                for i, delta in enumerate(split_deltas(ref.facts)[0]):
                    sums[i] += delta
        for (psn_no, year), sums in expected.items():
            acc = self.index.accumulators(psn_no, year)
            invariant([acc[k] for k in ACCUMULATOR_KEYS] == sums,
                      f"accumulators of {psn_no} in {year} differ from the sum of live settlements")


# ------------------------------------------------------------------ 冲正's target
def check_reversal(cmd: Reverse) -> None:
    """A reversal's own ids, checked before its original is looked for."""
    check_id(cmd.original_request_id, "原请求ID original_request_id", "INVALID_REQUEST_ID", "original_request_id")
    if cmd.original_request_id == cmd.request_id:
        raise YidiError("INVALID_ARGUMENT", what="冲正请求的请求ID", problem="不能与原请求ID相同",
                        field="original_request_id")
    check_id(cmd.request_id, "请求ID request_id", "INVALID_REQUEST_ID", "request_id")


def reversal(cmd: Reverse, original: Event | None) -> Reverse:
    """The reversal to decide, given the event the original request recorded (None: it recorded nothing)."""
    if original is None:
        return cmd
    if type(original) is Settled:
        return msgspec.structs.replace(cmd, target_kind="settlement", target_id=original.settlement.setl_id)
    if type(original) is Admitted:
        return msgspec.structs.replace(cmd, target_kind="admission", target_id=original.visit.mdtrt_id)
    raise YidiError("INVALID_ARGUMENT", what=f"请求ID {cmd.original_request_id} 对应的业务",
                    problem="不是结算或入院登记，不能冲正；如需更正，请使用相应的撤销或变更接口",
                    field="original_request_id")


# ------------------------------------------------------------------ helpers
def _lines_to_settle(visit: Visit, setl_date: int, mid: bool, date_field: str = "dscg_date") -> tuple[FeeLine, ...]:
    """A mid settlement takes the unsettled lines dated up to its date, the final one all the rest."""
    check_date(setl_date, "结算日期", field=date_field)
    last = visit.mids[-1][1] if visit.mids else 0
    if mid and setl_date <= last or not mid and setl_date < last:
        raise YidiError("INVALID_DATE", what=f"结算日期 {setl_date}", problem=f"须晚于本次住院上一次中途结算的日期 {last}",
                        field=date_field)
    if not mid:
        return tuple(visit.lines.values())
    chosen = {sn for sn, line in visit.lines.items() if not line.init_feedetl_sn and visit.fee_date(line) <= setl_date}
    # a refund goes with its original line, whatever its own date (SPEC §10.4)
    return tuple(line for sn, line in visit.lines.items() if (line.init_feedetl_sn or sn) in chosen)


_OUTPATIENT_SLOTS = (ACCUMULATOR_KEYS.index("outpatient_deductible_used_fen"),
                     ACCUMULATOR_KEYS.index("outpatient_fund_paid_fen"))


def split_deltas(facts: SettlementFacts) -> tuple[tuple[int, ...], tuple[int, int] | None]:
    """(the deltas of the person's year accumulators, (deductible used, fund paid) of the chronic disease or None)."""
    if not facts.dise_codg:
        return facts.deltas, None
    ded, fund = _OUTPATIENT_SLOTS
    general = list(facts.deltas)
    general[ded] = general[fund] = 0
    return tuple(general), (facts.deltas[ded], facts.deltas[fund])

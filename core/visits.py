"""Visits (就诊, SPEC §6): admission, the fee lines of an open stay, and the stay's cancellation.

Memory holds the open inpatient stays (admitted, not finally settled); a
closed visit is read from the archive.  Settling a stay, in parts or at
discharge, is ``core.settlement``'s; it opens and closes stays through
``open`` and ``close``.
"""
from __future__ import annotations

from typing import Callable

import msgspec

from . import lines as fee_lines
from .archive import Archive, ArchivedVisit, PutVisit, VisitStatus
from .commands import Admit, AdmitResult, CancelAdmission, Decision, UploadFees, VisitResult, WithdrawFees
from .errors import YidiError, invariant
from .events import AdmissionCancelled, Admitted, FeeLine, FeesUploaded, FeesWithdrawn, VisitFacts, visit_id
from .filing import Filings
from .limits import check_date, check_id, check_line_count
from ._core import Index, untracked

INPATIENT = "inpatient"
OUTPATIENT = "outpatient"

ADMITTED = "admitted"
SETTLED = "settled"
CANCELLED = "cancelled"


class Visit(msgspec.Struct, gc=False):
    """An open inpatient stay in memory: what admission decided, and its fee lines.

    Nothing in it is tracked by the collector (dicts of structs the collector does not track, tuples made
    ``core.untracked``), so open stays add nothing to what a collection walks however many there are."""

    facts: VisitFacts
    lines: dict[str, FeeLine] = msgspec.field(default_factory=dict)   # not settled yet
    status: str = ADMITTED
    setl_id: str = ""
    # SPEC §10.3: the stay's live mid settlements, (setl_id, setl_date, act_pay_dedc), in order; its deductible D
    # (-1 until its first settlement decides it); and the lines they settled
    mids: tuple[tuple[str, int, int], ...] = ()
    stay_deductible_fen: int = -1
    settled_lines: dict[str, FeeLine] = msgspec.field(default_factory=dict)

    @property
    def mdtrt_id(self) -> str:
        return self.facts.mdtrt_id

    @property
    def psn_no(self) -> str:
        return self.facts.psn_no

    def fee_date(self, line: FeeLine) -> int:
        """A line's date; one without a fee_date counts as dated on the admission date."""
        return line.fee_date or self.facts.adm_date


class Visits:
    """The open inpatient stays, by mdtrt_id and by person; closed visits from the archive."""

    def __init__(self, index: Index, filings: Filings, archive: Archive, stays: list[Visit] = ()) -> None:
        self.index = index
        self.filings = filings
        self.archive = archive
        self.open: dict[str, Visit] = {}
        self.open_inpatient: dict[str, tuple[str, ...]] = {}   # psn_no -> mdtrt_ids of their open stays (untracked)
        for stay in stays:
            self.open_stay(stay)

    def decisions(self) -> dict[type, Callable]:
        return {Admit: self.decide_admit, CancelAdmission: self.decide_cancel_admission,
                UploadFees: self.decide_upload_fees, WithdrawFees: self.decide_withdraw_fees}

    def appliers(self) -> dict[type, Callable]:
        return {Admitted: self.apply_admitted, AdmissionCancelled: self.apply_admission_cancelled,
                FeesUploaded: self.apply_fees, FeesWithdrawn: self.apply_fees_withdrawn}

    # ------------------------------------------------------------ look-ups
    def visit(self, mdtrt_id: str) -> Visit | ArchivedVisit:
        """An open stay (in memory) or a closed visit (from the archive)."""
        check_id(mdtrt_id, "就诊ID mdtrt_id", field="mdtrt_id")
        visit = self.open.get(mdtrt_id) or self.archive.visit(mdtrt_id)
        if visit is None:
            raise YidiError("VISIT_NOT_FOUND", mdtrt_id=mdtrt_id)
        return visit

    def open_visit(self, mdtrt_id: str) -> Visit:
        """An inpatient stay still admitted, or why it is not."""
        visit = self.visit(mdtrt_id)
        if visit.facts.visit_kind != INPATIENT:
            raise YidiError("VISIT_KIND_MISMATCH", mdtrt_id=mdtrt_id)
        if visit.status == SETTLED:
            raise YidiError("VISIT_ALREADY_SETTLED", mdtrt_id=mdtrt_id, setl_id=visit.setl_id, action="办理住院业务")
        if visit.status != ADMITTED:
            raise YidiError("VISIT_NOT_OPEN", mdtrt_id=mdtrt_id)
        invariant(type(visit) is Visit, f"open stay {mdtrt_id} is not in memory")
        return visit

    @staticmethod
    def new_visit(seq: int, psn_no: str, fixmedins_code: str, visit_kind: str, adm_date: int, elig) -> VisitFacts:
        """A visit named after its ledger record, carrying what eligibility chose (an Admission: filing, regions,
        level)."""
        return VisitFacts(
            mdtrt_id=visit_id(seq), psn_no=psn_no, fixmedins_code=fixmedins_code,
            visit_kind=visit_kind, adm_date=adm_date, filing_id=elig.filing_id,
            filing_kind=elig.filing_kind, insuplc_admdvs=elig.insuplc_admdvs,
            mdtrtarea_admdvs=elig.mdtrtarea_admdvs, fixmedins_level=elig.fixmedins_level,
        )

    # ------------------------------------------------------------ decide
    def decide_admit(self, cmd: Admit, seq: int) -> Decision:
        """入院登记: eligibility (SPEC §4) and a new visit id; an emergency may imply its filing (SPEC §10.6)."""
        psn_no = self.filings.patient(cmd.person, cmd.card, cmd.credential)
        person = self.filings.person(psn_no)
        check_date(cmd.adm_date, "入院日期", field="adm_date")
        card_no, card_version = (cmd.card.card_no, cmd.card.card_version) if cmd.card else (None, None)
        elig = self.index.admission(psn_no, cmd.fixmedins_code, True, cmd.adm_date, card_no, card_version,
                                    has_open_inpatient=bool(self.open_inpatient.get(psn_no)), emergency=cmd.emergency)
        visit = self.new_visit(seq, psn_no, cmd.fixmedins_code, INPATIENT, cmd.adm_date, elig)
        return Decision(Admitted(visit=visit, ipt_no=cmd.ipt_no), AdmitResult(visit, person["name"]))

    def decide_cancel_admission(self, cmd: CancelAdmission, _seq: int) -> Decision:
        """入院撤销: only before settlement."""
        visit = self.open_visit(cmd.mdtrt_id)
        if visit.mids:
            raise YidiError("VISIT_ALREADY_SETTLED", mdtrt_id=cmd.mdtrt_id, setl_id=visit.mids[-1][0],
                            action="撤销入院登记")
        count, total = fee_lines.totals(visit.lines.values())
        return Decision(AdmissionCancelled(mdtrt_id=cmd.mdtrt_id),
                        VisitResult(cmd.mdtrt_id, CANCELLED, count, total))

    def decide_upload_fees(self, cmd: UploadFees, _seq: int) -> Decision:
        """费用明细上传: new lines are added, identical re-sent lines are no-ops."""
        visit = self.open_visit(cmd.mdtrt_id)
        new: dict[str, FeeLine] = {}
        last_mid = visit.mids[-1][1] if visit.mids else 0
        for i, line in enumerate(cmd.lines):
            fee_lines.check_fields(line, i)
            settled = visit.settled_lines.get(line.feedetl_sn)
            if settled is not None:
                if settled.content() == line.content():
                    continue   # re-sent as it was: a no-op, as for any line
                raise YidiError("FEE_LINE_CONFLICT", feedetl_sn=line.feedetl_sn,
                                problem="已中途结算，不能更改；如需更正，请先撤销该中途结算")
            seen = visit.lines.get(line.feedetl_sn) or new.get(line.feedetl_sn)
            if seen is None and last_mid and visit.fee_date(line) <= last_mid:
                raise YidiError("FEE_DATE_SETTLED", feedetl_sn=line.feedetl_sn, fee_date=visit.fee_date(line),
                                mid_date=last_mid)
            if seen is None:
                new[line.feedetl_sn] = line
            elif seen.content() != line.content():
                raise YidiError("FEE_LINE_CONFLICT", feedetl_sn=line.feedetl_sn,
                                problem="已上传过不同的内容。如需更正，请先撤销该明细再重新上传")
        check_line_count(len(visit.lines) + len(new), "一次住院")
        fee_lines.check_refunds({**visit.lines, **new}, new.values(), visit.settled_lines)
        count, total = fee_lines.totals({**visit.lines, **new}.values())
        return Decision(FeesUploaded(mdtrt_id=cmd.mdtrt_id, lines=tuple(new.values())),
                        VisitResult(cmd.mdtrt_id, ADMITTED, count, total))

    def decide_withdraw_fees(self, cmd: WithdrawFees, _seq: int) -> Decision:
        """费用明细撤销: the named lines, or all lines when none are named."""
        visit = self.open_visit(cmd.mdtrt_id)
        sns = list(dict.fromkeys(cmd.sns)) or list(visit.lines)
        for sn in sns:
            check_id(sn, "费用明细流水号", field="feedetl_sns")
        settled = [sn for sn in sns if sn in visit.settled_lines]
        if settled:
            raise YidiError("LINE_ALREADY_SETTLED", feedetl_sn="、".join(settled[:5]), action="撤销")
        missing = [sn for sn in sns if sn not in visit.lines]
        if missing:
            raise YidiError("FEE_LINE_NOT_FOUND", feedetl_sn="、".join(missing[:5]), consequence="无法撤销")
        withdrawn = set(sns)
        orphans = [line.feedetl_sn for sn, line in visit.lines.items()
                   if sn not in withdrawn and line.init_feedetl_sn in withdrawn]
        if orphans:
            raise YidiError("FEE_LINE_CONFLICT", feedetl_sn="、".join(orphans[:5]),
                            problem="是尚在的退费明细，请与原明细一并撤销")
        count, total = fee_lines.totals(line for sn, line in visit.lines.items() if sn not in withdrawn)
        return Decision(FeesWithdrawn(mdtrt_id=cmd.mdtrt_id, sns=tuple(sns)),
                        VisitResult(cmd.mdtrt_id, ADMITTED, count, total))

    # ------------------------------------------------------------- apply
    def apply_admitted(self, event: Admitted, _seq: int) -> list:
        self.open_stay(Visit(event.visit))
        return [PutVisit(ArchivedVisit(event.visit, ADMITTED))]

    def apply_admission_cancelled(self, event: AdmissionCancelled, _seq: int) -> list:
        self.close(event.mdtrt_id)
        return [VisitStatus(event.mdtrt_id, CANCELLED, "")]

    def apply_fees(self, event: FeesUploaded, _seq: int) -> list:
        lines = self.open[event.mdtrt_id].lines
        for line in event.lines:
            lines[line.feedetl_sn] = line
        return []

    def apply_fees_withdrawn(self, event: FeesWithdrawn, _seq: int) -> list:
        lines = self.open[event.mdtrt_id].lines
        for sn in event.sns:
            del lines[sn]
        return []

    def open_stay(self, visit: Visit) -> None:
        self.open[visit.mdtrt_id] = visit
        ids = self.open_inpatient.get(visit.psn_no, ())
        if visit.mdtrt_id not in ids:
            self.open_inpatient[visit.psn_no] = untracked((*ids, visit.mdtrt_id))

    def close(self, mdtrt_id: str) -> Visit:
        visit = self.open.pop(mdtrt_id)
        open_ids = tuple(i for i in self.open_inpatient[visit.psn_no] if i != mdtrt_id)
        if open_ids:
            self.open_inpatient[visit.psn_no] = untracked(open_ids)
        else:
            del self.open_inpatient[visit.psn_no]
        return visit

"""The visit lifecycle of SPEC §6 over the index, as events.

Every command has two halves.  ``decide_*`` checks a request against the
current state and returns an *event* (a plain dict: the ledger record's body)
without changing anything; a refusal raises :class:`YidiError`.  ``apply``
changes the in-memory state from an event.  The gateway runs
decide → apply → durable ledger append → reply; a restart replays the ledger
through ``apply`` alone.  Events carry their results (ids, amounts, the
accumulator deltas), they are never recomputed on replay, so the state after
a restart is exactly the state before it even if reference data or code
changed in between.

The event loop is the only caller, so commands for one person are serial.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from . import limits
from .limits import check_id
from ._core import Index
from .errors import YidiError

INPATIENT = "inpatient"
OUTPATIENT = "outpatient"

ADMITTED = "admitted"
SETTLED = "settled"
CANCELLED = "cancelled"


@dataclass(slots=True)
class Visit:
    """One visit (就诊): an inpatient stay or an outpatient/pharmacy visit."""

    mdtrt_id: str
    psn_no: str
    fixmedins_code: str
    visit_kind: str
    adm_date: int
    filing_id: str
    filing_kind: str
    insuplc_admdvs: str
    mdtrtarea_admdvs: str
    fixmedins_level: int
    status: str = ADMITTED
    # feedetl_sn -> (code, name, unit_price_fen, qty_milli, fee_date)
    lines: dict[str, tuple[str, str, int, int, int]] = field(default_factory=dict)
    setl_id: str = ""


@dataclass(slots=True)
class SettlementRef:
    """What memory keeps of a settlement: enough to cancel it exactly.

    The full settlement (lines, breakdown) lives in the ledger record.
    """

    setl_id: str
    mdtrt_id: str
    psn_no: str
    year: int
    deltas: dict[str, int]
    insuplc_admdvs: str
    mdtrtarea_admdvs: str
    setl_date: int
    status: str = SETTLED
    cancel_date: int = 0


def _id_number(ident: str) -> int:
    return int(ident[1:])


class Engine:
    """Visits, fee lines and settlements, on top of an :class:`Index`."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.visits: dict[str, Visit] = {}
        self.settlements: dict[str, SettlementRef] = {}
        # psn_no -> mdtrt_ids of open (admitted, not settled) inpatient visits
        self.open_inpatient: dict[str, set[str]] = {}
        self._last_mdtrt = 0
        self._last_setl = 0

    # ------------------------------------------------------------------ ids
    def _next_mdtrt_id(self) -> str:
        return f"M{self._last_mdtrt + 1:015d}"

    def _next_setl_id(self) -> str:
        return f"S{self._last_setl + 1:015d}"

    # ------------------------------------------------------------ look-ups
    def person(self, psn_no: str = "", certno: str = "") -> dict:
        """The person named by psn_no or certno, or PERSON_NOT_FILED."""
        if not psn_no and not certno:
            raise YidiError("INVALID_ARGUMENT", "请提供人员编号 psn_no 或身份证号 certno 之一。")
        check_id(psn_no or certno, "人员编号或身份证号")
        if not psn_no:
            psn_no = self.index.psn_no_by_certno(certno) or ""
        person = self.index.get_person(psn_no) if psn_no else None
        if person is None:
            raise YidiError(
                "PERSON_NOT_FILED",
                "查无此人的异地就医备案。请参保地经办机构办理线上备案，备案即时生效，"
                "入院后至出院结算前均可补办。",
            )
        return person

    def visit(self, mdtrt_id: str) -> Visit:
        check_id(mdtrt_id, "就诊ID mdtrt_id")
        visit = self.visits.get(mdtrt_id)
        if visit is None:
            raise YidiError("VISIT_NOT_FOUND", f"就诊记录 {mdtrt_id} 不存在，请核对就诊ID。")
        return visit

    def settlement(self, setl_id: str) -> SettlementRef:
        check_id(setl_id, "结算ID setl_id")
        ref = self.settlements.get(setl_id)
        if ref is None:
            raise YidiError("SETTLEMENT_NOT_FOUND", f"结算记录 {setl_id} 不存在，请核对结算ID。")
        return ref

    def _open_visit(self, mdtrt_id: str) -> Visit:
        visit = self.visit(mdtrt_id)
        if visit.visit_kind != INPATIENT:
            raise YidiError("VISIT_KIND_MISMATCH", f"就诊 {mdtrt_id} 为门诊就诊，门诊费用随一站式结算一次上传。")
        if visit.status == SETTLED:
            raise YidiError(
                "VISIT_ALREADY_SETTLED",
                f"就诊 {mdtrt_id} 已出院结算（结算ID {visit.setl_id}）。如需更正，请先撤销结算。",
            )
        if visit.status != ADMITTED:
            raise YidiError("VISIT_NOT_OPEN", f"就诊 {mdtrt_id} 已撤销入院登记，不能再办理业务。")
        return visit

    # ------------------------------------------------------------ filings
    def decide_file(self, person: dict, filing: dict) -> dict:
        """备案: the person's record (insert or update) and one new filing."""
        self.index.check_person(person)
        if filing.get("psn_no") != person["psn_no"]:
            raise YidiError("INVALID_ARGUMENT", "备案记录的人员编号与人员信息不一致。")
        known = self.index.get_person(person["psn_no"])
        if known is not None and known["certno"] != person["certno"]:
            raise YidiError("PERSON_CONFLICT", "人员编号已登记了另一个身份证号，请核对人员信息。")
        other = self.index.psn_no_by_certno(person["certno"])
        if other is not None and other != person["psn_no"]:
            raise YidiError("PERSON_CONFLICT", "该身份证号已登记在另一个人员编号下，请核对人员信息。")
        if self.index.get_filing(filing["filing_id"]) is not None:
            raise YidiError(
                "FILING_CONFLICT",
                f"备案编号 {filing['filing_id']} 已存在。变更备案请使用备案变更，撤销请使用备案撤销。",
            )
        self.index.check_filing(filing, person=person)
        return {"type": "filed", "person": person, "filing": filing}

    def decide_revise_filing(self, filing: dict) -> dict:
        """备案变更: a new destination, institution list or validity."""
        old = self.filing(filing["filing_id"])
        if filing.get("psn_no") not in ("", old["psn_no"]) or filing.get("kind") not in ("", old["kind"]):
            raise YidiError("FILING_CONFLICT", "备案变更不能改变人员或备案类型，请撤销后重新备案。")
        revised = dict(old, **{k: filing[k] for k in ("dest_admdvs", "fixmedins_codes", "valid_from", "valid_to")})
        if filing.get("status"):
            revised["status"] = filing["status"]
        self.index.check_filing(revised)
        return {"type": "filing", "filing": revised}

    def decide_revoke_filing(self, filing_id: str) -> dict:
        """备案撤销."""
        return {"type": "filing", "filing": dict(self.filing(filing_id), status="revoked")}

    def filing(self, filing_id: str) -> dict:
        check_id(filing_id, "备案编号 filing_id")
        filing = self.index.get_filing(filing_id)
        if filing is None:
            raise YidiError("FILING_NOT_FOUND", f"备案编号 {filing_id} 不存在，请核对。")
        return filing

    # --------------------------------------------------------- inpatient
    def decide_admit(self, psn_no: str, fixmedins_code: str, adm_date: int,
                     card_no: str | None = None, card_version: str | None = None, ipt_no: str = "") -> dict:
        """入院登记: eligibility (SPEC §4) and a new visit id."""
        limits.check_date(adm_date, "入院日期")
        elig = self.index.eligibility(
            psn_no, fixmedins_code, True, adm_date, card_no, card_version,
            has_open_inpatient=bool(self.open_inpatient.get(psn_no)),
        )
        visit = self._new_visit(psn_no, fixmedins_code, INPATIENT, adm_date, elig)
        return {"type": "admitted", "visit": _visit_dict(visit), "ipt_no": ipt_no}

    def _new_visit(self, psn_no: str, fixmedins_code: str, visit_kind: str, adm_date: int, elig: dict) -> Visit:
        """A visit with the next id, carrying what eligibility chose (filing, regions, level)."""
        return Visit(
            mdtrt_id=self._next_mdtrt_id(), psn_no=psn_no, fixmedins_code=fixmedins_code, visit_kind=visit_kind,
            adm_date=adm_date, filing_id=elig["filing_id"], filing_kind=elig["filing_kind"],
            insuplc_admdvs=elig["insuplc_admdvs"], mdtrtarea_admdvs=elig["mdtrtarea_admdvs"],
            fixmedins_level=elig["fixmedins_level"],
        )

    def decide_cancel_admission(self, mdtrt_id: str) -> dict:
        """入院撤销: only before settlement."""
        self._open_visit(mdtrt_id)
        return {"type": "admission_cancelled", "mdtrt_id": mdtrt_id}

    def decide_upload_fees(self, mdtrt_id: str, lines: Iterable[tuple[str, str, str, int, int, int]]) -> dict:
        """费用明细上传: new lines are added, identical re-sent lines are no-ops.

        A line is (feedetl_sn, code, name, unit_price_fen, qty_milli, fee_date).
        """
        visit = self._open_visit(mdtrt_id)
        new: dict[str, tuple] = {}
        for sn, code, name, price, qty, fee_date in lines:
            limits.check_line(sn, code, price, qty, fee_date)
            content = (code, name, price, qty, fee_date)
            seen = visit.lines.get(sn) or new.get(sn)
            if seen is None:
                new[sn] = content
            elif seen != content:
                raise YidiError(
                    "FEE_LINE_CONFLICT",
                    f"费用明细流水号 {sn} 已上传过不同的内容。如需更正，请先撤销该明细再重新上传。",
                )
        if len(visit.lines) + len(new) > limits.MAX_LINES_PER_VISIT:
            raise YidiError("TOO_MANY_LINES", f"一次住院的费用明细不能超过 {limits.MAX_LINES_PER_VISIT} 条。")
        return {"type": "fees", "mdtrt_id": mdtrt_id, "lines": [[sn, *c] for sn, c in new.items()]}

    def decide_withdraw_fees(self, mdtrt_id: str, sns: Iterable[str]) -> dict:
        """费用明细撤销: the named lines, or all lines when none are named."""
        visit = self._open_visit(mdtrt_id)
        sns = list(dict.fromkeys(sns)) or list(visit.lines)
        for sn in sns:
            check_id(sn, "费用明细流水号")
        missing = [sn for sn in sns if sn not in visit.lines]
        if missing:
            raise YidiError("FEE_LINE_NOT_FOUND", f"费用明细流水号 {'、'.join(missing[:5])} 未上传过，无法撤销。")
        return {"type": "fees_withdrawn", "mdtrt_id": mdtrt_id, "sns": sns}

    def presettle(self, mdtrt_id: str, setl_date: int) -> dict:
        """预结算: the settlement discharge would produce, changing nothing."""
        visit = self._open_visit(mdtrt_id)
        return dict(self._settlement(visit, "", setl_date, visit.lines.items()), status="")

    def decide_discharge_settle(self, mdtrt_id: str, dscg_date: int) -> dict:
        """出院结算."""
        visit = self._open_visit(mdtrt_id)
        settlement = self._settlement(visit, self._next_setl_id(), dscg_date, visit.lines.items())
        return {"type": "settled", "settlement": settlement}

    def _settlement(self, visit: Visit, setl_id: str, setl_date: int, lines) -> dict:
        limits.check_date(setl_date, "结算日期")
        if setl_date < visit.adm_date:
            raise YidiError("DATE_BEFORE_ADMISSION", f"结算日期 {setl_date} 早于入院日期 {visit.adm_date}，请核对。")
        lines = list(lines)
        if not lines:
            raise YidiError("NO_FEE_LINES", "该就诊没有费用明细，请先上传费用明细再结算。")
        benefit = self.index.benefit(
            visit.psn_no, visit.fixmedins_code, visit.filing_kind, visit.visit_kind == INPATIENT, setl_date,
            [(c[0], c[2], c[3]) for _, c in lines],
        )
        person = self.index.get_person(visit.psn_no)
        inst = self.index.get_institution(visit.fixmedins_code) or {}
        line_results = [dict(r, feedetl_sn=sn) for (sn, _), r in zip(lines, benefit["line_results"], strict=True)]
        breakdown = {k: benefit[k] for k in BREAKDOWN_KEYS}
        return {
            "setl_id": setl_id,
            "mdtrt_id": visit.mdtrt_id,
            "psn_no": visit.psn_no,
            "psn_name": person["name"],
            "fixmedins_code": visit.fixmedins_code,
            "fixmedins_name": inst.get("name", ""),
            "insuplc_admdvs": visit.insuplc_admdvs,
            "mdtrtarea_admdvs": visit.mdtrtarea_admdvs,
            "visit_kind": visit.visit_kind,
            "insutype": person["insutype"],
            "filing_id": visit.filing_id,
            "filing_kind": visit.filing_kind,
            "setl_date": setl_date,
            "policy_effective_from": benefit["policy_effective_from"],
            "breakdown": breakdown,
            "lines": line_results,
            "status": SETTLED,
            "year": benefit["year"],
            "deltas": benefit["deltas"],
        }

    def decide_cancel_settlement(self, setl_id: str, cancel_date: int) -> dict:
        """结算撤销: gives back exactly the recorded deltas."""
        ref = self.settlement(setl_id)
        if ref.status != SETTLED:
            raise YidiError("SETTLEMENT_ALREADY_CANCELLED", f"结算 {setl_id} 已于 {ref.cancel_date} 撤销。")
        limits.check_date(cancel_date, "撤销日期")
        if cancel_date < ref.setl_date:
            raise YidiError("INVALID_DATE", f"撤销日期 {cancel_date} 早于结算日期 {ref.setl_date}，请核对。")
        return {"type": "settlement_cancelled", "setl_id": setl_id, "cancel_date": cancel_date}

    # -------------------------------------------------------- outpatient
    def decide_outpatient_settle(self, psn_no: str, fixmedins_code: str, setl_date: int,
                                 lines: list[tuple[str, str, str, int, int, int]],
                                 card_no: str | None = None, card_version: str | None = None) -> dict:
        """门诊一站式: eligibility, the visit, its lines and the settlement in one event."""
        limits.check_date(setl_date, "结算日期")
        elig = self.index.eligibility(psn_no, fixmedins_code, False, setl_date, card_no, card_version)
        if len(lines) > limits.MAX_LINES_PER_VISIT:
            raise YidiError("TOO_MANY_LINES", f"一次门诊的费用明细不能超过 {limits.MAX_LINES_PER_VISIT} 条。")
        visit = self._new_visit(psn_no, fixmedins_code, OUTPATIENT, setl_date, elig)
        seen: dict[str, tuple] = {}
        for sn, code, name, price, qty, fee_date in lines:
            limits.check_line(sn, code, price, qty, fee_date)
            if sn in seen:
                raise YidiError("FEE_LINE_CONFLICT", f"费用明细流水号 {sn} 在本次结算中重复出现。")
            seen[sn] = (code, name, price, qty, fee_date)
        settlement = self._settlement(visit, self._next_setl_id(), setl_date, seen.items())
        return {
            "type": "settled",
            "visit": _visit_dict(visit),
            "lines": [[sn, *c] for sn, c in seen.items()],
            "settlement": settlement,
        }

    # ------------------------------------------------------------- apply
    def apply(self, event: dict[str, Any]) -> None:
        """Change the in-memory state by one event (live or on replay)."""
        getattr(self, "_apply_" + event["type"])(event)

    def _apply_filed(self, event: dict) -> None:
        self.index.put_person(event["person"])
        self.index.put_filing(event["filing"])

    def _apply_filing(self, event: dict) -> None:
        self.index.put_filing(event["filing"])

    def _apply_admitted(self, event: dict) -> None:
        visit = Visit(**event["visit"])
        self._add_visit(visit)
        self.open_inpatient.setdefault(visit.psn_no, set()).add(visit.mdtrt_id)

    def _add_visit(self, visit: Visit) -> None:
        self.visits[visit.mdtrt_id] = visit
        self._last_mdtrt = max(self._last_mdtrt, _id_number(visit.mdtrt_id))

    def _close_inpatient(self, visit: Visit) -> None:
        open_ids = self.open_inpatient.get(visit.psn_no)
        if open_ids is not None:
            open_ids.discard(visit.mdtrt_id)
            if not open_ids:
                del self.open_inpatient[visit.psn_no]

    def _apply_admission_cancelled(self, event: dict) -> None:
        visit = self.visits[event["mdtrt_id"]]
        visit.status = CANCELLED
        self._close_inpatient(visit)

    def _apply_fees(self, event: dict) -> None:
        visit = self.visits[event["mdtrt_id"]]
        for sn, *content in event["lines"]:
            visit.lines[sn] = tuple(content)

    def _apply_fees_withdrawn(self, event: dict) -> None:
        visit = self.visits[event["mdtrt_id"]]
        for sn in event["sns"]:
            del visit.lines[sn]

    def _apply_settled(self, event: dict) -> None:
        s = event["settlement"]
        if "visit" in event:  # outpatient: the visit is born settled
            visit = Visit(**event["visit"])
            visit.lines = {sn: tuple(c) for sn, *c in event["lines"]}
            self._add_visit(visit)
        visit = self.visits[s["mdtrt_id"]]
        visit.status = SETTLED
        visit.setl_id = s["setl_id"]
        if visit.visit_kind == INPATIENT:
            self._close_inpatient(visit)
        self.index.apply_deltas(s["psn_no"], s["year"], s["deltas"], 1)
        self.settlements[s["setl_id"]] = SettlementRef(
            setl_id=s["setl_id"], mdtrt_id=s["mdtrt_id"], psn_no=s["psn_no"], year=s["year"],
            deltas=s["deltas"], insuplc_admdvs=s["insuplc_admdvs"], mdtrtarea_admdvs=s["mdtrtarea_admdvs"],
            setl_date=s["setl_date"],
        )
        self._last_setl = max(self._last_setl, _id_number(s["setl_id"]))

    def _apply_settlement_cancelled(self, event: dict) -> None:
        ref = self.settlements[event["setl_id"]]
        ref.status = CANCELLED
        ref.cancel_date = event["cancel_date"]
        self.index.apply_deltas(ref.psn_no, ref.year, ref.deltas, -1)
        visit = self.visits[ref.mdtrt_id]
        visit.setl_id = ""
        if visit.visit_kind == INPATIENT:
            # The stay is open again for correction and a new settlement.
            visit.status = ADMITTED
            self.open_inpatient.setdefault(visit.psn_no, set()).add(visit.mdtrt_id)
        else:
            visit.status = CANCELLED

    def _apply_reference_loaded(self, event: dict) -> None:
        """Reference data is loaded by the caller before replay; nothing to do here."""


BREAKDOWN_KEYS = (
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
    "act_pay_dedc", "pay_ratio_bp", "hifp_pay", "hifmi_pay", "hifob_pay", "maf_pay",
    "fund_pay_sumamt", "psn_cash_pay",
)


def _visit_dict(visit: Visit) -> dict:
    return {
        "mdtrt_id": visit.mdtrt_id, "psn_no": visit.psn_no, "fixmedins_code": visit.fixmedins_code,
        "visit_kind": visit.visit_kind, "adm_date": visit.adm_date, "filing_id": visit.filing_id,
        "filing_kind": visit.filing_kind, "insuplc_admdvs": visit.insuplc_admdvs,
        "mdtrtarea_admdvs": visit.mdtrtarea_admdvs, "fixmedins_level": visit.fixmedins_level,
    }


def line_amount_fen(unit_price_fen: int, qty_milli: int) -> int:
    """SPEC §5.1 line amount, rounded half up."""
    return (unit_price_fen * qty_milli + 500) // 1000


def visit_totals(visit: Visit) -> tuple[int, int]:
    """(line count, sum of line amounts) of a visit's uploaded fee lines."""
    return len(visit.lines), sum(line_amount_fen(c[2], c[3]) for c in visit.lines.values())

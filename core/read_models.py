"""Answers composed for reading (SPEC §10.7, §10.8): explanations, admitted patients, designated institutions.

They change nothing and record nothing; each reads the parts that hold what
it shows.
"""
from __future__ import annotations

import msgspec

from . import lines as fee_lines
from .errors import YidiError
from .filing import Filings
from .limits import PAGE_ROWS, check_id, page_limit
from .settlement import Settlements, split_deltas
from .visits import INPATIENT, Visits
from ._core import Index


class ReadModels:
    def __init__(self, index: Index, filings: Filings, visits: Visits, settlements: Settlements) -> None:
        self.index = index
        self.filings = filings
        self.visits = visits
        self.settlements = settlements

    def region_name(self, code: str) -> str:
        return self.index.region_name(code) or ""

    def institution_name(self, fixmedins_code: str) -> str:
        inst = self.index.get_institution(fixmedins_code)
        return inst["name"] if inst is not None else ""

    def institutions(self, admdvs: str, kind: str, inpatient: bool, outpatient: bool, dise_codg: str,
                     after: str, page_size: int) -> tuple[list[dict], bool]:
        """Designated institutions, by code, after the page token; (rows, more)."""
        limit = page_limit(page_size, PAGE_ROWS, "page_size")
        if after:
            check_id(after, "分页标记 page_token", field="page_token")
        if dise_codg:
            check_id(dise_codg, "慢特病病种编码 dise_codg", field="dise_codg")
        if admdvs and self.index.region_name(admdvs) is None:
            raise YidiError("INVALID_ARGUMENT", what=f"行政区划代码「{admdvs[:20]}」", problem="不是已知的省、市或区县代码",
                            field="admdvs")
        return self.index.institutions(admdvs, kind, inpatient, outpatient, dise_codg, after, limit)

    def admitted(self, fixmedins_code: str, after: str, page_size: int) -> tuple[list[dict], bool]:
        """The open cross-province stays at an institution (在院), by mdtrt_id, after the page token; (rows, more)."""
        limit = page_limit(page_size, PAGE_ROWS, "page_size")
        check_id(fixmedins_code, "定点医药机构编码 fixmedins_code", field="fixmedins_code")
        if self.index.get_institution(fixmedins_code) is None:
            raise YidiError("INSTITUTION_UNKNOWN", fixmedins_code=fixmedins_code)
        if after:
            check_id(after, "分页标记 page_token", field="page_token")
        stays = sorted((v for v in self.visits.open.values() if v.facts.fixmedins_code == fixmedins_code
                        and v.facts.mdtrt_id > after), key=lambda v: v.facts.mdtrt_id)
        rows = []
        for visit in stays[:limit]:
            f = visit.facts
            count, total = fee_lines.totals(visit.lines.values())
            rows.append({"mdtrt_id": f.mdtrt_id, "psn_no": f.psn_no, "psn_name": self.filings.person(f.psn_no)["name"],
                         "insuplc_admdvs": f.insuplc_admdvs, "adm_date": f.adm_date, "filing_id": f.filing_id,
                         "filing_kind": f.filing_kind, "line_count": count, "medfee_sumamt": total,
                         "mid_setl_ids": [m[0] for m in visit.mids]})
        return rows, len(stays) > limit

    def explanation(self, setl_id: str) -> dict:
        """A settlement computed again from what it recorded (its lines, the accumulators it started from, its stay),
        with every term used; ``recomputed_equal`` says the computation gives the recorded amounts (it would not if
        the reference data changed since)."""
        ref = self.settlements.settlement(setl_id)
        facts = ref.facts
        if not facts.acc_before:
            raise YidiError("EXPLANATION_UNAVAILABLE", setl_id=setl_id)
        inpatient = facts.visit_kind == INPATIENT
        visit = self.visits.visit(facts.mdtrt_id)
        chronic = (facts.dise_codg, *facts.chronic_before) if facts.dise_codg else None
        stay = ((facts.stay_deductible_fen, sum(dedc for _s, _d, dedc in facts.stay_mids))
                if inpatient and facts.stay_mids else None)
        lines = fee_lines.net_lines(ref.lines)
        recorded = facts.breakdown
        out = self.index.explain(facts.psn_no, facts.fixmedins_code, visit.facts.filing_kind, inpatient,
                                 facts.setl_date, lines, chronic, stay, facts.acc_before,
                                 (recorded.acct_pay, recorded.acct_mulaid_pay))
        # every amount of the breakdown and every accumulator the settlement moved, as recorded
        out["recomputed_equal"] = (out.pop("breakdown") == msgspec.structs.astuple(recorded)
                                   and out.pop("deltas") == facts.deltas)
        general, disease = split_deltas(facts)
        out["accumulators_after"] = tuple(a + d for a, d in zip(facts.acc_before, general, strict=True))
        if disease is not None:
            out["chronic_before"] = facts.chronic_before
            out["chronic_after"] = (facts.chronic_before[0] + disease[0], facts.chronic_before[1] + disease[1])
        out.update(setl_id=setl_id, breakdown=recorded, accounts=facts.acct_draws, mid_setl_flag=facts.mid_setl_flag,
                   dise_codg=facts.dise_codg, psn_no=facts.psn_no, year=facts.year)
        return out

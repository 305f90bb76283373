"""SPEC §9 as one table (core/access.py): every RPC has a rule, and each rule allows exactly whom it names."""
from __future__ import annotations

import pytest

from core.access import NATIONAL, RULES, authorize
from core.errors import YidiError
from gateway.server import SERVICES


def test_every_rpc_of_every_service_has_a_rule():
    """A new RPC without a rule fails here (and the gateway would refuse to route it)."""
    methods = {f"{descriptor.name}/{m.name}" for descriptor, _ in SERVICES for m in descriptor.methods}
    assert methods - set(RULES) == set(), "RPCs without an access rule"
    assert set(RULES) - methods == set(), "rules for RPCs that do not exist"


class World:
    """Objects of one person insured in 辽宁 (210000), filed for and treated in 海南 (460000)."""

    def institution_province(self, code):
        return {"H46": "460000", "H44": "440000"}.get(code[:3])

    def visit_provinces(self, mdtrt_id):
        return ("460000", "210000")

    def settlement_provinces(self, setl_id):
        return ("460000", "210000")

    def person_province(self, psn_no="", certno=""):
        return "210000"

    def person_filed_provinces(self, psn_no):
        return {"460000"}

    def filing_province(self, filing_id):
        return "210000"

    def problem_provinces(self, problem_id):
        return {"460000", "210000"}


class Request:
    def __init__(self, **fields):
        self.__dict__.update(fields)


REQUEST = Request(fixmedins_code="H46010000001", mdtrt_id="M1", setl_id="S1", psn_no="P1", certno="",
                  filing_id="F1", filing=Request(filing_id="F1"), person=Request(insuplc_admdvs="210102"),
                  province="460000", range=Request(fixmedins_code="H46010000001"), problem_id="R1")

ALLOWED = {  # rule kind -> callers allowed for REQUEST in World
    "any": {"210000", "460000", "440000", NATIONAL},
    "national": {NATIONAL},
    "insured_row": {"210000"},
    "insured_person": {"210000"},
    "insured_or_filed": {"210000", "460000"},
    "filing_owner": {"210000"},
    "institution": {"460000"},
    "visit": {"460000"},
    "settlement_treatment": {"460000"},
    "settlement_either": {"460000", "210000"},
    "own_province": {"460000"},
    "own_or_national": {"460000", NATIONAL},
    "problem_target": {"460000", "210000", NATIONAL},
    "problem": {"460000", "210000", NATIONAL},
}


@pytest.mark.parametrize("method", sorted(RULES))
def test_each_rule_allows_exactly_whom_it_names(method):
    allowed = ALLOWED[RULES[method].kind]
    for caller in ("210000", "460000", "440000", NATIONAL):
        if caller in allowed:
            authorize(method, caller, REQUEST, World())
        else:
            with pytest.raises(YidiError) as refused:
                authorize(method, caller, REQUEST, World())
            assert refused.value.reason == "PERMISSION_DENIED" and caller in refused.value.message


def test_an_unknown_institution_is_left_to_eligibility():
    """SPEC §4 check 4 answers INSTITUTION_UNKNOWN; the access rule does not pre-empt it."""
    authorize("SettlementService/Admit", "440000", Request(fixmedins_code="X9"), World())

"""SPEC §9 as one table (core/access.py): every RPC has a rule, and each rule allows exactly whom it names."""
from __future__ import annotations

import pytest

from core.access import NATIONAL, RULES, authorize
from core.errors import YidiError
from gateway.transport.server import SERVICES


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
    "own_request": {"210000", "460000", "440000", NATIONAL},
    "own_province": {"460000"},
    "own_or_national": {"460000", NATIONAL},
    "problem_target": {"460000", "210000", NATIONAL},
    "problem": {"460000", "210000", NATIONAL},
}

# Rule kinds whose object is named by id: a caller with no right to it is told it does not exist.
HIDDEN = {"insured_person": "PERSON_NOT_FOUND", "insured_or_filed": "PERSON_NOT_FOUND",
          "filing_owner": "FILING_NOT_FOUND", "visit": "VISIT_NOT_FOUND", "settlement_treatment": "SETTLEMENT_NOT_FOUND",
          "settlement_either": "SETTLEMENT_NOT_FOUND", "problem_target": "SETTLEMENT_NOT_FOUND",
          "problem": "PROBLEM_NOT_FOUND"}


@pytest.mark.parametrize("method", sorted(RULES))
def test_each_rule_allows_exactly_whom_it_names(method):
    allowed = ALLOWED[RULES[method].kind]
    for caller in ("210000", "460000", "440000", NATIONAL):
        if caller in allowed:
            authorize(method, caller, REQUEST, World())
        else:
            with pytest.raises(YidiError) as refused:
                authorize(method, caller, REQUEST, World())
            kind = RULES[method].kind
            if kind == "settlement_treatment" and caller in ALLOWED["settlement_either"]:
                assert refused.value.reason == "PERMISSION_DENIED"  # it may read it, so it knows it exists
            elif kind in HIDDEN:
                assert refused.value.reason == HIDDEN[kind] and caller not in refused.value.message
            else:
                assert refused.value.reason == "PERMISSION_DENIED" and caller in refused.value.message


class Nowhere(World):
    """A world in which nothing the request names exists."""

    def visit_provinces(self, mdtrt_id):
        raise YidiError("VISIT_NOT_FOUND", mdtrt_id="engine-side")

    def settlement_provinces(self, setl_id):
        raise YidiError("SETTLEMENT_NOT_FOUND", setl_id="engine-side")

    def person_province(self, psn_no="", certno=""):
        raise YidiError("PERSON_NOT_FILED", person="engine-side")

    def filing_province(self, filing_id):
        raise YidiError("FILING_NOT_FOUND", filing_id="engine-side")

    def problem_provinces(self, problem_id):
        raise YidiError("PROBLEM_NOT_FOUND", problem_id="engine-side")


@pytest.mark.parametrize("method", sorted(m for m, r in RULES.items() if r.kind in HIDDEN))
def test_a_missing_object_and_a_foreign_one_answer_alike(method):
    """SPEC §9: the refusal of a caller with no right is the same whether the object exists or not."""
    for caller in ("440000", "460000", "210000"):
        if caller in ALLOWED[RULES[method].kind] or RULES[method].kind == "settlement_treatment":
            continue
        with pytest.raises(YidiError) as foreign:
            authorize(method, caller, REQUEST, World())
        with pytest.raises(YidiError) as missing:
            authorize(method, caller, REQUEST, Nowhere())
        assert (foreign.value.reason, foreign.value.message) == (missing.value.reason, missing.value.message)


def test_a_problem_report_about_a_visit_is_refused_as_the_visit():
    """ReportProblem names a settlement or, without one, a visit: a stranger is told that object does not exist."""
    by_visit = Request(setl_id="", mdtrt_id="M1")
    for world in (World(), Nowhere()):
        with pytest.raises(YidiError) as refused:
            authorize("ProblemService/ReportProblem", "440000", by_visit, world)
        assert refused.value.reason == "VISIT_NOT_FOUND" and "M1" in refused.value.message


def test_an_unknown_institution_is_answered_before_any_person_is_looked_up():
    """So Admit at a made-up code cannot tell a filed person from an unknown one (SPEC §9 over §4's order)."""
    for world in (World(), Nowhere()):
        with pytest.raises(YidiError) as refused:
            authorize("SettlementService/Admit", "440000", Request(fixmedins_code="X9"), world)
        assert refused.value.reason == "INSTITUTION_UNKNOWN"


def test_only_a_certificate_naming_client_auth_is_a_client():
    """gateway.security.auth asks for clientAuth by name (once per certificate), whatever the TLS library lets through."""
    from cryptography import x509

    from gateway.security import auth, certs

    ca, ca_key = certs.make_ca()
    usage = x509.ExtendedKeyUsageOID
    sans = [x509.UniformResourceIdentifier(certs.caller_uri("460000"))]
    for usages, client in (((), False), ((usage.SERVER_AUTH,), False), ((usage.ANY_EXTENDED_KEY_USAGE,), False),
                           ((usage.CODE_SIGNING,), False), ((usage.CLIENT_AUTH,), True),
                           ((usage.SERVER_AUTH, usage.CLIENT_AUTH), True)):
        pem = certs.pem(certs.issue(ca, ca_key, "t", sans, server=False, usages=usages)[0])
        assert auth.issued_for_clients(pem) is client, usages
        assert auth.issued_for_clients(bytes(pem)) is client  # answered from the cache
    assert auth.issued_for_clients(b"not a certificate") is False

"""Who may do what (SPEC §9), as one table: for each RPC, whose province must the caller be.

A caller is a province code (``"460000"``) or ``NATIONAL``.  ``RULES`` maps
every RPC of every Yidi service (``"Service/Method"``) to a rule naming the
object whose province must match the caller:

* ``any``                 — any identified caller (no object involved);
* ``national``            — the national operator only;
* ``insured_row``         — the insured province of a person row in the request (filing a person);
* ``insured_person``      — the insured province of the person named by psn_no or certno;
* ``insured_or_filed``    — that, or a province the person is filed for (a filing's destination);
* ``filing_owner``        — the insured province of the filing's person;
* ``institution``         — the province of the institution;
* ``visit``               — the treatment province of the visit;
* ``settlement_treatment``— the treatment province of the settlement;
* ``settlement_either``   — its treatment or its insured province;
* ``own_province``        — the province named in the request itself (a province confirms its own statement);
* ``own_or_national``     — that province or the national operator (empty: the national operator only);
* ``problem_target``      — the provinces of the settlement or visit a problem report is about, or national;
* ``problem``             — the provinces a problem report concerns (and its reporter), or national.

* ``own_request``         — any caller: it names one of the caller's own requests (冲正), and
                            idempotency keys are per caller, so it cannot reach another's.

``authorize`` is the one enforcement point: the gateway calls it for every
request after decoding and before any service code runs; a refusal changes
nothing.  ``tests/core/test_access.py`` checks that every RPC has a rule, so a new
RPC without one fails CI.

A refusal reveals nothing (SPEC §9).  An object named by id (a person, a
filing, a visit, a settlement, a problem report) that does not exist and one
the caller may not see get the same answer, byte for byte: the object's
NOT_FOUND reason with one message ("does not exist or is not yours",
``_HIDDEN``), for every caller not entitled to it.  ``PERMISSION_DENIED`` is left for refusals that reveal
nothing about anyone: a national-only RPC, a row the caller itself sent
(filing a person of another province), an institution of another province
(the designated institutions are public reference data), and a settlement the
caller may read but not cancel.  An unknown institution is answered
``INSTITUTION_UNKNOWN`` here, before any person is looked up, so that Admit and
OutpatientSettle at a made-up code answer the same whoever the patient is
(SPEC §9 over §4's order: check 4 runs before check 1 when the code is unknown).
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

from .errors import YidiError
from .filing import Filings
from .problems import Problems
from .settlement import Settlements
from .visits import Visits
from ._core import Index, province_code

NATIONAL = "national"


class Rule(NamedTuple):
    kind: str
    fields: tuple[str, ...] = ()   # request fields (dotted paths) naming the object


class World(Protocol):
    """The look-ups a rule needs (unknown objects raise their NOT_FOUND reason, malformed ids INVALID_ARGUMENT);
    ``Owners`` answers them from the engine's parts."""

    def institution_province(self, fixmedins_code: str) -> str | None: ...
    def visit_provinces(self, mdtrt_id: str) -> tuple[str, str]: ...
    def settlement_provinces(self, setl_id: str) -> tuple[str, str]: ...
    def person_province(self, psn_no: str = "", certno: str = "") -> str: ...
    def person_filed_provinces(self, psn_no: str) -> set[str]: ...
    def filing_province(self, filing_id: str) -> str: ...
    def problem_provinces(self, problem_id: str) -> set[str]: ...


class Owners:
    """Whose each object is: the World of the engine (``Engine.owners``)."""

    def __init__(self, index: Index, filings: Filings, visits: Visits, settlements: Settlements,
                 problems: Problems) -> None:
        self.index = index
        self.filings = filings
        self.visits = visits
        self.settlements = settlements
        self.problems = problems

    def institution_province(self, fixmedins_code: str) -> str | None:
        inst = self.index.get_institution(fixmedins_code)
        return province_code(inst["admdvs"]) if inst is not None else None

    def visit_provinces(self, mdtrt_id: str) -> tuple[str, str]:
        """(treatment province, insured province) of a visit; VISIT_NOT_FOUND if there is none."""
        facts = self.visits.visit(mdtrt_id).facts
        return province_code(facts.mdtrtarea_admdvs), province_code(facts.insuplc_admdvs)

    def settlement_provinces(self, setl_id: str) -> tuple[str, str]:
        facts = self.settlements.settlement(setl_id).facts
        return province_code(facts.mdtrtarea_admdvs), province_code(facts.insuplc_admdvs)

    def person_province(self, psn_no: str = "", certno: str = "") -> str:
        return province_code(self.filings.person(psn_no, certno)["insuplc_admdvs"])

    def person_filed_provinces(self, psn_no: str) -> set[str]:
        return {province_code(f["dest_admdvs"]) for f in self.index.filings_of(psn_no)}

    def filing_province(self, filing_id: str) -> str:
        """The insured province of the filing's person."""
        return self.person_province(self.filings.filing(filing_id)["psn_no"])

    def problem_provinces(self, problem_id: str) -> set[str]:
        """The provinces a report concerns (its settlement's or visit's, or the reporting province)."""
        facts = self.problems.problem(problem_id).facts
        return {p for p in (facts.treatment_province, facts.insured_province, facts.reporter) if p}


_NATIONAL = Rule("national")

RULES: dict[str, Rule] = {
    "FilingService/File": Rule("insured_row", ("person.insuplc_admdvs",)),
    "FilingService/ReviseFiling": Rule("filing_owner", ("filing.filing_id",)),
    "FilingService/RevokeFiling": Rule("filing_owner", ("filing_id",)),
    "FilingService/ListFilings": Rule("insured_person", ("psn_no", "certno")),
    # SPEC §10.1: a personal account is the insured province's
    "FilingService/AdjustAccount": Rule("insured_person", ("psn_no",)),
    "FilingService/GetAccount": Rule("insured_person", ("psn_no", "certno")),
    "SettlementService/Admit": Rule("institution", ("fixmedins_code",)),
    "SettlementService/CancelAdmission": Rule("visit", ("mdtrt_id",)),
    "SettlementService/UploadFees": Rule("visit", ("mdtrt_id",)),
    "SettlementService/WithdrawFees": Rule("visit", ("mdtrt_id",)),
    "SettlementService/PreSettle": Rule("visit", ("mdtrt_id",)),
    "SettlementService/DischargeSettle": Rule("visit", ("mdtrt_id",)),
    "SettlementService/CancelSettlement": Rule("settlement_treatment", ("setl_id",)),
    "SettlementService/OutpatientSettle": Rule("institution", ("fixmedins_code",)),
    "SettlementService/GetSettlement": Rule("settlement_either", ("setl_id",)),
    "SettlementService/GetAccumulators": Rule("insured_or_filed", ("psn_no",)),
    "SettlementService/Reverse": Rule("own_request"),
    "SettlementService/GetSettlementExplanation": Rule("settlement_either", ("setl_id",)),
    # SPEC §10.8: the designated institutions are public to every platform; who is in hospital is the
    # treatment province's to know
    "SettlementService/ListInstitutions": Rule("any"),
    "SettlementService/ListAdmitted": Rule("institution", ("fixmedins_code",)),
    # Each item of a batch or stream is authorized by its unary RPC's rule (OutpatientSettle,
    # DischargeSettle): a refused item does not refuse its neighbours.
    "SettlementService/SettleBatch": Rule("any"),
    "SettlementService/SettleStream": Rule("any"),
    "AdminService/LoadReferenceData": _NATIONAL,
    "AdminService/GetReferenceDataStatus": _NATIONAL,
    "AdminService/TakeSnapshot": _NATIONAL,
    "DiagnosticsService/Ping": Rule("any"),
    # SPEC §8 funds: the operator sets money and months; a province sees what concerns it.
    "FundsService/SetPrepaid": _NATIONAL,
    "FundsService/TopUpPrepaid": _NATIONAL,
    "FundsService/GetPositions": Rule("own_or_national", ("province",)),
    "FundsService/CloseMonth": _NATIONAL,
    "FundsService/ReopenMonth": _NATIONAL,
    "FundsService/ConfirmStatement": Rule("own_province", ("province",)),
    "FundsService/GetClearingReport": Rule("own_or_national", ("province",)),
    "FundsService/ReconcileTotals": Rule("institution", ("range.fixmedins_code",)),
    "FundsService/ReconcileDetail": Rule("institution", ("range.fixmedins_code",)),
    "FundsService/ListFlagged": Rule("institution", ("range.fixmedins_code",)),
    "ProblemService/ReportProblem": Rule("problem_target", ("setl_id", "mdtrt_id")),
    "ProblemService/ListProblems": Rule("own_or_national", ("province",)),
    "ProblemService/GetProblem": Rule("problem", ("problem_id",)),
    "ProblemService/AssignProblem": Rule("problem", ("problem_id",)),
    "ProblemService/CommentProblem": Rule("problem", ("problem_id",)),
    "ProblemService/ResolveProblem": Rule("problem", ("problem_id",)),
}

# What the refusal says the caller tried to do, per rule kind.
_WHAT = {
    "any": "调用",
    "national": "调用国家平台运维接口",
    "insured_row": "为其他省份的参保人备案",
    "insured_person": "查询其他省份参保人的备案",
    "insured_or_filed": "查询该参保人的累计信息（非参保地或备案就医地）",
    "filing_owner": "变更其他省份参保人的备案",
    "institution": "在其他省份的定点机构办理结算",
    "visit": "办理其他省份的就诊业务",
    "settlement_treatment": "撤销其他省份定点机构的结算",
    "settlement_either": "查询该结算（非就医地或参保地）",
    "own_province": "代其他省份确认清算单",
    "own_or_national": "查询其他省份的资金或问题信息",
}

_HIDDEN_SETTLEMENT = ("SETTLEMENT_NOT_FOUND", "setl_id")
# Rule kind -> (the NOT_FOUND reason, the parameter naming the object) for an object that does not exist or is
# not the caller's to see: the reason's one wording, so the same answer in both cases (SPEC §9, a refusal
# reveals nothing).
_HIDDEN = {
    "insured_person": ("PERSON_NOT_FOUND", "person"),      # not echoed (its wording names no one)
    "insured_or_filed": ("PERSON_NOT_FOUND", "person"),
    "filing_owner": ("FILING_NOT_FOUND", "filing_id"),
    "visit": ("VISIT_NOT_FOUND", "mdtrt_id"),
    "settlement_treatment": _HIDDEN_SETTLEMENT,
    "settlement_either": _HIDDEN_SETTLEMENT,
    # ReportProblem names a settlement (setl_id) or, without one, a visit (_HIDDEN_VISIT_TARGET)
    "problem_target": _HIDDEN_SETTLEMENT,
    "problem": ("PROBLEM_NOT_FOUND", "problem_id"),
}
_HIDDEN_VISIT_TARGET = ("VISIT_NOT_FOUND", "mdtrt_id")
# What the world answers for an object that does not exist (a person unknown to the index is "not filed").
_NOT_FOUND = frozenset(reason for reason, _ in _HIDDEN.values()) | {"PERSON_NOT_FILED"}


def authorize(method: str, caller: str, request: object, world: World) -> None:
    """Refuse (PERMISSION_DENIED, or the object's hidden NOT_FOUND) unless SPEC §9 lets caller do method."""
    rule = RULES[method]
    values = [_field(request, path) for path in rule.fields]
    try:
        allowed = _allowed(rule.kind, values, world)
    except YidiError as err:
        if err.reason in _NOT_FOUND and rule.kind in _HIDDEN:
            raise _hidden(rule.kind, values) from None
        raise
    if caller in allowed:
        return
    if rule.kind == "settlement_treatment" and caller in _allowed("settlement_either", values, world):
        # The insured province may read this settlement, so it learns nothing from being told it cannot cancel it.
        raise YidiError("PERMISSION_DENIED", caller=caller, action=_WHAT[rule.kind])
    if rule.kind in _HIDDEN:
        raise _hidden(rule.kind, values)
    raise YidiError("PERMISSION_DENIED", caller=caller, action=_WHAT[rule.kind])


def _hidden(kind: str, values: list[str]) -> YidiError:
    """The one answer for "no such object" and "not yours": it cannot tell them apart."""
    reason, param = _HIDDEN_VISIT_TARGET if kind == "problem_target" and not values[0] else _HIDDEN[kind]
    named = next((v for v in values if v), "")
    return YidiError(reason, **{param: named[:40]})


def _allowed(kind: str, values: list[str], world: World) -> set[str]:
    """The callers allowed by a rule for the object the values name (unknown objects raise their NOT_FOUND)."""
    if kind == "any":
        return _ANYONE
    if kind == "national":
        return {NATIONAL}
    if kind == "own_request":
        return _ANYONE
    if kind == "insured_row":
        return {province_code(values[0])}
    if kind == "insured_person":
        return {world.person_province(*values)}
    if kind == "insured_or_filed":
        return {world.person_province(values[0])} | world.person_filed_provinces(values[0])
    if kind == "filing_owner":
        return {world.filing_province(values[0])}
    if kind == "institution":
        province = world.institution_province(values[0])
        if province is None:
            # Answered here, before any person is looked up, so it cannot depend on who the patient is.
            raise YidiError("INSTITUTION_UNKNOWN", fixmedins_code=values[0][:40])
        return {province}
    if kind == "visit":
        return {world.visit_provinces(values[0])[0]}
    if kind == "settlement_treatment":
        return {world.settlement_provinces(values[0])[0]}
    if kind == "settlement_either":
        return set(world.settlement_provinces(values[0]))
    if kind == "own_province":
        return {values[0]} if values[0] else _ANYONE  # no province named: the command refuses it as malformed
    if kind == "own_or_national":
        return {NATIONAL, values[0]} if values[0] else {NATIONAL}
    if kind == "problem_target":
        if values[0]:
            return set(world.settlement_provinces(values[0])) | {NATIONAL}
        if values[1]:
            return set(world.visit_provinces(values[1])) | {NATIONAL}
        return _ANYONE  # no target: the command refuses it as malformed
    if kind == "problem":
        return world.problem_provinces(values[0]) | {NATIONAL}
    raise KeyError(kind)


class _Anyone(frozenset):
    def __contains__(self, _item: object) -> bool:
        return True


_ANYONE = _Anyone()


def _field(request: object, path: str) -> str:
    value = request
    for part in path.split("."):
        value = getattr(value, part)
    return value

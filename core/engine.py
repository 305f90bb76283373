"""The visit lifecycle of SPEC §6 over the index: decide, then apply.

``decide(command)`` checks a command against the current state and returns a
``Decision``: the event to record and the result the answer needs, computed
from the same state, without changing anything (a refusal raises
``YidiError``).  ``apply(event, seq)`` changes memory; a restart replays the
ledger through ``apply`` alone.  Both dispatch on the type of their argument.

Memory holds what the hot path needs: the index (reference data, persons,
filings, accumulators) and the open inpatient stays.  Closed visits and every
settlement live in the archive (``core.archive``): ``apply`` returns the
archive changes an event makes, the gateway writes them with the ledger
record, and the engine reads the archive when a command names an old object.
So memory does not grow with history.

The event loop is the only caller, so commands for one person are serial.
"""
from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

import msgspec

from .archive import (
    Archive, ArchivedProblem, ArchivedSettlement, ArchivedVisit, Change, MemoryArchive, ProblemNote, PutProblem,
    PutSettlement, PutVisit, SettlementCancelledChange, VisitStatus,
)
from .commands import (
    AccountResult, AdjustAccount, Admit, AdmitResult, CancelAdmission, CancelResult, CancelSettlement, Card,
    ChangeClearingMonth, Command, Credential, DischargeSettle, FilePerson, FilingResult, MonthResult,
    OutpatientSettle, PersonId, PositionResult,
    ProblemResult, ReportProblem, Result, Reverse, ReverseResult, ReviseFiling, RevokeFiling, SetPrepaid, Reply, TopUpPrepaid,
    UpdateProblem, UploadFees, VisitResult, WithdrawFees,
)
from .errors import YidiError, invariant
from .money import ACCUMULATOR_KEYS, pad
from .events import (
    AccountAdjusted, AdmissionCancelled, Admitted, Breakdown, ClearingMonthChanged, Event, FeeLine, FeesUploaded, FeesWithdrawn,
    Filed, Filing, FilingChanged, Person, PrepaidSet, PrepaidToppedUp, ProblemFacts, ProblemReported,
    ProblemUpdated, ReferenceLoaded, RequestReversed, SettlementCancelled, SettlementFacts, Settled, VisitFacts, problem_id,
    settlement_id, visit_id,
)
from .funds import (
    DEFAULT_RED_BP, DEFAULT_YELLOW_BP, Funds, FundsState, Report, booking_of, check_amount, check_month, check_text,
    risk_flag_values,
)
from .limits import PAGE_ROWS, check_date, check_id, check_line, check_line_count, line_amount_fen, page_limit
from ._core import DEBUG, FILING_KINDS, Index, province_code
from ._wire_numbers import (
    MED_TYPE_CHRONIC, MED_TYPE_UNSPECIFIED, SETTLEMENT_STATUS_SETTLED, SETTLEMENT_STATUS_UNSPECIFIED,
    VISIT_KIND_INPATIENT, VISIT_KIND_OUTPATIENT, FilingKind,
)

INPATIENT = "inpatient"
OUTPATIENT = "outpatient"
CHRONIC = "chronic"   # med_type of an outpatient chronic-disease settlement (SPEC §10.2)
CERT_VOUCHER, CERT_ID_CARD, CERT_SOCIAL_CARD = "01", "02", "03"   # mdtrt_cert_type (SPEC §10.5)

ADMITTED = "admitted"
SETTLED = "settled"
CANCELLED = "cancelled"

# Problem reports (报错处理): what they are about, and what can be done to one.
PROBLEM_CATEGORIES = ("settlement_missing", "amount_dispute", "duplicate_settlement", "eligibility",
                      "reconciliation", "internal_error", "other")
PROBLEM_ACTIONS = {"assign": "assigned", "comment": "commented", "resolve": "resolved"}
MAX_ACCOUNT_ADJUST_FEN = 10 ** 10   # one adjustment of a personal account: at most 1 亿元
GATEWAY = "gateway"   # the reporter of problems the gateway opens itself (internal failures)


class Visit(msgspec.Struct, gc=False):
    """An open inpatient stay (就诊) in memory: what admission decided, and its fee lines."""

    facts: VisitFacts
    lines: dict[str, FeeLine] = msgspec.field(default_factory=dict)   # not settled yet
    status: str = ADMITTED
    setl_id: str = ""
    # SPEC §10.3: the stay's live mid settlements, (setl_id, setl_date, act_pay_dedc), in order; its deductible D
    # (-1 until its first settlement decides it); and the lines they settled
    mids: list[tuple[str, int, int]] = msgspec.field(default_factory=list)
    stay_deductible_fen: int = -1
    settled_lines: dict[str, FeeLine] = msgspec.field(default_factory=dict)

    @property
    def mdtrt_id(self) -> str:
        return self.facts.mdtrt_id

    @property
    def psn_no(self) -> str:
        return self.facts.psn_no

    @property
    def visit_kind(self) -> str:
        return self.facts.visit_kind


class EngineState(msgspec.Struct):
    """The engine's memory apart from the reference data, for snapshots and reloads.

    Reference-independent (persons and institutions by their codes), so it can
    be restored onto a newly loaded reference data set.  Small: the history
    (closed visits, settlements) is in the archive, not here.
    """

    persons: list[Person]          # added or updated by File, latest version
    filings: list[Filing]          # filed, revised or revoked by RPC, latest version
    visits: list[Visit]            # open inpatient stays
    accumulators: list[tuple[str, int, tuple[int, ...]]]   # (psn_no, year, values in ACCUMULATOR_KEYS order)
    funds: FundsState = msgspec.field(default_factory=FundsState)   # positions, clearing months (core/funds.py)
    # SPEC §10.1: each personal account's change since the reference data set in force was loaded
    accounts: list[tuple[str, int]] = msgspec.field(default_factory=list)
    # SPEC §10.2: (psn_no, year, dise_codg, deductible used, fund paid) per person, year and chronic disease
    chronic: list[tuple[str, int, str, int, int]] = msgspec.field(default_factory=list)


class Decision(NamedTuple):
    event: Event
    result: Result


class Engine:
    """Visits, fee lines and settlements, on top of an :class:`Index`."""

    def __init__(self, index: Index, archive: Archive | None = None) -> None:
        self.index = index
        self.archive: Archive = archive if archive is not None else MemoryArchive()
        # open (admitted, not settled) inpatient stays, by mdtrt_id and by person
        self.visits: dict[str, Visit] = {}
        self.open_inpatient: dict[str, set[str]] = {}
        self.runtime_persons: dict[str, Person] = {}
        self.runtime_filings: dict[str, Filing] = {}
        self.funds = Funds()
        # SPEC §10.1: psn_no -> the account's change (fen) recorded since the data set in force was loaded; a
        # balance is the data set's opening balance plus this.  Only accounts that moved are here.
        self.acct_changes: dict[str, int] = {}
        # SPEC §10.2: (psn_no, year, dise_codg) -> [deductible used, fund paid], apart from general outpatient
        self.chronic_acc: dict[tuple[str, int, str], list[int]] = {}
        self._seq = 0  # the ledger seq the command being decided will get: new ids are made from it

    # ------------------------------------------------------------ dispatch
    def decide(self, command: Command, seq: int) -> Decision:
        """The event and result of a command; changes nothing.

        ``seq`` is the ledger seq its record will get if it is recorded: a new
        visit or settlement is named after it (``events.visit_id``), so its id
        is its place in the ledger and its facts are read from there.
        """
        self._seq = seq
        return _DECIDE[type(command)](self, command)

    def apply(self, event: Event, seq: int) -> list[Change]:
        """Change memory by one event (live, or on replay; ``seq`` is its ledger record).

        Returns the archive changes the event makes, also recorded in ``self.archive``.
        """
        changes = _APPLY[type(event)](self, event, seq)
        if changes:
            self.archive.record(changes, seq)
            if DEBUG and type(self.archive) is MemoryArchive:
                self._check_money_of(event)
        if DEBUG:
            self.funds.check_invariants()
        return changes

    def _check_money_of(self, event: Event) -> None:
        """Debug builds: the person's accumulators still equal the sum of their live settlements' deltas."""
        facts = getattr(event, "settlement", None)
        if facts is not None:
            self.check_invariants(self.archive.settlements_of(facts.psn_no))
            self.index.check_invariants()

    # ------------------------------------------------------------ look-ups
    def person(self, psn_no: str = "", certno: str = "") -> dict:
        """The person named by psn_no or certno, or PERSON_NOT_FILED."""
        person = self.index.get_person(self.psn_no_of(psn_no, certno))
        if person is None:
            raise _not_filed(psn_no, certno)
        return person

    def psn_no_of(self, psn_no: str = "", certno: str = "") -> str:
        """The psn_no of the person named by psn_no or certno ("" when no such person; checked by eligibility)."""
        if not psn_no and not certno:
            raise YidiError("INVALID_ARGUMENT", what="人员", problem="须提供人员编号 psn_no 或身份证号 certno 之一",
                            field="psn_no")
        check_id(psn_no or certno, "人员编号或身份证号", field="psn_no" if psn_no else "certno")
        if not psn_no:
            psn_no = self.index.psn_no_by_certno(certno) or ""
        if not psn_no:
            raise _not_filed("", certno)
        return psn_no

    def _patient(self, person: PersonId, card: Card | None, credential: Credential | None) -> str:
        """The psn_no of the patient, as the credential presented names them (SPEC §10.5 mdtrt_cert_type)."""
        kind = credential.cert_type if credential is not None else ""
        if kind == CERT_VOUCHER:
            psn_no = self.index.verify_voucher(credential.cert_no, credential.now_utc_minute)
            if person.certno or person.psn_no not in ("", psn_no):
                raise YidiError("CREDENTIAL_INVALID", problem="与请求中的人员不符")
            return psn_no
        if kind == CERT_ID_CARD and not person.certno:
            raise YidiError("INVALID_ARGUMENT", what="以身份证就医（mdtrt_cert_type 02）", problem="须提供身份证号 certno",
                            field="certno")
        if kind == CERT_SOCIAL_CARD and card is None:
            raise YidiError("INVALID_ARGUMENT", what="以社会保障卡就医（mdtrt_cert_type 03）", problem="须提供卡号 card",
                            field="card")
        if kind not in ("", CERT_ID_CARD, CERT_SOCIAL_CARD):
            raise YidiError("INVALID_ENUM", what=f"就诊凭证类型 {kind[:8]!r}",
                            problem="无效，应为 01（医保电子凭证）、02（居民身份证）或 03（社会保障卡）", field="mdtrt_cert_type")
        return self.psn_no_of(person.psn_no, person.certno)

    def visit(self, mdtrt_id: str) -> Visit | ArchivedVisit:
        """An open stay (in memory) or a closed visit (from the archive)."""
        check_id(mdtrt_id, "就诊ID mdtrt_id", field="mdtrt_id")
        visit = self.visits.get(mdtrt_id) or self.archive.visit(mdtrt_id)
        if visit is None:
            raise YidiError("VISIT_NOT_FOUND", mdtrt_id=mdtrt_id)
        return visit

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

    def filing(self, filing_id: str) -> dict:
        check_id(filing_id, "备案编号 filing_id", field="filing_id")
        filing = self.index.get_filing(filing_id)
        if filing is None:
            raise YidiError("FILING_NOT_FOUND", filing_id=filing_id)
        return filing

    def filings_of(self, psn_no: str) -> list[dict]:
        """A person's filings (备案), as the index holds them."""
        return self.index.filings_of(psn_no)

    def accumulators(self, psn_no: str, year: int) -> dict[str, int]:
        return self.index.accumulators(psn_no, year)

    def chronic_accumulators(self, psn_no: str, year: int) -> list[tuple[str, int, int]]:
        """(dise_codg, deductible used, fund paid) of each chronic disease the person settled in the year."""
        return sorted((code, *values) for (p, y, code), values in self.chronic_acc.items()
                      if p == psn_no and y == year)

    def presettle(self, mdtrt_id: str, setl_date: int, acct_used_flag: bool = False,
                  acct_mulaid_flag: bool = False, mid_setl_flag: bool = False) -> bytes:
        """预结算: the settlement discharge would produce (a SettlementResponse), changing nothing."""
        visit = self._open_visit(mdtrt_id)
        return self._settle(visit, "", setl_date, self._lines_to_settle(visit, setl_date, mid_setl_flag, "setl_date"),
                            acct_used_flag, acct_mulaid_flag, mid=mid_setl_flag)[0].data

    # ------------------------------------------------- mid-stay settlement (SPEC §10.3)
    @staticmethod
    def _fee_date(visit: Visit, line: FeeLine) -> int:
        """A line's date; one without a fee_date counts as dated on the admission date."""
        return line.fee_date or visit.facts.adm_date

    def _lines_to_settle(self, visit: Visit, setl_date: int, mid: bool,
                         date_field: str = "dscg_date") -> tuple[FeeLine, ...]:
        """A mid settlement takes the unsettled lines dated up to its date, the final one all the rest."""
        check_date(setl_date, "结算日期", field=date_field)
        last = visit.mids[-1][1] if visit.mids else 0
        if mid and setl_date <= last or not mid and setl_date < last:
            raise YidiError("INVALID_DATE", what=f"结算日期 {setl_date}", problem=f"须晚于本次住院上一次中途结算的日期 {last}",
                            field=date_field)
        if not mid:
            return tuple(visit.lines.values())
        chosen = {sn for sn, line in visit.lines.items()
                  if not line.init_feedetl_sn and self._fee_date(visit, line) <= setl_date}
        # a refund goes with its original line, whatever its own date (SPEC §10.4)
        return tuple(line for sn, line in visit.lines.items() if (line.init_feedetl_sn or sn) in chosen)

    # ------------------------------------------------- look-ups (SPEC §10.8)
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
        stays = sorted((v for v in self.visits.values() if v.facts.fixmedins_code == fixmedins_code
                        and v.facts.mdtrt_id > after), key=lambda v: v.facts.mdtrt_id)
        rows = []
        for visit in stays[:limit]:
            f = visit.facts
            count, total = _totals(visit.lines.values())
            rows.append({"mdtrt_id": f.mdtrt_id, "psn_no": f.psn_no, "psn_name": self.person(f.psn_no)["name"],
                         "insuplc_admdvs": f.insuplc_admdvs, "adm_date": f.adm_date, "filing_id": f.filing_id,
                         "filing_kind": f.filing_kind, "line_count": count, "medfee_sumamt": total,
                         "mid_setl_ids": [m[0] for m in visit.mids]})
        return rows, len(stays) > limit

    # ------------------------------------------------- explanations (SPEC §10.7)
    def explanation(self, setl_id: str) -> dict:
        """A settlement computed again from what it recorded (its lines, the accumulators it started from, its stay),
        with every term used; ``recomputed_equal`` says the computation gives the recorded amounts (it would not if
        the reference data changed since)."""
        ref = self.settlement(setl_id)
        facts = ref.facts
        if not facts.acc_before:
            raise YidiError("EXPLANATION_UNAVAILABLE", setl_id=setl_id)
        inpatient = facts.visit_kind == INPATIENT
        visit = self.visit(facts.mdtrt_id)
        chronic = (facts.dise_codg, *facts.chronic_before) if facts.dise_codg else None
        stay = ((facts.stay_deductible_fen, sum(dedc for _s, _d, dedc in facts.stay_mids))
                if inpatient and facts.stay_mids else None)
        lines = _net_lines(ref.lines)
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

    # ------------------------------------------------- personal accounts (SPEC §10.1)
    def balance(self, psn_no: str) -> int:
        """A personal account's balance: the opening balance of the data set in force + the changes since."""
        account = self.index.account(psn_no)
        return (account[0] if account is not None else 0) + self.acct_changes.get(psn_no, 0)

    def account(self, psn_no: str = "", certno: str = "") -> AccountResult:
        person = self.person(psn_no, certno)
        family = self.index.account(person["psn_no"])[1]
        return AccountResult(person["psn_no"], self.balance(person["psn_no"]), family,
                             tuple(self.balance(p) for p in family))

    def _account_draws(self, psn_no: str, payable: int, own: bool,
                       family: bool) -> tuple[tuple[tuple[str, int], ...], int, int]:
        """(each account drawn and how much, in order; acct_pay; acct_mulaid_pay) for ``payable`` fen."""
        draws: list[tuple[str, int]] = []
        acct_pay = mulaid_pay = 0
        if own:
            acct_pay = max(0, min(self.balance(psn_no), payable))
            if acct_pay:
                draws.append((psn_no, acct_pay))
        if family:
            for other in self.index.account(psn_no)[1]:
                pay = max(0, min(self.balance(other), payable - acct_pay - mulaid_pay))
                if pay:
                    draws.append((other, pay))
                    mulaid_pay += pay
        return tuple(draws), acct_pay, mulaid_pay

    def _decide_adjust_account(self, cmd: AdjustAccount) -> Decision:
        """The insured province credits or debits a personal account; never below zero."""
        person = self.person(cmd.psn_no)
        amount = cmd.amount_fen
        if type(amount) is not int or amount == 0 or abs(amount) > MAX_ACCOUNT_ADJUST_FEN:
            raise YidiError("INVALID_AMOUNT", what=f"调整金额 {cmd.amount_fen} 分",
                            problem=f"不合理：须为非零整数分，绝对值不超过 {MAX_ACCOUNT_ADJUST_FEN} 分", field="amount_fen")
        check_text(cmd.reason, "调整原因")
        balance = self.balance(person["psn_no"])
        if balance + amount < 0:
            raise YidiError("ACCOUNT_INSUFFICIENT", balance=balance, amount=-amount)
        event = AccountAdjusted(psn_no=person["psn_no"], amount_fen=amount, reason=cmd.reason)
        family = self.index.account(person["psn_no"])[1]
        return Decision(event, AccountResult(person["psn_no"], balance + amount, family,
                                             tuple(self.balance(p) for p in family)))

    def _apply_account_adjusted(self, event: AccountAdjusted, _seq: int) -> list[Change]:
        self._acct_add(event.psn_no, event.amount_fen)
        return []

    def _acct_add(self, psn_no: str, amount_fen: int) -> None:
        change = self.acct_changes.get(psn_no, 0) + amount_fen
        if change:
            self.acct_changes[psn_no] = change
        else:
            self.acct_changes.pop(psn_no, None)

    # --------------------------------------- whose objects (SPEC §9, core/access.py)
    def institution_province(self, fixmedins_code: str) -> str | None:
        inst = self.index.get_institution(fixmedins_code)
        return province_code(inst["admdvs"]) if inst is not None else None

    def visit_provinces(self, mdtrt_id: str) -> tuple[str, str]:
        """(treatment province, insured province) of a visit; VISIT_NOT_FOUND if there is none."""
        facts = self.visit(mdtrt_id).facts
        return province_code(facts.mdtrtarea_admdvs), province_code(facts.insuplc_admdvs)

    def settlement_provinces(self, setl_id: str) -> tuple[str, str]:
        facts = self.settlement(setl_id).facts
        return province_code(facts.mdtrtarea_admdvs), province_code(facts.insuplc_admdvs)

    def person_province(self, psn_no: str = "", certno: str = "") -> str:
        return province_code(self.person(psn_no, certno)["insuplc_admdvs"])

    def person_filed_provinces(self, psn_no: str) -> set[str]:
        return {province_code(f["dest_admdvs"]) for f in self.index.filings_of(psn_no)}

    def filing_province(self, filing_id: str) -> str:
        """The insured province of the filing's person."""
        return self.person_province(self.filing(filing_id)["psn_no"])

    # -------------------------------------------------------------- filings
    def _decide_file(self, cmd: FilePerson) -> Decision:
        """备案: the person's record (insert or update) and one new filing."""
        person, filing = cmd.person.as_row(), cmd.filing.as_row()
        self.index.check_person(person)
        if filing["psn_no"] != person["psn_no"]:
            raise YidiError("INVALID_ARGUMENT", what="备案记录的人员编号", problem="与人员信息不一致", field="filing.psn_no")
        self.index.check_person_conflicts(person)
        if self.index.get_filing(filing["filing_id"]) is not None:
            raise YidiError("FILING_CONFLICT", filing_id=filing["filing_id"], problem="已存在")
        self.index.check_filing(filing, person=person)
        return Decision(Filed(person=cmd.person, filing=cmd.filing), FilingResult(cmd.filing))

    def _decide_revise_filing(self, cmd: ReviseFiling) -> Decision:
        """备案变更: a new destination, institution list or validity; not the person or the kind."""
        rev = cmd.filing
        old = self.filing(rev.filing_id)
        if rev.psn_no not in ("", old["psn_no"]) or rev.kind not in ("", old["kind"]):
            raise YidiError("FILING_CONFLICT", filing_id=cmd.filing.filing_id, problem="的人员或备案类型不能由备案变更改变")
        revised = dict(old, dest_admdvs=rev.dest_admdvs, fixmedins_codes=list(rev.fixmedins_codes),
                       valid_from=rev.valid_from, valid_to=rev.valid_to)
        if rev.status:
            revised["status"] = rev.status
        self.index.check_filing(revised)
        filing = _filing(revised)
        return Decision(FilingChanged(filing=filing), FilingResult(filing))

    def _decide_revoke_filing(self, cmd: RevokeFiling) -> Decision:
        """备案撤销."""
        filing = _filing(dict(self.filing(cmd.filing_id), status="revoked"))
        return Decision(FilingChanged(filing=filing), FilingResult(filing))

    # ------------------------------------------------------------ inpatient
    def _decide_admit(self, cmd: Admit) -> Decision:
        """入院登记: eligibility (SPEC §4) and a new visit id; an emergency may imply its filing (SPEC §10.6)."""
        psn_no = self._patient(cmd.person, cmd.card, cmd.credential)
        person = self.person(psn_no)
        check_date(cmd.adm_date, "入院日期", field="adm_date")
        card_no, card_version = (cmd.card.card_no, cmd.card.card_version) if cmd.card else (None, None)
        elig = self.index.admission(psn_no, cmd.fixmedins_code, True, cmd.adm_date, card_no, card_version,
                                    has_open_inpatient=bool(self.open_inpatient.get(psn_no)), emergency=cmd.emergency)
        visit = self._new_visit(psn_no, cmd.fixmedins_code, INPATIENT, cmd.adm_date, elig)
        return Decision(Admitted(visit=visit, ipt_no=cmd.ipt_no), AdmitResult(visit, person["name"]))

    def _new_visit(self, psn_no: str, fixmedins_code: str, visit_kind: str, adm_date: int,
                   elig) -> VisitFacts:
        """A visit with the next id, carrying what eligibility chose (an Admission: filing, regions, level)."""
        return VisitFacts(
            mdtrt_id=visit_id(self._seq), psn_no=psn_no, fixmedins_code=fixmedins_code,
            visit_kind=visit_kind, adm_date=adm_date, filing_id=elig.filing_id,
            filing_kind=elig.filing_kind, insuplc_admdvs=elig.insuplc_admdvs,
            mdtrtarea_admdvs=elig.mdtrtarea_admdvs, fixmedins_level=elig.fixmedins_level,
        )

    def _open_visit(self, mdtrt_id: str) -> Visit:
        visit = self.visit(mdtrt_id)
        if visit.facts.visit_kind != INPATIENT:
            raise YidiError("VISIT_KIND_MISMATCH", mdtrt_id=mdtrt_id)
        if visit.status == SETTLED:
            raise YidiError("VISIT_ALREADY_SETTLED", mdtrt_id=mdtrt_id, setl_id=visit.setl_id, action="办理住院业务")
        if visit.status != ADMITTED:
            raise YidiError("VISIT_NOT_OPEN", mdtrt_id=mdtrt_id)
        invariant(type(visit) is Visit, f"open stay {mdtrt_id} is not in memory")
        return visit

    def _decide_cancel_admission(self, cmd: CancelAdmission) -> Decision:
        """入院撤销: only before settlement."""
        visit = self._open_visit(cmd.mdtrt_id)
        if visit.mids:
            raise YidiError("VISIT_ALREADY_SETTLED", mdtrt_id=cmd.mdtrt_id, setl_id=visit.mids[-1][0],
                            action="撤销入院登记")
        count, total = _totals(visit.lines.values())
        return Decision(AdmissionCancelled(mdtrt_id=cmd.mdtrt_id),
                        VisitResult(cmd.mdtrt_id, CANCELLED, count, total))

    def _decide_upload_fees(self, cmd: UploadFees) -> Decision:
        """费用明细上传: new lines are added, identical re-sent lines are no-ops."""
        visit = self._open_visit(cmd.mdtrt_id)
        new: dict[str, FeeLine] = {}
        last_mid = visit.mids[-1][1] if visit.mids else 0
        for i, line in enumerate(cmd.lines):
            _check_line(line, i)
            settled = visit.settled_lines.get(line.feedetl_sn)
            if settled is not None:
                if settled.content() == line.content():
                    continue   # re-sent as it was: a no-op, as for any line
                raise YidiError("FEE_LINE_CONFLICT", feedetl_sn=line.feedetl_sn,
                                problem="已中途结算，不能更改；如需更正，请先撤销该中途结算")
            seen = visit.lines.get(line.feedetl_sn) or new.get(line.feedetl_sn)
            if seen is None and last_mid and self._fee_date(visit, line) <= last_mid:
                raise YidiError("FEE_DATE_SETTLED", feedetl_sn=line.feedetl_sn, fee_date=self._fee_date(visit, line),
                                mid_date=last_mid)
            if seen is None:
                new[line.feedetl_sn] = line
            elif seen.content() != line.content():
                raise YidiError("FEE_LINE_CONFLICT", feedetl_sn=line.feedetl_sn,
                                problem="已上传过不同的内容。如需更正，请先撤销该明细再重新上传")
        check_line_count(len(visit.lines) + len(new), "一次住院")
        _check_refunds({**visit.lines, **new}, new.values(), visit.settled_lines)
        count, total = _totals({**visit.lines, **new}.values())
        return Decision(FeesUploaded(mdtrt_id=cmd.mdtrt_id, lines=tuple(new.values())),
                        VisitResult(cmd.mdtrt_id, ADMITTED, count, total))

    def _decide_withdraw_fees(self, cmd: WithdrawFees) -> Decision:
        """费用明细撤销: the named lines, or all lines when none are named."""
        visit = self._open_visit(cmd.mdtrt_id)
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
        count, total = _totals(line for sn, line in visit.lines.items() if sn not in withdrawn)
        return Decision(FeesWithdrawn(mdtrt_id=cmd.mdtrt_id, sns=tuple(sns)),
                        VisitResult(cmd.mdtrt_id, ADMITTED, count, total))

    def _decide_discharge_settle(self, cmd: DischargeSettle) -> Decision:
        """出院结算."""
        visit = self._open_visit(cmd.mdtrt_id)
        lines = self._lines_to_settle(visit, cmd.dscg_date, cmd.mid_setl_flag)
        reply, facts, month = self._settle(visit, settlement_id(self._seq), cmd.dscg_date, lines,
                                           cmd.acct_used_flag, cmd.acct_mulaid_flag, mid=cmd.mid_setl_flag)
        return Decision(Settled(settlement=facts, lines=lines, clearing_month=month), reply)

    def _decide_cancel_settlement(self, cmd: CancelSettlement) -> Decision:
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
            stay = self.visits.get(facts.mdtrt_id)
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

    # ------------------------------------------------------------- 冲正
    def _decide_reverse(self, cmd: Reverse) -> Decision:
        """冲正 (SPEC §6): cancel what the original did, exactly as a cancellation would; or mark it reversed."""
        if cmd.target_kind == "settlement":
            check_date(cmd.reverse_date, "冲正日期 reverse_date", field="reverse_date")
            decision = self._decide_cancel_settlement(CancelSettlement(
                request_id=cmd.request_id, setl_id=cmd.target_id, cancel_date=cmd.reverse_date))
            outcome = "settlement_cancelled"
        elif cmd.target_kind == "admission":
            decision = self._decide_cancel_admission(CancelAdmission(request_id=cmd.request_id,
                                                                     mdtrt_id=cmd.target_id))
            outcome = "admission_cancelled"
        else:
            return Decision(RequestReversed(original_request_id=cmd.original_request_id),
                            ReverseResult("not_performed", cmd.original_request_id))
        return Decision(decision.event, ReverseResult(outcome, cmd.original_request_id, decision.result))

    def _apply_request_reversed(self, _event: RequestReversed, _seq: int) -> list[Change]:
        """Nothing in memory: the reversed key lives in the idempotency index."""
        return []

    # ----------------------------------------------------------- outpatient
    def _decide_outpatient_settle(self, cmd: OutpatientSettle) -> Decision:
        """门诊一站式: eligibility, the visit, its lines and the settlement in one event."""
        psn_no = self._patient(cmd.person, cmd.card, cmd.credential)
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
            _check_line(line, i)
            if line.feedetl_sn in seen:
                raise YidiError("FEE_LINE_CONFLICT", feedetl_sn=line.feedetl_sn, problem="在本次结算中重复出现")
            seen.add(line.feedetl_sn)
        _check_refunds({line.feedetl_sn: line for line in cmd.lines}, cmd.lines, {})
        facts = self._new_visit(psn_no, cmd.fixmedins_code, OUTPATIENT, cmd.setl_date, elig)
        reply, settlement, month = self._settle(Visit(facts), settlement_id(self._seq), cmd.setl_date, cmd.lines,
                                                cmd.acct_used_flag, cmd.acct_mulaid_flag, cmd.dise_codg)
        return Decision(Settled(settlement=settlement, visit=facts, lines=cmd.lines, clearing_month=month), reply)

    # ----------------------------------------------------------- settlement
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
            used, paid = self.chronic_acc.get((facts.psn_no, setl_date // 10000, dise_codg), (0, 0))
            chronic = (dise_codg, used, paid)
        priced = _net_lines(lines)   # SPEC §10.4: each original line with its net quantity
        bill = self.index.bill(facts.psn_no, facts.fixmedins_code, facts.filing_kind, inpatient, setl_date, priced,
                               chronic, stay)
        flags = self.funds.settlement_flags(  # SPEC §7: decided once, recorded, never blocking
            inpatient=inpatient, adm_date=facts.adm_date, setl_date=setl_date, high_cost=bill.high_cost,
            setl_id=setl_id, psn_no=facts.psn_no)
        month = self.funds.booking_month(setl_date) if setl_id else 0
        draws, acct_pay = (), 0
        if acct_used or acct_mulaid:  # SPEC §10.1: the accounts pay part of the in-policy personal share
            draws, acct_pay, mulaid_pay = self._account_draws(facts.psn_no, bill.acct_payable, acct_used, acct_mulaid)
            bill.set_accounts(acct_pay, mulaid_pay)
        reply = bill.settlement_response(
            setl_id=setl_id, mdtrt_id=facts.mdtrt_id, psn_no=facts.psn_no, psn_name=bill.person_name,
            fixmedins_code=facts.fixmedins_code, fixmedins_name=bill.institution_name,
            insuplc_admdvs=facts.insuplc_admdvs, mdtrtarea_admdvs=facts.mdtrtarea_admdvs,
            visit_kind=_VISIT_KIND_PB[facts.visit_kind], insutype=int(bill.insutype_code),  # its value is its code
            filing_id=facts.filing_id, filing_kind=_FILING_KIND_PB[facts.filing_kind], setl_date=setl_date,
            status=SETTLEMENT_STATUS_SETTLED if setl_id else SETTLEMENT_STATUS_UNSPECIFIED, lines=priced,
            risk_flags=risk_flag_values(flags), clearing_month=month, balc=self.balance(facts.psn_no) - acct_pay,
            med_type=MED_TYPE_CHRONIC if dise_codg else MED_TYPE_UNSPECIFIED, dise_codg=dise_codg, mid_setl_flag=mid)
        settlement = SettlementFacts(
            setl_id=setl_id, mdtrt_id=facts.mdtrt_id, psn_no=facts.psn_no, fixmedins_code=facts.fixmedins_code,
            insuplc_admdvs=facts.insuplc_admdvs, mdtrtarea_admdvs=facts.mdtrtarea_admdvs,
            visit_kind=facts.visit_kind, insutype=bill.insutype_code, setl_date=setl_date, year=bill.year,
            breakdown=Breakdown(*bill.breakdown), deltas=bill.deltas, risk_flags=flags, acct_draws=draws,
            dise_codg=dise_codg, mid_setl_flag=mid, stay_deductible_fen=bill.stay_deductible_fen if inpatient else -1,
            stay_mids=tuple(visit.mids) if inpatient else (), acc_before=bill.acc_before,
            chronic_before=(used, paid) if dise_codg else (),
        )
        return Reply(reply), settlement, month

    # ---------------------------------------------------------------- apply
    def _apply_filed(self, event: Filed, seq: int) -> list[Change]:
        self._put_person(event.person)
        return self._apply_filing(FilingChanged(filing=event.filing), seq)

    def _put_person(self, person: Person) -> None:
        self.index.put_person(person.as_row())
        self.runtime_persons[person.psn_no] = person

    def _apply_filing(self, event: FilingChanged, _seq: int) -> list[Change]:
        self.index.put_filing(event.filing.as_row())
        self.runtime_filings[event.filing.filing_id] = event.filing
        return []

    def _apply_admitted(self, event: Admitted, _seq: int) -> list[Change]:
        self._open(Visit(event.visit))
        return [PutVisit(ArchivedVisit(event.visit, ADMITTED))]

    def _open(self, visit: Visit) -> None:
        self.visits[visit.mdtrt_id] = visit
        self.open_inpatient.setdefault(visit.psn_no, set()).add(visit.mdtrt_id)

    def _close(self, mdtrt_id: str) -> Visit:
        visit = self.visits.pop(mdtrt_id)
        open_ids = self.open_inpatient[visit.psn_no]
        open_ids.discard(mdtrt_id)
        if not open_ids:
            del self.open_inpatient[visit.psn_no]
        return visit

    def _apply_admission_cancelled(self, event: AdmissionCancelled, _seq: int) -> list[Change]:
        self._close(event.mdtrt_id)
        return [VisitStatus(event.mdtrt_id, CANCELLED, "")]

    def _apply_fees(self, event: FeesUploaded, _seq: int) -> list[Change]:
        lines = self.visits[event.mdtrt_id].lines
        for line in event.lines:
            lines[line.feedetl_sn] = line
        return []

    def _apply_fees_withdrawn(self, event: FeesWithdrawn, _seq: int) -> list[Change]:
        lines = self.visits[event.mdtrt_id].lines
        for sn in event.sns:
            del lines[sn]
        return []

    def _apply_settled(self, event: Settled, seq: int) -> list[Change]:
        s = event.settlement
        self._add_deltas(s, 1)
        for psn_no, amount_fen in s.acct_draws:
            self._acct_add(psn_no, -amount_fen)
        if event.visit is not None:  # outpatient: the visit is born settled
            changes = [PutVisit(ArchivedVisit(event.visit, SETTLED, s.setl_id)),
                       PutSettlement(ArchivedSettlement(s, seq, lines=event.lines))]
        elif s.mid_setl_flag:  # SPEC §10.3: the stay stays admitted, its settled lines set aside
            visit = self.visits[s.mdtrt_id]
            for line in event.lines:
                del visit.lines[line.feedetl_sn]
                visit.settled_lines[line.feedetl_sn] = line
            visit.mids.append((s.setl_id, s.setl_date, s.breakdown.act_pay_dedc))
            visit.stay_deductible_fen = s.stay_deductible_fen
            changes = [PutSettlement(ArchivedSettlement(s, seq, lines=event.lines))]
        else:  # inpatient: the stay closes; its lines go to the archive, to open again on cancellation
            visit = self._close(s.mdtrt_id)
            lines = event.lines or tuple(visit.lines.values())  # the first release did not record them
            changes = [VisitStatus(s.mdtrt_id, SETTLED, s.setl_id), PutSettlement(ArchivedSettlement(s, seq, lines=lines))]
        self._book(s, event.clearing_month, s.setl_date, 1)
        return changes

    def _add_deltas(self, facts: SettlementFacts, sign: int) -> None:
        """A settlement's recorded deltas, added (+1) or taken back (−1); a chronic-disease visit's outpatient
        deltas go to that disease's accumulators (SPEC §10.2)."""
        deltas, chronic = split_deltas(facts)
        self.index.add_deltas(facts.psn_no, facts.year, deltas, sign)
        if chronic is not None:
            key = (facts.psn_no, facts.year, facts.dise_codg)
            values = self.chronic_acc.setdefault(key, [0, 0])
            values[0] += sign * chronic[0]
            values[1] += sign * chronic[1]
            invariant(values[0] >= 0 and values[1] >= 0, f"chronic accumulators of {key} below zero")
            if values == [0, 0]:
                del self.chronic_acc[key]

    def _book(self, facts: SettlementFacts, month: int, date: int, sign: int) -> None:
        """SPEC §8 in the same record as the settlement or its cancellation: the position and the clearing month."""
        self.funds.book(booking_of(facts), month or self.funds.booking_month(date), sign)
        if facts.visit_kind == OUTPATIENT:
            self.funds.count_outpatient(facts.psn_no, facts.setl_date, sign)

    def _apply_settlement_cancelled(self, event: SettlementCancelled, seq: int) -> list[Change]:
        facts, visit, lines = event.settlement, event.visit, event.lines
        if facts is None:  # recorded by the first release: the immutable facts are in the archive
            ref = self.archive.settlement(event.setl_id)
            facts, lines = ref.facts, ref.lines
            visit = self.archive.visit(facts.mdtrt_id).facts
        self._add_deltas(facts, -1)
        for psn_no, amount_fen in facts.acct_draws:  # exactly what it drew, back to the same accounts
            self._acct_add(psn_no, amount_fen)
        self._book(facts, event.clearing_month, event.cancel_date, -1)
        changes: list[Change] = [SettlementCancelledChange(event.setl_id, event.cancel_date, seq, facts.fixmedins_code,
                                                           facts.setl_date, event.clearing_month)]
        if facts.visit_kind == INPATIENT and facts.mid_setl_flag:
            # SPEC §10.3: the latest mid settlement of a stay still admitted; its lines are unsettled again.
            stay = self.visits[facts.mdtrt_id]
            invariant(bool(stay.mids) and stay.mids[-1][0] == facts.setl_id, f"{facts.setl_id} is not the latest")
            stay.mids.pop()
            for line in lines:
                del stay.settled_lines[line.feedetl_sn]
                stay.lines[line.feedetl_sn] = line
            if not stay.mids:
                stay.stay_deductible_fen = -1
        elif facts.visit_kind == INPATIENT:
            # The stay is open again for correction and a new settlement (with its mid settlements, if any).
            self._open(Visit(visit, lines={line.feedetl_sn: line for line in lines}, mids=list(facts.stay_mids),
                             stay_deductible_fen=facts.stay_deductible_fen if facts.stay_mids else -1,
                             settled_lines={line.feedetl_sn: line for line in event.settled_lines}))
            changes.append(VisitStatus(facts.mdtrt_id, ADMITTED, ""))
        else:
            changes.append(VisitStatus(facts.mdtrt_id, CANCELLED, ""))
        return changes

    def _apply_reference_loaded(self, _event: ReferenceLoaded, _seq: int) -> list[Change]:
        """The gateway loads reference data before it replays or records this.  The new data set's opening
        balances already include every account change before it (SPEC §10.1), so the changes start afresh."""
        self.acct_changes.clear()
        return []

    # ------------------------------------------------- funds (SPEC §8, core/funds.py)
    def check_province(self, code: str) -> str:
        """A known province code (6 digits ending in 0000), else INVALID_ARGUMENT."""
        if not (isinstance(code, str) and len(code) == 6 and code.isdigit() and code.endswith("0000")
                and self.index.region_name(code)):
            raise YidiError("INVALID_ARGUMENT", what=f"省份代码「{str(code)[:20]}」",
                            problem="无效，应为已知省级行政区划代码（如 460000）", field="province")
        return code

    def _decide_set_prepaid(self, cmd: SetPrepaid) -> Decision:
        """核定预付金: the amount and the warning lines (0 = the defaults, 70% and 90%)."""
        province = self.check_province(cmd.province)
        amount = check_amount(cmd.amount_fen, "预付金额度")
        yellow, red = cmd.yellow_bp or DEFAULT_YELLOW_BP, cmd.red_bp or DEFAULT_RED_BP
        if not 0 < yellow < red <= 10000:
            raise YidiError("INVALID_ARGUMENT", what="预警线", problem=f"须满足 0 < 黄色 {yellow} < 红色 {red} ≤ 10000（万分比）",
                            field="yellow_bp")
        after = msgspec.structs.replace(self.funds.position(province), prepaid_fen=amount, topped_up_fen=0,
                                        yellow_bp=yellow, red_bp=red)
        return Decision(PrepaidSet(province=province, amount_fen=amount, yellow_bp=yellow, red_bp=red),
                        PositionResult(after, self.index.region_name(province)))

    def _decide_top_up(self, cmd: TopUpPrepaid) -> Decision:
        """调增预付金."""
        province = self.check_province(cmd.province)
        before = self.funds.position(province)
        amount = check_amount(cmd.amount_fen, "调增金额", positive=True)
        check_amount(before.prepaid_fen + amount, "调增后的预付金额度")
        after = msgspec.structs.replace(before, prepaid_fen=before.prepaid_fen + amount,
                                        topped_up_fen=before.topped_up_fen + amount)
        return Decision(PrepaidToppedUp(province=province, amount_fen=amount),
                        PositionResult(after, self.index.region_name(province)))

    def _decide_clearing_month(self, cmd: ChangeClearingMonth) -> Decision:
        """Close (冻结) or reopen a clearing month, or confirm (确认) a province's statement of it."""
        month = check_month(cmd.month)
        state = self.funds.month_state(month)
        confirmed = tuple(state.confirmed)
        if cmd.action == "close":
            if state.closed:
                raise YidiError("CLEARING_MONTH_CLOSED", month=month)
            event, closed = ClearingMonthChanged(month=month, action="closed"), True
        elif not state.closed:
            raise YidiError("CLEARING_MONTH_OPEN", month=month, action="确认或重新打开")
        elif cmd.action == "reopen":
            if confirmed:
                raise YidiError("CLEARING_MONTH_CONFIRMED", month=month, provinces="、".join(confirmed),
                                consequence="，不能重新打开")
            event, closed = ClearingMonthChanged(month=month, action="reopened"), False
        elif cmd.action == "confirm":
            province = self.check_province(cmd.province)
            if province in confirmed:
                raise YidiError("CLEARING_MONTH_CONFIRMED", month=month, provinces=province, consequence="，无需重复确认")
            event, closed = ClearingMonthChanged(month=month, action="confirmed", province=province), True
            confirmed = tuple(sorted(confirmed + (province,)))
        else:
            raise YidiError("INVALID_ARGUMENT", what=f"清算操作 {cmd.action!r}", problem="未知")
        return Decision(event, MonthResult(month, closed, confirmed))

    def clearing_report(self, month: int, province: str = "", with_institutions: bool = True) -> Report:
        """A closed month's statement (SPEC §8); an open month has none yet."""
        check_month(month)
        if province:
            self.check_province(province)
        if month not in self.funds.closed:
            raise YidiError("CLEARING_MONTH_OPEN", month=month, action="出具清算报表")
        return self.funds.report(month, province, with_institutions)

    def institution_name(self, fixmedins_code: str) -> str:
        inst = self.index.get_institution(fixmedins_code)
        return inst["name"] if inst is not None else ""

    def region_name(self, code: str) -> str:
        return self.index.region_name(code) or ""

    def positions(self, province: str = "") -> list[PositionResult]:
        """Prepaid positions with their provinces' names: one known province's, or every one held, by code."""
        provinces = [self.check_province(province)] if province else sorted(self.funds.positions)
        return [PositionResult(self.funds.position(p), self.region_name(p)) for p in provinces]

    def check_reconcile_range(self, fixmedins_code: str, date_from: int, date_to: int) -> None:
        """对账: a known institution and a date range (both ends included)."""
        check_id(fixmedins_code, "定点医药机构编码 fixmedins_code", field="range.fixmedins_code")
        if self.index.get_institution(fixmedins_code) is None:
            raise YidiError("INSTITUTION_UNKNOWN", fixmedins_code=fixmedins_code)
        check_date(date_from, "对账起始日期", field="range.date_from")
        check_date(date_to, "对账截止日期", field="range.date_to")
        if date_to < date_from:
            raise YidiError("INVALID_DATE", what=f"对账截止日期 {date_to}", problem=f"早于起始日期 {date_from}，请核对",
                            field="range.date_to")

    def _apply_prepaid_set(self, event: PrepaidSet, _seq: int) -> list[Change]:
        self.funds.set_prepaid(event.province, event.amount_fen, event.yellow_bp, event.red_bp)
        return []

    def _apply_topped_up(self, event: PrepaidToppedUp, _seq: int) -> list[Change]:
        self.funds.top_up(event.province, event.amount_fen)
        return []

    def _apply_clearing_month(self, event: ClearingMonthChanged, _seq: int) -> list[Change]:
        if event.action == "closed":
            self.funds.close(event.month)
        elif event.action == "reopened":
            self.funds.reopen(event.month)
        else:
            self.funds.confirm(event.month, event.province)
        return []

    # ---------------------------------------------------- problem reports (报错处理)
    def problem(self, problem_id: str) -> ArchivedProblem:
        check_id(problem_id, "问题编号 problem_id", field="problem_id")
        row = self.archive.problem(problem_id)
        if row is None:
            raise YidiError("PROBLEM_NOT_FOUND", problem_id=problem_id)
        return row

    def problem_provinces(self, problem_id: str) -> set[str]:
        """The provinces a report concerns (its settlement's or visit's, or the reporting province)."""
        facts = self.problem(problem_id).facts
        return {p for p in (facts.treatment_province, facts.insured_province, facts.reporter) if p}

    def _decide_report_problem(self, cmd: ReportProblem) -> Decision:
        if cmd.category not in PROBLEM_CATEGORIES:
            raise YidiError("INVALID_ENUM", what=f"问题类别 {cmd.category!r}",
                            problem=f"无效，应为：{'、'.join(PROBLEM_CATEGORIES)}",
                            field="category")
        check_text(cmd.text, "问题描述")
        mdtrt_id = cmd.mdtrt_id
        if cmd.setl_id:
            settled = self.settlement(cmd.setl_id).facts
            treatment, insured = province_code(settled.mdtrtarea_admdvs), province_code(settled.insuplc_admdvs)
            mdtrt_id = settled.mdtrt_id
        elif cmd.mdtrt_id:
            treatment, insured = self.visit_provinces(cmd.mdtrt_id)
        elif cmd.reporter == GATEWAY:
            treatment, insured = (self.check_province(cmd.province) if cmd.province else ""), ""
        else:
            raise YidiError("INVALID_ARGUMENT", what="问题报告", problem="须指明所涉的结算ID setl_id 或就诊ID mdtrt_id",
                            field="setl_id")
        facts = ProblemFacts(problem_id=problem_id(self._seq), reporter=cmd.reporter, category=cmd.category,
                             text=cmd.text, setl_id=cmd.setl_id, mdtrt_id=mdtrt_id, treatment_province=treatment,
                             insured_province=insured, opened_at_ms=cmd.at_ms)
        return Decision(ProblemReported(problem=facts), ProblemResult(ArchivedProblem(facts, updated_at_ms=cmd.at_ms)))

    def _decide_update_problem(self, cmd: UpdateProblem) -> Decision:
        row = self.problem(cmd.problem_id)
        action = PROBLEM_ACTIONS.get(cmd.action)
        if action is None:
            raise YidiError("INVALID_ENUM", what=f"处理动作 {cmd.action!r}", problem=f"无效，应为：{'、'.join(PROBLEM_ACTIONS)}")
        check_text(cmd.text, {"assigned": "经办人", "commented": "意见", "resolved": "处理结果说明"}[action])
        if row.state == "resolved" and action != "commented":
            raise YidiError("PROBLEM_RESOLVED", problem_id=cmd.problem_id)
        event = ProblemUpdated(problem_id=cmd.problem_id, action=action, by=cmd.by, text=cmd.text, at_ms=cmd.at_ms)
        return Decision(event, ProblemResult(_updated_problem(row, event)))

    def _apply_problem_reported(self, event: ProblemReported, seq: int) -> list[Change]:
        f = event.problem
        return [PutProblem(ArchivedProblem(f, updated_at_ms=f.opened_at_ms)),
                ProblemNote(f.problem_id, seq, "opened", f.reporter, f.text, f.opened_at_ms)]

    def _apply_problem_updated(self, event: ProblemUpdated, seq: int) -> list[Change]:
        row = self.archive.problem(event.problem_id)
        invariant(row is not None, f"problem {event.problem_id} updated before it was reported")
        return [PutProblem(_updated_problem(row, event)),
                ProblemNote(event.problem_id, seq, event.action, event.by, event.text, event.at_ms)]

    # ------------------------------------------------------ snapshots, reloads
    def export_state(self) -> EngineState:
        return EngineState(
            persons=list(self.runtime_persons.values()), filings=list(self.runtime_filings.values()),
            visits=list(self.visits.values()), accumulators=self.index.accumulator_rows(),
            funds=self.funds.export(), accounts=sorted(self.acct_changes.items()),
            chronic=sorted((p, y, c, v[0], v[1]) for (p, y, c), v in self.chronic_acc.items()),
        )

    @classmethod
    def restore(cls, index: Index, state: EngineState, archive: Archive | None = None) -> Engine:
        """An engine on ``index`` holding ``state`` (the index must hold no runtime changes yet)."""
        engine = cls(index, archive)
        for person in state.persons:
            engine._put_person(person)
        for filing in state.filings:
            engine._apply_filing(FilingChanged(filing=filing), 0)
        for visit in state.visits:
            engine._open(visit)
        for psn_no, year, values in state.accumulators:
            # kept before the newest accumulators were declared: they read as 0 (core/money.py)
            index.apply_deltas(psn_no, year, dict(zip(ACCUMULATOR_KEYS, pad(values, len(ACCUMULATOR_KEYS)),
                                                      strict=True)), 1)
        engine.funds = Funds.restore(state.funds)
        engine.acct_changes = dict(state.accounts)
        engine.chronic_acc = {(p, y, c): [used, paid] for p, y, c, used, paid in state.chronic}
        return engine

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


# ------------------------------------------------------------------ helpers
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

def _filing(row: dict) -> Filing:
    return Filing(filing_id=row["filing_id"], psn_no=row["psn_no"], kind=row["kind"],
                  dest_admdvs=row["dest_admdvs"], fixmedins_codes=tuple(row["fixmedins_codes"]),
                  valid_from=row["valid_from"], valid_to=row["valid_to"], status=row["status"])


def _updated_problem(row: ArchivedProblem, event: ProblemUpdated) -> ArchivedProblem:
    if event.action == "assigned":
        return msgspec.structs.replace(row, assignee=event.text, updated_at_ms=event.at_ms)
    if event.action == "resolved":
        return msgspec.structs.replace(row, state="resolved", resolution=event.text, updated_at_ms=event.at_ms,
                                       resolved_at_ms=event.at_ms)
    return msgspec.structs.replace(row, updated_at_ms=event.at_ms)


def _not_filed(psn_no: str, certno: str) -> YidiError:
    return YidiError("PERSON_NOT_FILED", person=f"人员编号 {psn_no[:40]}" if psn_no else f"身份证号 {certno[:40]}")


def _check_line(line: FeeLine, i: int) -> None:
    """One fee line's fields; a refusal names the field as lines[i].<field> (BadRequest)."""
    try:
        _check_line_fields(line)
    except YidiError as err:
        err.metadata["field"] = f"lines[{i}]." + err.metadata["field"] if "field" in err.metadata else f"lines[{i}]"
        raise


def _check_line_fields(line: FeeLine) -> None:
    qty = line.qty_milli
    if line.init_feedetl_sn:  # SPEC §10.4: a refund line has a negative quantity, checked as its size
        check_id(line.init_feedetl_sn, "原费用明细流水号 init_feedetl_sn", field="init_feedetl_sn")
        if type(qty) is not int or qty >= 0:
            raise YidiError("INVALID_QUANTITY", what=f"退费明细 {line.feedetl_sn} 的数量", problem="须为负数（千分之一单位）",
                            field="qty_milli")
        if line.init_feedetl_sn == line.feedetl_sn:
            raise YidiError("INVALID_ARGUMENT", what=f"退费明细 {line.feedetl_sn}", problem="不能退自己", field="init_feedetl_sn")
        qty = -qty
    check_line(line.feedetl_sn, line.code, line.name, line.unit_price_fen, qty, line.fee_date)


def _check_refunds(lines: dict[str, FeeLine], new: Iterable[FeeLine], settled: dict[str, FeeLine]) -> None:
    """SPEC §10.4: each new refund names an unsettled original line of the stay (the lines so far, ``lines``, with
    the new ones) with its code and unit price, and no original's net quantity goes below 0."""
    for line in new:
        if not line.init_feedetl_sn:
            continue
        original = lines.get(line.init_feedetl_sn)
        if original is None and line.init_feedetl_sn in settled:
            raise YidiError("LINE_ALREADY_SETTLED", feedetl_sn=line.init_feedetl_sn, action="再退费")
        if original is None:
            raise YidiError("FEE_LINE_NOT_FOUND", feedetl_sn=line.init_feedetl_sn,
                            consequence=f"退费明细 {line.feedetl_sn} 无所可退")
        if original.init_feedetl_sn or (original.code, original.unit_price_fen) != (line.code, line.unit_price_fen):
            raise YidiError("INVALID_ARGUMENT", what=f"退费明细 {line.feedetl_sn}",
                            problem=f"须与原明细 {original.feedetl_sn} 的项目编码和单价相同（且原明细不能是退费明细）")
    net = _net_quantities(lines.values())
    over = [sn for sn, qty in net.items() if qty < 0]
    if over:
        raise YidiError("REFUND_EXCEEDS_ORIGINAL", feedetl_sn=over[0], net_qty_milli=net[over[0]])


def _net_quantities(lines: Iterable[FeeLine]) -> dict[str, int]:
    """Each original line's quantity net of its refunds (refunds of unknown lines are left out)."""
    net: dict[str, int] = {}
    refunds = []
    for line in lines:
        if line.init_feedetl_sn:
            refunds.append(line)
        else:
            net[line.feedetl_sn] = line.qty_milli
    for line in refunds:
        if line.init_feedetl_sn in net:
            net[line.init_feedetl_sn] += line.qty_milli
    return net


def _net_lines(lines: tuple[FeeLine, ...]) -> tuple[FeeLine, ...]:
    """SPEC §10.4: the original lines with their net quantities (what §5.1 prices); a line refunded to 0 is gone."""
    if not any(line.init_feedetl_sn for line in lines):
        return lines
    net = _net_quantities(lines)
    return tuple(msgspec.structs.replace(line, qty_milli=net[line.feedetl_sn]) for line in lines
                 if not line.init_feedetl_sn and net[line.feedetl_sn] > 0)


def _totals(lines: Iterable[FeeLine]) -> tuple[int, int]:
    """(line count, sum of line amounts, refunds netted) of fee lines."""
    lines = tuple(lines)
    total = 0
    for line in _net_lines(lines):
        total += line_amount_fen(line.unit_price_fen, line.qty_milli)
    return len(lines), total


# The contract's values (generated from common.proto) of the enums an answer carries, by the core's names; a name
# the contract lacks fails here, at import.
_VISIT_KIND_PB = {INPATIENT: VISIT_KIND_INPATIENT, OUTPATIENT: VISIT_KIND_OUTPATIENT}
_FILING_KIND_PB = {kind: FilingKind["FILING_KIND_" + kind.upper()] for kind in FILING_KINDS}

_DECIDE: dict[type, Callable[[Engine, Command], Decision]] = {
    FilePerson: Engine._decide_file,
    ReviseFiling: Engine._decide_revise_filing,
    RevokeFiling: Engine._decide_revoke_filing,
    Admit: Engine._decide_admit,
    CancelAdmission: Engine._decide_cancel_admission,
    UploadFees: Engine._decide_upload_fees,
    WithdrawFees: Engine._decide_withdraw_fees,
    DischargeSettle: Engine._decide_discharge_settle,
    CancelSettlement: Engine._decide_cancel_settlement,
    OutpatientSettle: Engine._decide_outpatient_settle,
    Reverse: Engine._decide_reverse,
    SetPrepaid: Engine._decide_set_prepaid,
    TopUpPrepaid: Engine._decide_top_up,
    ChangeClearingMonth: Engine._decide_clearing_month,
    ReportProblem: Engine._decide_report_problem,
    UpdateProblem: Engine._decide_update_problem,
    AdjustAccount: Engine._decide_adjust_account,
}

_APPLY: dict[type, Callable[[Engine, Event, int], list[Change]]] = {
    Filed: Engine._apply_filed,
    FilingChanged: Engine._apply_filing,
    Admitted: Engine._apply_admitted,
    AdmissionCancelled: Engine._apply_admission_cancelled,
    FeesUploaded: Engine._apply_fees,
    FeesWithdrawn: Engine._apply_fees_withdrawn,
    Settled: Engine._apply_settled,
    SettlementCancelled: Engine._apply_settlement_cancelled,
    RequestReversed: Engine._apply_request_reversed,
    ReferenceLoaded: Engine._apply_reference_loaded,
    PrepaidSet: Engine._apply_prepaid_set,
    PrepaidToppedUp: Engine._apply_topped_up,
    ClearingMonthChanged: Engine._apply_clearing_month,
    ProblemReported: Engine._apply_problem_reported,
    ProblemUpdated: Engine._apply_problem_updated,
    AccountAdjusted: Engine._apply_account_adjusted,
}

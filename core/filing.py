"""Persons and their filings (备案): who the patient is (SPEC §10.5), and filing, revising and revoking.

The reference data set holds the persons and filings it was generated with;
the ones filed, revised or revoked by RPC since are put into the index too
and kept here (``persons``, ``filings``), so they survive a reload of the
reference data and go into snapshots.
"""
from __future__ import annotations

from typing import Callable

from .commands import Card, Credential, Decision, FilePerson, FilingResult, PersonId, ReviseFiling, RevokeFiling
from .errors import YidiError
from .events import Filed, Filing, FilingChanged, Person
from .limits import check_id
from ._core import Index

CERT_VOUCHER, CERT_ID_CARD, CERT_SOCIAL_CARD = "01", "02", "03"   # mdtrt_cert_type (SPEC §10.5)


class Filings:
    """The persons and filings changed by RPC, over the index that holds every one."""

    def __init__(self, index: Index, persons: list[Person] = (), filings: list[Filing] = ()) -> None:
        self.index = index
        self.persons: dict[str, Person] = {}
        self.filings: dict[str, Filing] = {}
        for person in persons:
            self._put_person(person)
        for filing in filings:
            self._put_filing(filing)

    def decisions(self) -> dict[type, Callable]:
        return {FilePerson: self.decide_file, ReviseFiling: self.decide_revise, RevokeFiling: self.decide_revoke}

    def appliers(self) -> dict[type, Callable]:
        return {Filed: self.apply_filed, FilingChanged: self.apply_changed}

    # ------------------------------------------------------------ look-ups
    def person(self, psn_no: str = "", certno: str = "") -> dict:
        """The person named by psn_no or certno, or PERSON_NOT_FILED."""
        person = self.index.get_person(self.psn_no_of(psn_no, certno))
        if person is None:
            raise not_filed(psn_no, certno)
        return person

    def psn_no_of(self, psn_no: str = "", certno: str = "") -> str:
        """The psn_no of the person named by psn_no or certno (PERSON_NOT_FILED when there is no such person)."""
        if not psn_no and not certno:
            raise YidiError("INVALID_ARGUMENT", what="人员", problem="须提供人员编号 psn_no 或身份证号 certno 之一",
                            field="psn_no")
        check_id(psn_no or certno, "人员编号或身份证号", field="psn_no" if psn_no else "certno")
        if not psn_no:
            psn_no = self.index.psn_no_by_certno(certno) or ""
        if not psn_no:
            raise not_filed("", certno)
        return psn_no

    def patient(self, person: PersonId, card: Card | None, credential: Credential | None) -> str:
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

    def filing(self, filing_id: str) -> dict:
        check_id(filing_id, "备案编号 filing_id", field="filing_id")
        filing = self.index.get_filing(filing_id)
        if filing is None:
            raise YidiError("FILING_NOT_FOUND", filing_id=filing_id)
        return filing

    def filings_of(self, psn_no: str) -> list[dict]:
        """A person's filings (备案), as the index holds them."""
        return self.index.filings_of(psn_no)

    # ------------------------------------------------------------ decide
    def decide_file(self, cmd: FilePerson, _seq: int) -> Decision:
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

    def decide_revise(self, cmd: ReviseFiling, _seq: int) -> Decision:
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
        filing = Filing.from_row(revised)
        return Decision(FilingChanged(filing=filing), FilingResult(filing))

    def decide_revoke(self, cmd: RevokeFiling, _seq: int) -> Decision:
        """备案撤销."""
        filing = Filing.from_row(dict(self.filing(cmd.filing_id), status="revoked"))
        return Decision(FilingChanged(filing=filing), FilingResult(filing))

    # ------------------------------------------------------------- apply
    def apply_filed(self, event: Filed, _seq: int) -> list:
        self._put_person(event.person)
        self._put_filing(event.filing)
        return []

    def apply_changed(self, event: FilingChanged, _seq: int) -> list:
        self._put_filing(event.filing)
        return []

    def _put_person(self, person: Person) -> None:
        self.index.put_person(person.as_row())
        self.persons[person.psn_no] = person

    def _put_filing(self, filing: Filing) -> None:
        self.index.put_filing(filing.as_row())
        self.filings[filing.filing_id] = filing


def not_filed(psn_no: str, certno: str) -> YidiError:
    return YidiError("PERSON_NOT_FILED", person=f"人员编号 {psn_no[:40]}" if psn_no else f"身份证号 {certno[:40]}")

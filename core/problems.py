"""Problem reports (报错处理): a province, or the gateway itself, reports what went wrong with a settlement or visit.

A report is opened about a settlement or a visit (the provinces it concerns
are theirs), or, by the gateway, about its own failure; it is assigned,
commented and resolved.  Reports live in the archive, with a note per step.
"""
from __future__ import annotations

from typing import Callable

import msgspec

from .archive import Archive, ArchivedProblem, ProblemNote, PutProblem
from .clearing import Clearing
from .commands import Decision, ProblemResult, ReportProblem, UpdateProblem
from .errors import YidiError, invariant
from .events import ProblemFacts, ProblemReported, ProblemUpdated, problem_id
from .funds import check_text
from .limits import check_id
from .settlement import Settlements
from .visits import Visits
from ._core import province_code

CATEGORIES = ("settlement_missing", "amount_dispute", "duplicate_settlement", "eligibility",
              "reconciliation", "internal_error", "other")
ACTIONS = {"assign": "assigned", "comment": "commented", "resolve": "resolved"}
GATEWAY = "gateway"   # the reporter of problems the gateway opens itself (internal failures)


class Problems:
    def __init__(self, archive: Archive, settlements: Settlements, visits: Visits, clearing: Clearing) -> None:
        self.archive = archive
        self.settlements = settlements
        self.visits = visits
        self.clearing = clearing

    def decisions(self) -> dict[type, Callable]:
        return {ReportProblem: self.decide_report, UpdateProblem: self.decide_update}

    def appliers(self) -> dict[type, Callable]:
        return {ProblemReported: self.apply_reported, ProblemUpdated: self.apply_updated}

    def problem(self, problem_id: str) -> ArchivedProblem:
        check_id(problem_id, "问题编号 problem_id", field="problem_id")
        row = self.archive.problem(problem_id)
        if row is None:
            raise YidiError("PROBLEM_NOT_FOUND", problem_id=problem_id)
        return row

    # ------------------------------------------------------------ decide
    def decide_report(self, cmd: ReportProblem, seq: int) -> Decision:
        if cmd.category not in CATEGORIES:
            raise YidiError("INVALID_ENUM", what=f"问题类别 {cmd.category!r}", problem=f"无效，应为：{'、'.join(CATEGORIES)}",
                            field="category")
        check_text(cmd.text, "问题描述")
        mdtrt_id = cmd.mdtrt_id
        if cmd.setl_id:
            settled = self.settlements.settlement(cmd.setl_id).facts
            treatment, insured = province_code(settled.mdtrtarea_admdvs), province_code(settled.insuplc_admdvs)
            mdtrt_id = settled.mdtrt_id
        elif cmd.mdtrt_id:
            visit = self.visits.visit(cmd.mdtrt_id).facts
            treatment, insured = province_code(visit.mdtrtarea_admdvs), province_code(visit.insuplc_admdvs)
        elif cmd.reporter == GATEWAY:
            treatment, insured = (self.clearing.check_province(cmd.province) if cmd.province else ""), ""
        else:
            raise YidiError("INVALID_ARGUMENT", what="问题报告", problem="须指明所涉的结算ID setl_id 或就诊ID mdtrt_id",
                            field="setl_id")
        facts = ProblemFacts(problem_id=problem_id(seq), reporter=cmd.reporter, category=cmd.category,
                             text=cmd.text, setl_id=cmd.setl_id, mdtrt_id=mdtrt_id, treatment_province=treatment,
                             insured_province=insured, opened_at_ms=cmd.at_ms)
        return Decision(ProblemReported(problem=facts), ProblemResult(ArchivedProblem(facts, updated_at_ms=cmd.at_ms)))

    def decide_update(self, cmd: UpdateProblem, _seq: int) -> Decision:
        row = self.problem(cmd.problem_id)
        action = ACTIONS.get(cmd.action)
        if action is None:
            raise YidiError("INVALID_ENUM", what=f"处理动作 {cmd.action!r}", problem=f"无效，应为：{'、'.join(ACTIONS)}")
        check_text(cmd.text, {"assigned": "经办人", "commented": "意见", "resolved": "处理结果说明"}[action])
        if row.state == "resolved" and action != "commented":
            raise YidiError("PROBLEM_RESOLVED", problem_id=cmd.problem_id)
        event = ProblemUpdated(problem_id=cmd.problem_id, action=action, by=cmd.by, text=cmd.text, at_ms=cmd.at_ms)
        return Decision(event, ProblemResult(_updated(row, event)))

    # ------------------------------------------------------------- apply
    def apply_reported(self, event: ProblemReported, seq: int) -> list:
        f = event.problem
        return [PutProblem(ArchivedProblem(f, updated_at_ms=f.opened_at_ms)),
                ProblemNote(f.problem_id, seq, "opened", f.reporter, f.text, f.opened_at_ms)]

    def apply_updated(self, event: ProblemUpdated, seq: int) -> list:
        row = self.archive.problem(event.problem_id)
        invariant(row is not None, f"problem {event.problem_id} updated before it was reported")
        return [PutProblem(_updated(row, event)),
                ProblemNote(event.problem_id, seq, event.action, event.by, event.text, event.at_ms)]


def _updated(row: ArchivedProblem, event: ProblemUpdated) -> ArchivedProblem:
    if event.action == "assigned":
        return msgspec.structs.replace(row, assignee=event.text, updated_at_ms=event.at_ms)
    if event.action == "resolved":
        return msgspec.structs.replace(row, state="resolved", resolution=event.text, updated_at_ms=event.at_ms,
                                       resolved_at_ms=event.at_ms)
    return msgspec.structs.replace(row, updated_at_ms=event.at_ms)

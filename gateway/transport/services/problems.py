"""ProblemService: problem reports (报错处理, SPEC §8).  Translation only; reports are read through gateway/reads.py.

The time a report is opened or changed is stamped here (the core has no
clock) and recorded in its event; its age is computed when it is read.
"""
from __future__ import annotations

import time

from core import commands as cmd

from .. import convert
from ...app import Gateway
from ..._pb.yidi.v1 import problems_pb2 as ppb
from .base import request_digest

def now_ms() -> int:
    return int(time.time() * 1000)


class ProblemService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {"ReportProblem": self.report, "ListProblems": self.list_problems, "GetProblem": self.get,
                "AssignProblem": self.assign, "CommentProblem": self.comment, "ResolveProblem": self.resolve}

    async def report(self, req: ppb.ReportProblemRequest, caller: str):
        command = cmd.ReportProblem(request_id=req.request_id, reporter=caller,
                                    category=convert.PROBLEM_CATEGORY.str(req.category), text=req.text,
                                    setl_id=req.setl_id, mdtrt_id=req.mdtrt_id, at_ms=now_ms())
        return await self.gw.execute(caller, command, request_digest(req))

    async def list_problems(self, req: ppb.ListProblemsRequest, _caller: str):
        rows = self.gw.reads.problems(req.province, convert.PROBLEM_STATE.str(req.state, required=False),
                                      req.after_problem_id, req.limit)
        now = now_ms()
        problems = [convert.problem_pb(row, now) for row in rows]
        return ppb.ListProblemsResponse(problems=problems, overdue=sum(p.overdue for p in problems))

    async def get(self, req: ppb.GetProblemRequest, _caller: str):
        row, notes = self.gw.reads.problem(req.problem_id)
        return ppb.ProblemDetail(problem=convert.problem_pb(row, now_ms()), notes=[convert.note_pb(n) for n in notes])

    async def assign(self, req: ppb.UpdateProblemRequest, caller: str):
        return await self._update(req, caller, "assign")

    async def comment(self, req: ppb.UpdateProblemRequest, caller: str):
        return await self._update(req, caller, "comment")

    async def resolve(self, req: ppb.UpdateProblemRequest, caller: str):
        return await self._update(req, caller, "resolve")

    async def _update(self, req: ppb.UpdateProblemRequest, caller: str, action: str):
        command = cmd.UpdateProblem(request_id=req.request_id, problem_id=req.problem_id, action=action, by=caller,
                                    text=req.text, at_ms=now_ms())
        return await self.gw.execute(caller, command, request_digest(req))

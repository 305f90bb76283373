"""FilingService: translation only; the rules are in core (engine, index, access)."""
from __future__ import annotations

from core import commands as cmd

from .. import convert
from ...app import Gateway
from ..._pb.yidi.v1 import filing_pb2 as fpb
from .base import request_digest


class FilingService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {"File": self.file, "ReviseFiling": self.revise, "RevokeFiling": self.revoke,
                "ListFilings": self.list, "AdjustAccount": self.adjust_account, "GetAccount": self.get_account}

    async def file(self, req: fpb.FileRequest, caller: str):
        return await self.gw.execute(caller, convert.file_command(req), request_digest(req))

    async def revise(self, req: fpb.ReviseFilingRequest, caller: str):
        command = cmd.ReviseFiling(request_id=req.request_id, filing=convert.filing_revision(req.filing))
        return await self.gw.execute(caller, command, request_digest(req))

    async def revoke(self, req: fpb.RevokeFilingRequest, caller: str):
        command = cmd.RevokeFiling(request_id=req.request_id, filing_id=req.filing_id)
        return await self.gw.execute(caller, command, request_digest(req))

    async def list(self, req: fpb.ListFilingsRequest, _caller: str):
        engine = self.gw.engine
        person = engine.filings.person(req.psn_no, req.certno)
        return fpb.ListFilingsResponse(
            person=convert.person_pb(person),
            filings=[convert.filing_pb(f) for f in engine.filings.filings_of(person["psn_no"])],
        )

    async def adjust_account(self, req: fpb.AdjustAccountRequest, caller: str):
        command = cmd.AdjustAccount(request_id=req.request_id, psn_no=req.psn_no, amount_fen=req.amount_fen,
                                    reason=req.reason)
        return await self.gw.execute(caller, command, request_digest(req))

    async def get_account(self, req: fpb.GetAccountRequest, _caller: str):
        return convert.account_pb(self.gw.engine.accounts.account(req.psn_no, req.certno))

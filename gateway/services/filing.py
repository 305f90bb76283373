"""FilingService: translation only; the rules are in core.engine and the index."""
from __future__ import annotations


from ..app import Gateway
from ..auth import current_caller, require_province
from ..convert import filing_pb, filing_row, person_pb, person_row
from .._pb.yidi.v1 import filing_pb2 as fpb


class FilingService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {"File": self.file, "ReviseFiling": self.revise, "RevokeFiling": self.revoke,
                "ListFilings": self.list}

    @staticmethod
    def _respond(event: dict) -> fpb.FilingResponse:
        return fpb.FilingResponse(filing=filing_pb(event["filing"]))

    async def file(self, req: fpb.FileRequest):
        person, filing = person_row(req.person), filing_row(req.filing)

        def decide():
            require_province(current_caller(), person["insuplc_admdvs"], "为其他省份的参保人备案")
            return self.gw.engine.decide_file(person, filing)

        return await self.gw.mutate(req, decide, self._respond)

    def _own_filing(self, filing_id: str) -> None:
        """The caller must be the insured province of the filing's person."""
        engine = self.gw.engine
        person = engine.index.get_person(engine.filing(filing_id)["psn_no"])
        require_province(current_caller(), person["insuplc_admdvs"], "变更其他省份参保人的备案")

    async def revise(self, req: fpb.ReviseFilingRequest):
        filing = filing_row(req.filing, partial=True)

        def decide():
            self._own_filing(filing["filing_id"])
            return self.gw.engine.decide_revise_filing(filing)

        return await self.gw.mutate(req, decide, self._respond)

    async def revoke(self, req: fpb.RevokeFilingRequest):
        def decide():
            self._own_filing(req.filing_id)
            return self.gw.engine.decide_revoke_filing(req.filing_id)

        return await self.gw.mutate(req, decide, self._respond)

    async def list(self, req: fpb.ListFilingsRequest):
        engine = self.gw.engine
        person = engine.person(req.psn_no, req.certno)
        require_province(current_caller(), person["insuplc_admdvs"], "查询其他省份参保人的备案")
        return fpb.ListFilingsResponse(
            person=person_pb(person),
            filings=[filing_pb(f) for f in engine.index.filings_of(person["psn_no"])],
        )

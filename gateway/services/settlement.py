"""SettlementService: translation only; the rules are in core (engine, index, access)."""
from __future__ import annotations

from core import commands as cmd
from core.limits import check_year

from .. import convert
from ..app import Gateway
from .._pb.yidi.v1 import common_pb2 as pb
from .._pb.yidi.v1 import settlement_pb2 as spb
from .base import request_digest


class SettlementService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {
            "Admit": self.admit, "CancelAdmission": self.cancel_admission, "UploadFees": self.upload_fees,
            "WithdrawFees": self.withdraw_fees, "PreSettle": self.presettle,
            "DischargeSettle": self.discharge_settle, "CancelSettlement": self.cancel_settlement,
            "OutpatientSettle": self.outpatient_settle, "GetSettlement": self.get_settlement,
            "GetAccumulators": self.get_accumulators, "Reverse": self.reverse,
        }

    async def admit(self, req: spb.AdmitRequest, caller: str):
        return await self.gw.execute(caller, convert.admit_command(req), request_digest(req))

    async def cancel_admission(self, req: spb.CancelAdmissionRequest, caller: str):
        command = cmd.CancelAdmission(request_id=req.request_id, mdtrt_id=req.mdtrt_id)
        return await self.gw.execute(caller, command, request_digest(req))

    async def upload_fees(self, req: spb.UploadFeesRequest, caller: str):
        command = cmd.UploadFees(request_id=req.request_id, mdtrt_id=req.mdtrt_id, lines=convert.fee_lines(req.lines))
        return await self.gw.execute(caller, command, request_digest(req))

    async def withdraw_fees(self, req: spb.WithdrawFeesRequest, caller: str):
        command = cmd.WithdrawFees(request_id=req.request_id, mdtrt_id=req.mdtrt_id, sns=tuple(req.feedetl_sns))
        return await self.gw.execute(caller, command, request_digest(req))

    async def presettle(self, req: spb.PreSettleRequest, _caller: str):
        view = self.gw.engine.presettle(req.mdtrt_id, req.setl_date)
        return spb.SettlementResponse(settlement=convert.settlement_pb(view))

    async def discharge_settle(self, req: spb.DischargeSettleRequest, caller: str):
        command = cmd.DischargeSettle(request_id=req.request_id, mdtrt_id=req.mdtrt_id, dscg_date=req.dscg_date)
        return await self.gw.execute(caller, command, request_digest(req))

    async def cancel_settlement(self, req: spb.CancelSettlementRequest, caller: str):
        command = cmd.CancelSettlement(request_id=req.request_id, setl_id=req.setl_id, cancel_date=req.cancel_date)
        return await self.gw.execute(caller, command, request_digest(req))

    async def outpatient_settle(self, req: spb.OutpatientSettleRequest, caller: str):
        return await self.gw.execute(caller, convert.outpatient_command(req), request_digest(req))

    async def get_settlement(self, req: spb.GetSettlementRequest, _caller: str):
        engine = self.gw.engine
        ref = engine.settlement(req.setl_id)
        return spb.SettlementResponse(
            settlement=convert.recorded_settlement(engine.reply(ref), ref.status, ref.cancel_date))

    async def get_accumulators(self, req: spb.GetAccumulatorsRequest, _caller: str):
        engine = self.gw.engine
        person = engine.person(req.psn_no)
        check_year(req.year)
        return pb.Accumulators(psn_no=person["psn_no"], year=req.year,
                               **engine.accumulators(person["psn_no"], req.year))

    async def reverse(self, req: spb.ReverseRequest, caller: str):
        command = cmd.Reverse(request_id=req.request_id, original_request_id=req.original_request_id,
                              reverse_date=req.reverse_date)
        return await self.gw.execute(caller, command, request_digest(req))

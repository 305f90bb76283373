"""SettlementService: translation only; the rules are in core.engine and the index."""
from __future__ import annotations

from core.engine import visit_totals
from core.errors import YidiError
from core.limits import check_date

from ..app import Gateway
from ..auth import current_caller, province_of, require_province
from ..convert import FILING_KIND, VISIT_STATUS, fee_lines, settlement_pb
from .._pb.yidi.v1 import common_pb2 as pb
from .._pb.yidi.v1 import settlement_pb2 as spb


def _card(req) -> tuple[str | None, str | None]:
    return (req.card.card_no, req.card.card_version) if req.HasField("card") else (None, None)


class SettlementService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {
            "Admit": self.admit, "CancelAdmission": self.cancel_admission, "UploadFees": self.upload_fees,
            "WithdrawFees": self.withdraw_fees, "PreSettle": self.presettle,
            "DischargeSettle": self.discharge_settle, "CancelSettlement": self.cancel_settlement,
            "OutpatientSettle": self.outpatient_settle, "GetSettlement": self.get_settlement,
            "GetAccumulators": self.get_accumulators,
        }

    # ------------------------------------------------------------ helpers
    def _at_institution(self, fixmedins_code: str) -> None:
        """A province acts only at its own institutions (an unknown one is §4's to answer)."""
        inst = self.gw.engine.index.get_institution(fixmedins_code)
        if inst is not None:
            require_province(current_caller(), inst["admdvs"], "在其他省份的定点机构办理结算")

    def _own_visit(self, mdtrt_id: str):
        visit = self.gw.engine.visit(mdtrt_id)
        require_province(current_caller(), visit.mdtrtarea_admdvs, "办理其他省份的就诊业务")
        return visit

    def _visit_response(self, event: dict) -> spb.VisitResponse:
        visit = self.gw.engine.visits[event["mdtrt_id"]]
        count, total = visit_totals(visit)
        return spb.VisitResponse(mdtrt_id=visit.mdtrt_id, status=VISIT_STATUS.pb(visit.status),
                                 line_count=count, medfee_sumamt=total)

    @staticmethod
    def _settlement_response(event: dict) -> spb.SettlementResponse:
        return spb.SettlementResponse(settlement=settlement_pb(event["settlement"]))

    # ---------------------------------------------------------- inpatient
    async def admit(self, req: spb.AdmitRequest):
        card_no, card_version = _card(req)

        def decide():
            engine = self.gw.engine
            self._at_institution(req.fixmedins_code)
            person = engine.person(req.psn_no, req.certno)
            return engine.decide_admit(person["psn_no"], req.fixmedins_code, req.adm_date,
                                       card_no, card_version, req.ipt_no)

        def respond(event):
            v = event["visit"]
            person = self.gw.engine.index.get_person(v["psn_no"])
            return spb.AdmitResponse(
                mdtrt_id=v["mdtrt_id"], psn_no=v["psn_no"], psn_name=person["name"], filing_id=v["filing_id"],
                filing_kind=FILING_KIND.pb(v["filing_kind"]), insuplc_admdvs=v["insuplc_admdvs"],
                mdtrtarea_admdvs=v["mdtrtarea_admdvs"], fixmedins_level=v["fixmedins_level"],
            )

        return await self.gw.mutate(req, decide, respond)

    async def cancel_admission(self, req: spb.CancelAdmissionRequest):
        def decide():
            self._own_visit(req.mdtrt_id)
            return self.gw.engine.decide_cancel_admission(req.mdtrt_id)

        return await self.gw.mutate(req, decide, self._visit_response)

    async def upload_fees(self, req: spb.UploadFeesRequest):
        def decide():
            self._own_visit(req.mdtrt_id)
            return self.gw.engine.decide_upload_fees(req.mdtrt_id, fee_lines(req.lines))

        return await self.gw.mutate(req, decide, self._visit_response)

    async def withdraw_fees(self, req: spb.WithdrawFeesRequest):
        def decide():
            self._own_visit(req.mdtrt_id)
            return self.gw.engine.decide_withdraw_fees(req.mdtrt_id, req.feedetl_sns)

        return await self.gw.mutate(req, decide, self._visit_response)

    async def presettle(self, req: spb.PreSettleRequest):
        self._own_visit(req.mdtrt_id)
        return spb.SettlementResponse(settlement=settlement_pb(self.gw.engine.presettle(req.mdtrt_id, req.setl_date)))

    async def discharge_settle(self, req: spb.DischargeSettleRequest):
        def decide():
            self._own_visit(req.mdtrt_id)
            return self.gw.engine.decide_discharge_settle(req.mdtrt_id, req.dscg_date)

        return await self.gw.mutate(req, decide, self._settlement_response)

    async def cancel_settlement(self, req: spb.CancelSettlementRequest):
        original = await self._durable_settlement(req.setl_id)

        def decide():
            ref = self.gw.engine.settlement(req.setl_id)
            require_province(current_caller(), ref.mdtrtarea_admdvs, "撤销其他省份定点机构的结算")
            return self.gw.engine.decide_cancel_settlement(req.setl_id, req.cancel_date)

        def respond(event):
            cancelled = dict(original, status="cancelled", cancel_date=event["cancel_date"])
            return spb.SettlementResponse(settlement=settlement_pb(cancelled))

        return await self.gw.mutate(req, decide, respond)

    async def _durable_settlement(self, setl_id: str) -> dict:
        """The settlement as recorded in the ledger (memory keeps only its deltas)."""
        ref = self.gw.engine.settlement(setl_id)
        event = await self.gw.ledger_record(setl_id, "settled")
        if event is None:
            raise YidiError("NOT_READY", f"结算 {setl_id} 正在写入，请稍后重试。")
        return dict(event["settlement"], status=ref.status, cancel_date=ref.cancel_date)

    # --------------------------------------------------------- outpatient
    async def outpatient_settle(self, req: spb.OutpatientSettleRequest):
        card_no, card_version = _card(req)

        def decide():
            engine = self.gw.engine
            self._at_institution(req.fixmedins_code)
            person = engine.person(req.psn_no, req.certno)
            return engine.decide_outpatient_settle(person["psn_no"], req.fixmedins_code, req.setl_date,
                                                   fee_lines(req.lines), card_no, card_version)

        return await self.gw.mutate(req, decide, self._settlement_response)

    # -------------------------------------------------------------- reads
    async def get_settlement(self, req: spb.GetSettlementRequest):
        ref = self.gw.engine.settlement(req.setl_id)
        caller = current_caller()
        if caller not in (province_of(ref.mdtrtarea_admdvs), province_of(ref.insuplc_admdvs)):
            raise YidiError("PERMISSION_DENIED", f"调用方 {caller} 无权查询结算 {req.setl_id}（非就医地或参保地）。")
        return spb.SettlementResponse(settlement=settlement_pb(await self._durable_settlement(req.setl_id)))

    async def get_accumulators(self, req: spb.GetAccumulatorsRequest):
        engine = self.gw.engine
        person = engine.person(req.psn_no)
        caller = current_caller()
        filed_in = {province_of(f["dest_admdvs"]) for f in engine.index.filings_of(person["psn_no"])}
        if caller != province_of(person["insuplc_admdvs"]) and caller not in filed_in:
            raise YidiError("PERMISSION_DENIED", f"调用方 {caller} 无权查询该参保人的累计信息（非参保地或备案就医地）。")
        check_date(req.year * 10000 + 101, "年度")
        acc = engine.index.accumulators(person["psn_no"], req.year)
        return pb.Accumulators(psn_no=person["psn_no"], year=req.year, **acc)

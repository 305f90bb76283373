"""FundsService: prepaid positions, clearing months, reconciliation, risk-flag lists (SPEC §7, §8).

Translation only: the rules are in ``core.funds`` (through the engine), the
reads of the store's projections in gateway/reads.py.
"""
from __future__ import annotations

from typing import AsyncIterator

from core import commands as cmd
from core.errors import YidiError
from core.events import id_seq
from core.funds import DetailReconciliation, Item

from .. import convert
from ...app import Gateway
from ...reads import Range
from ..._pb.yidi.v1 import funds_pb2 as fdpb
from .base import request_digest


class FundsService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {
            "SetPrepaid": self.set_prepaid, "TopUpPrepaid": self.top_up, "GetPositions": self.get_positions,
            "CloseMonth": self.close_month, "ReopenMonth": self.reopen_month,
            "ConfirmStatement": self.confirm_statement, "GetClearingReport": self.get_clearing_report,
            "ReconcileTotals": self.reconcile_totals, "ReconcileDetail": self.reconcile_detail,
            "ListFlagged": self.list_flagged,
        }

    # ------------------------------------------------------------ positions
    async def set_prepaid(self, req: fdpb.SetPrepaidRequest, caller: str):
        command = cmd.SetPrepaid(request_id=req.request_id, province=req.province, amount_fen=req.amount_fen,
                                 yellow_bp=req.yellow_bp, red_bp=req.red_bp)
        return await self.gw.execute(caller, command, request_digest(req))

    async def top_up(self, req: fdpb.TopUpPrepaidRequest, caller: str):
        command = cmd.TopUpPrepaid(request_id=req.request_id, province=req.province, amount_fen=req.amount_fen)
        return await self.gw.execute(caller, command, request_digest(req))

    async def get_positions(self, req: fdpb.GetPositionsRequest, _caller: str):
        return fdpb.Positions(positions=[convert.position_pb(r.position, r.province_name)
                                         for r in self.gw.engine.clearing.positions(req.province)])

    # ------------------------------------------------------------ clearing months
    async def close_month(self, req: fdpb.ClearingMonthRequest, caller: str):
        return await self._month(caller, req, "close")

    async def reopen_month(self, req: fdpb.ClearingMonthRequest, caller: str):
        return await self._month(caller, req, "reopen")

    async def confirm_statement(self, req: fdpb.ConfirmStatementRequest, caller: str):
        return await self._month(caller, req, "confirm", req.province)

    async def _month(self, caller: str, req, action: str, province: str = ""):
        command = cmd.ChangeClearingMonth(request_id=req.request_id, month=req.month, action=action, province=province)
        return await self.gw.execute(caller, command, request_digest(req))

    async def get_clearing_report(self, req: fdpb.GetClearingReportRequest, _caller: str):
        engine = self.gw.engine
        report = engine.clearing.report(req.month, req.province, req.with_institutions)
        return convert.report_pb(report, engine.reads.region_name, engine.reads.institution_name)

    # ------------------------------------------------------------ reconciliation (对账)
    async def reconcile_totals(self, req: fdpb.ReconcileTotalsRequest, _caller: str):
        platform = await self.gw.reads.reconcile_totals(_range(req.range))
        province = convert.figures(req.figures)
        return fdpb.ReconcileTotalsResponse(match=platform == province, platform=convert.figures_pb(platform),
                                            province=convert.figures_pb(province))

    async def reconcile_detail(self, requests: AsyncIterator[fdpb.ReconcileDetailRequest], _caller: str):
        async def batches():
            r = None
            async for req in requests:
                r = r or _range(req.range)   # the first message names the range
                yield r, _items(req.items)

        return _detail_pb(await self.gw.reads.reconcile_detail(batches()))

    # ------------------------------------------------------------ risk flags (SPEC §7)
    async def list_flagged(self, req: fdpb.ListFlaggedRequest, _caller: str):
        rows, truncated = await self.gw.reads.flagged(_range(req.range), convert.risk_flags_mask(req.flags), req.limit)
        return fdpb.FlaggedSettlements(
            settlements=[fdpb.FlaggedSettlement(setl_id=s, setl_date=d, risk_flags=convert.risk_flags_pb(f),
                                                medfee_sumamt=m, cancelled=c) for s, d, f, m, c in rows],
            truncated=truncated)


def _range(r: fdpb.ReconcileRange) -> Range:
    return Range(r.fixmedins_code, r.date_from, r.date_to, convert.INSUTYPE.str(r.insutype, required=False))


def _items(items) -> list[Item]:
    out = []
    for x in items:
        number = id_seq(x.setl_id, "S")
        if number == 0:
            raise YidiError("INVALID_ARGUMENT", what=f"结算ID「{x.setl_id[:40]}」",
                            problem="格式不正确：应为平台签发的 S + 15 位数字", field="items.setl_id")
        out.append(Item(number, x.setl_id, x.fund_pay_sumamt, x.cancelled,
                        x.acct_pay_sumamt if x.HasField("acct_pay_sumamt") else None))
    return out


def _detail_pb(merge: DetailReconciliation) -> fdpb.ReconcileDetailResponse:
    counts = merge.counts
    return fdpb.ReconcileDetailResponse(
        match=not any(counts.values()), province_items=merge.province_items, platform_items=merge.platform_items,
        missing_on_province=counts["missing_on_province"], missing_on_platform=counts["missing_on_platform"],
        amount_differs=counts["amount_differs"], state_differs=counts["state_differs"],
        differences=[fdpb.ReconcileDifference(
            kind=convert.DIFFERENCE_KIND.pb(d.kind), setl_id=d.setl_id,
            platform_fund_pay_sumamt=d.platform.fund_pay_sumamt if d.platform else 0,
            province_fund_pay_sumamt=d.province.fund_pay_sumamt if d.province else 0,
            platform_acct_pay_sumamt=d.platform.acct_pay_sumamt if d.platform else 0,
            province_acct_pay_sumamt=(d.province.acct_pay_sumamt or 0) if d.province else 0,
            platform_cancelled=d.platform.cancelled if d.platform else False,
            province_cancelled=d.province.cancelled if d.province else False) for d in merge.differences],
        truncated=sum(counts.values()) > len(merge.differences))

"""`yidi simulate-month`: a realistic month driven through a gateway over gRPC, then the books checked.

    yidi simulate-month --seed 7 --settlements 20000 --data-dir data/national [--target HOST:PORT]

Without ``--target`` it starts a gateway on the data set with a fresh ledger
(gateway.testing.start_gateway) and stops it at the end.  The month, as the
provinces and the national operator would live it:

1. the operator sets every insured province's prepaid amount from a rough
   estimate; after the first week it re-sets them from what was drawn so far,
   a few deliberately tight, so that some provinces pass their yellow and red
   lines and one is exhausted (settlements still go through: a top-up demand);
2. treatment provinces settle inpatient stays (admit, fees, discharge) and
   outpatient visits on every day of the month (datagen.workload cases), some
   retried with the same request_id as after a lost answer, and cancel a few;
3. the operator closes the month; some cancellations arrive after it closed
   (dated in the month and in the next), and are booked in the next month,
   which is closed too;
4. every institution is reconciled (totals, then the streamed detail) against
   the books the simulation kept of what the gateway acknowledged;
5. the invariants: every month's net positions sum to 0, each month's report
   equals the acknowledged settlements minus cancellations booked in it, and
   positions moved by exactly what was drawn and given back.

It prints the month's inpatient figures beside the published national month
of September 2019 and ends with one JSON line; the exit code is 1 if any
invariant failed.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field

from core import money

# The published national month of September 2019 (cross-province inpatient direct settlement).
PUBLISHED = {"month": "2019-09", "settlements": 253_000, "fees_fen": 599_000_000_000, "avg_fee_fen": 2_370_000,
             "fund_share_bp": 5980}
INPATIENT_SHARE = 0.3          # of the simulated settlements
CHRONIC_SHARE = 0.12           # of the outpatient ones: chronic-disease visits (SPEC §10.2)
CANCEL_SHARE = 0.02            # cancelled within the month
LATE_CANCEL_SHARE = 0.005      # cancelled after the month closed
RETRY_SHARE = 0.01             # answers "lost": the same request sent again
CALIBRATION_SHARE = 0.2        # settled before the operator re-sets the prepaid amounts
TARGET_USAGE = {"yellow": 0.8, "red": 0.95, "exhausted": 1.15, "normal": 0.5}
ESTIMATE_FUND_FEN = {"inpatient": 1_400_000, "outpatient": 10_000}   # the operator's first rough guess per case
NATIONAL = "national"


@dataclass
class Books:
    """What the gateway acknowledged, as the provinces' own books would hold it."""

    settled: dict[str, object] = field(default_factory=dict)          # setl_id -> Settlement message
    cancelled: dict[str, object] = field(default_factory=dict)        # setl_id -> the cancellation's answer
    late_cancelled: set[str] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retries: int = 0
    duplicated_answers: int = 0     # a retry answered with another settlement than the first time


class _Methods:
    """``sim.settlement.Admit`` names a method; ``Sim.call`` runs it on the caller's own TLS channel."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __getattr__(self, name: str) -> tuple[str, str]:
        return self.service, name


class Sim:
    def __init__(self, args, target: str, certs_dir: str) -> None:
        from datagen.workload import Workload

        self.args = args
        self.target = target
        self.certs_dir = certs_dir
        self.month = args.month
        self.rng = random.Random(f"simulate-month:{args.seed}")
        self.workload = Workload(args.data_dir, seed=args.seed, date=self.month * 100 + 15)
        self.channels: dict[str, object] = {}
        self.stubs: dict[tuple[str, str], object] = {}
        self.settlement = _Methods("settlement")
        self.funds = _Methods("funds")
        self.books = Books()
        self.n = 0
        self.semaphore = asyncio.Semaphore(args.concurrency)

    def _stub(self, caller: str, service: str):
        """Each caller speaks on its own channel with its own client certificate (SPEC §9: the certificate names it)."""
        stub = self.stubs.get((caller, service))
        if stub is None:
            import grpc

            from ..security import certs
            from .._pb.yidi.v1 import funds_pb2_grpc, settlement_pb2_grpc
            from ..testing import credentials

            channel = self.channels.get(caller)
            if channel is None:
                channel = self.channels[caller] = grpc.aio.secure_channel(
                    self.target, credentials(caller, certs.Paths(self.certs_dir)))
            cls = settlement_pb2_grpc.SettlementServiceStub if service == "settlement" else funds_pb2_grpc.FundsServiceStub
            stub = self.stubs[(caller, service)] = cls(channel)
        return stub

    async def call(self, caller: str, method: tuple[str, str], request):
        service, name = method
        return await getattr(self._stub(caller, service), name)(request, timeout=60)

    async def close_channels(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    def rid(self, tag: str) -> str:
        self.n += 1
        return f"sim{self.args.seed}-{self.month}-{tag}-{self.n}"

    # ------------------------------------------------------------ the month
    def plan(self) -> list[tuple[int, object, bool]]:
        """(day, case, inpatient) of every settlement, in date order."""
        days = _days(self.month)
        plan = []
        for _ in range(self.args.settlements):
            inpatient = self.rng.random() < INPATIENT_SHARE
            if inpatient:
                case = self.workload.inpatient()
            elif self.workload.chronic_cases and self.rng.random() < CHRONIC_SHARE:
                case = self.workload.chronic()   # SPEC §10.2: a chronic-disease visit
            else:
                case = self.workload.outpatient()
            plan.append((self.rng.choice(days), case, inpatient))
        plan.sort(key=lambda x: x[0])
        return plan

    async def settle(self, day: int, case, inpatient: bool) -> None:
        import grpc

        from .._pb.yidi.v1 import settlement_pb2 as spb
        from ..transport.status import reason_of

        caller = case.treatment_province
        async with self.semaphore:
            try:
                if inpatient:
                    stay = self.rng.choice((3, 5, 7, 9, 12, 16, 35))
                    visit = await self.call(caller, self.settlement.Admit, spb.AdmitRequest(
                        request_id=self.rid("a"), psn_no=case.psn_no, fixmedins_code=case.fixmedins_code,
                        adm_date=_minus_days(day, stay)))
                    await self.call(caller, self.settlement.UploadFees, spb.UploadFeesRequest(
                        request_id=self.rid("f"), mdtrt_id=visit.mdtrt_id, lines=_lines(case)))
                    request = spb.DischargeSettleRequest(request_id=self.rid("s"), mdtrt_id=visit.mdtrt_id, dscg_date=day)
                    method = self.settlement.DischargeSettle
                else:
                    request = spb.OutpatientSettleRequest(request_id=self.rid("o"), psn_no=case.psn_no,
                                                          fixmedins_code=case.fixmedins_code, setl_date=day,
                                                          lines=_lines(case), acct_used_flag=case.acct_used_flag,
                                                          med_type=14 if case.dise_codg else 0,
                                                          dise_codg=case.dise_codg)
                    method = self.settlement.OutpatientSettle
                settlement = (await self.call(caller, method, request)).settlement
                if self.rng.random() < RETRY_SHARE:   # the answer was "lost": the platform retries with the same key
                    again = (await self.call(caller, method, request)).settlement
                    self.books.retries += 1
                    self.books.duplicated_answers += again.setl_id != settlement.setl_id
            except grpc.aio.AioRpcError as err:
                self.books.refused[reason_of(err) or err.code().name] += 1
                return
        self.books.settled[settlement.setl_id] = settlement

    async def cancel(self, setl_id: str, date: int, late: bool) -> None:
        from .._pb.yidi.v1 import settlement_pb2 as spb

        s = self.books.settled[setl_id]
        async with self.semaphore:
            answer = await self.call(s.mdtrtarea_admdvs[:2] + "0000", self.settlement.CancelSettlement,
                                     spb.CancelSettlementRequest(request_id=self.rid("c"), setl_id=setl_id,
                                                                 cancel_date=max(date, s.setl_date)))
        self.books.cancelled[setl_id] = answer.settlement
        if late:
            self.books.late_cancelled.add(setl_id)

    async def set_prepaid(self, expected_fen: dict[str, int], tight: dict[str, str]) -> None:
        from .._pb.yidi.v1 import funds_pb2 as fdpb

        for province, fen in sorted(expected_fen.items()):
            usage = TARGET_USAGE[tight.get(province, "normal")]
            await self.call(NATIONAL, self.funds.SetPrepaid, fdpb.SetPrepaidRequest(
                request_id=self.rid("prepaid"), province=province, amount_fen=max(1, int(fen / usage))))

    async def positions(self) -> dict[str, object]:
        from .._pb.yidi.v1 import funds_pb2 as fdpb

        answer = await self.call(NATIONAL, self.funds.GetPositions, fdpb.GetPositionsRequest())
        return {p.province: p for p in answer.positions}

    async def close(self, month: int) -> None:
        from .._pb.yidi.v1 import funds_pb2 as fdpb

        await self.call(NATIONAL, self.funds.CloseMonth, fdpb.ClearingMonthRequest(request_id=self.rid("close"),
                                                                                   month=month))

    async def report(self, month: int):
        from .._pb.yidi.v1 import funds_pb2 as fdpb

        return await self.call(NATIONAL, self.funds.GetClearingReport, fdpb.GetClearingReportRequest(
            month=month, with_institutions=True))

    async def run(self) -> dict:
        start = time.monotonic()
        before = await self.positions()
        plan = self.plan()
        first = int(len(plan) * CALIBRATION_SHARE)
        rough: dict[str, int] = defaultdict(int)
        for _day, case, inpatient in plan:
            rough[case.insured_province] += ESTIMATE_FUND_FEN["inpatient" if inpatient else "outpatient"]
        await self.set_prepaid(rough, {})
        await asyncio.gather(*(self.settle(*item) for item in plan[:first]))
        # After the first week the operator re-sets the amounts from what was drawn, projected to the month;
        # the largest payers get tight ones, as a province whose budget was underestimated would.
        now = await self.positions()
        drawn = {p: now[p].used_fen - (before[p].used_fen if p in before else 0) for p in now}
        projected = {p: fen * len(plan) // max(1, first) for p, fen in drawn.items() if fen > 0}
        largest = sorted(projected, key=lambda p: -projected[p])
        tight = dict(zip(largest[1:7], ("yellow", "yellow", "red", "red", "exhausted", "yellow"), strict=False))
        # A small province's first week says little: the others keep the larger of projection and first guess.
        await self.set_prepaid({p: fen if p in tight else max(fen, rough.get(p, 0)) for p, fen in projected.items()},
                               tight)
        await asyncio.gather(*(self.settle(*item) for item in plan[first:]))
        # Cancellations within the month, then the close, then late ones (booked in the next month).
        ids = sorted(self.books.settled)
        victims = self.rng.sample(ids, int(len(ids) * (CANCEL_SHARE + LATE_CANCEL_SHARE)))
        late = set(victims[:int(len(ids) * LATE_CANCEL_SHARE)])
        last_day, next_month = _days(self.month)[-1], _next_month(self.month)
        await asyncio.gather(*(self.cancel(s, _plus_days(self.books.settled[s].setl_date, self.rng.choice((0, 1, 2))),
                                           False) for s in victims if s not in late))
        await self.close(self.month)
        await asyncio.gather(*(self.cancel(s, self.rng.choice((last_day, next_month * 100 + 3)), True) for s in late))
        await self.close(next_month)
        reports = {m: await self.report(m) for m in (self.month, next_month)}
        after = await self.positions()
        mismatches, lost, duplicated, institutions = await self.reconcile_all()
        return self.summary(reports, before, after, mismatches, lost, duplicated, institutions,
                            time.monotonic() - start)

    # ------------------------------------------------------------ checks
    async def reconcile_all(self) -> tuple[int, int, int, int]:
        """Every institution of the month, totals then detail: (mismatches, lost, duplicated, institutions)."""
        from .._pb.yidi.v1 import funds_pb2 as fdpb
        from .funds import detail_stream

        first, last = _days(self.month)[0], _days(self.month)[-1]
        by_institution: dict[str, list] = defaultdict(list)
        for s in self.books.settled.values():
            by_institution[s.fixmedins_code].append(s)
        results = {"mismatches": 0, "lost": 0, "duplicated": 0}

        async def one(code: str, settlements: list) -> None:
            caller = settlements[0].mdtrtarea_admdvs[:2] + "0000"
            span = fdpb.ReconcileRange(fixmedins_code=code, date_from=first, date_to=last)
            live = [s for s in settlements if s.setl_id not in self.books.cancelled]
            ours = fdpb.ReconcileFigures(count=len(live), medfee_sumamt=sum(s.breakdown.medfee_sumamt for s in live),
                                         fund_pay_sumamt=sum(s.breakdown.fund_pay_sumamt for s in live),
                                         psn_cash_pay=sum(s.breakdown.psn_cash_pay for s in live),
                                         acct_pay_sumamt=sum(money.accounts_total(s.breakdown)
                                                             for s in live))
            items = [fdpb.ReconcileItem(setl_id=s.setl_id, fund_pay_sumamt=s.breakdown.fund_pay_sumamt,
                                        cancelled=s.setl_id in self.books.cancelled,
                                        acct_pay_sumamt=money.accounts_total(s.breakdown))
                     for s in sorted(settlements, key=lambda s: s.setl_id)]
            async with self.semaphore:
                totals = await self.call(caller, self.funds.ReconcileTotals,
                                         fdpb.ReconcileTotalsRequest(range=span, figures=ours))
                detail = await self.call(caller, self.funds.ReconcileDetail, detail_stream(span, items))
            results["mismatches"] += (not totals.match) or (not detail.match)
            results["lost"] += detail.missing_on_platform
            results["duplicated"] += detail.missing_on_province

        await asyncio.gather(*(one(code, ss) for code, ss in sorted(by_institution.items())))
        return results["mismatches"], results["lost"], results["duplicated"], len(by_institution)

    def expected_months(self) -> dict[int, dict[str, int]]:
        """Each month's totals from the books: settlements booked in it minus cancellations booked in it."""
        fields = money.CLEARED_KEYS
        months: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("settlements", "cancellations", *fields), 0))
        for s in self.books.settled.values():
            m = months[s.clearing_month]
            m["settlements"] += 1
            for f, amount in zip(fields, money.cleared(s.breakdown), strict=True):
                m[f] += amount
        for c in self.books.cancelled.values():
            m = months[c.cancel_clearing_month]
            m["cancellations"] += 1
            for f, amount in zip(fields, money.cleared(c.breakdown), strict=True):
                m[f] -= amount
        return months

    def summary(self, reports, before, after, mismatches, lost, duplicated, institutions, seconds) -> dict:
        expected = self.expected_months()
        report_matches = all({k: getattr(r.totals, k) for k in expected[m]} == expected[m] for m, r in reports.items())
        net_sum = sum(n.net_fen for r in reports.values() for n in r.net_positions)
        drawn, back = defaultdict(int), defaultdict(int)
        for s in self.books.settled.values():
            drawn[s.insuplc_admdvs[:2] + "0000"] += s.breakdown.fund_pay_sumamt
        for c in self.books.cancelled.values():
            back[c.insuplc_admdvs[:2] + "0000"] += c.breakdown.fund_pay_sumamt
        positions_ok = all(
            p.drawn_fen - (before[k].drawn_fen if k in before else 0) == drawn[k]
            and p.given_back_fen - (before[k].given_back_fen if k in before else 0) == back[k]
            and p.balance_fen == p.prepaid_fen - p.drawn_fen + p.given_back_fen for k, p in after.items())
        inpatient = [s for s in self.books.settled.values() if s.visit_kind == 1]
        fees = sum(s.breakdown.medfee_sumamt for s in inpatient)
        fund = sum(s.breakdown.fund_pay_sumamt for s in inpatient)
        levels = defaultdict(int)
        for p in after.values():
            levels[p.level] += 1
        from .._pb.yidi.v1 import funds_pb2 as fdpb

        return {
            "seed": self.args.seed, "month": self.month, "settlements": len(self.books.settled),
            "cancellations": len(self.books.cancelled), "cancellations_after_close": len(self.books.late_cancelled),
            "refused": sum(self.books.refused.values()), "retries": self.books.retries,
            "inpatient_settlements": len(inpatient), "inpatient_avg_fee_fen": fees // max(1, len(inpatient)),
            "inpatient_fund_share_bp": fund * 10000 // max(1, fees),
            "published_avg_fee_fen": PUBLISHED["avg_fee_fen"], "published_fund_share_bp": PUBLISHED["fund_share_bp"],
            "net_positions_sum_fen": net_sum, "report_matches_records": report_matches,
            "positions_consistent": positions_ok, "institutions_reconciled": institutions,
            "reconciliation_mismatches": mismatches, "lost": lost,
            "duplicated": duplicated + self.books.duplicated_answers,
            "provinces_yellow": levels[fdpb.WARNING_LEVEL_YELLOW], "provinces_red": levels[fdpb.WARNING_LEVEL_RED],
            "provinces_exhausted": levels[fdpb.WARNING_LEVEL_EXHAUSTED],
            "top_up_demand_fen": sum(p.top_up_demand_fen for p in after.values()), "seconds": round(seconds, 1),
            # SPEC §10: chronic-disease visits and settlements the personal accounts paid part of
            "chronic_settlements": sum(bool(s.dise_codg) for s in self.books.settled.values()),
            "with_account_pay": sum(money.accounts_total(s.breakdown) > 0
                                    for s in self.books.settled.values()),
        }


def _lines(case):
    from .._pb.yidi.v1 import common_pb2 as pb

    return [pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen, qty_milli=x.qty_milli)
            for x in case.lines]


def _date(yyyymmdd: int):
    import datetime

    return datetime.date(yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100)


def _int(d) -> int:
    return d.year * 10000 + d.month * 100 + d.day


def _plus_days(yyyymmdd: int, n: int) -> int:
    import datetime

    return _int(_date(yyyymmdd) + datetime.timedelta(days=n))


def _minus_days(yyyymmdd: int, n: int) -> int:
    return _plus_days(yyyymmdd, -n)


def _days(month: int) -> list[int]:
    first = month * 100 + 1
    days, d = [], first
    while d // 100 == month:
        days.append(d)
        d = _plus_days(d, 1)
    return days


def _next_month(month: int) -> int:
    return month + 1 if month % 100 < 12 else (month // 100 + 1) * 100 + 1


def print_comparison(result: dict) -> None:
    avg, share = result["inpatient_avg_fee_fen"], result["inpatient_fund_share_bp"]
    rows = [("", "this month", f"published {PUBLISHED['month']}", "difference"),
            ("inpatient settlements", f"{result['inpatient_settlements']:,}", f"{PUBLISHED['settlements']:,}", ""),
            ("average fee per settlement", f"¥{avg / 100:,.0f}", f"¥{PUBLISHED['avg_fee_fen'] / 100:,.0f}",
             f"{(avg - PUBLISHED['avg_fee_fen']) * 100 / PUBLISHED['avg_fee_fen']:+.1f}%"),
            ("fund share of fees", f"{share / 100:.1f}%", f"{PUBLISHED['fund_share_bp'] / 100:.1f}%",
             f"{(share - PUBLISHED['fund_share_bp']) * 100 / PUBLISHED['fund_share_bp']:+.1f}%")]
    for row in rows:
        print(f"{row[0]:<28}{row[1]:>14}{row[2]:>18}{row[3]:>12}")


async def _simulate(args, target: str, certs_dir: str) -> dict:
    sim = Sim(args, target, certs_dir)
    try:
        result = await sim.run()
        if args.charts:
            from .charts import draw_month

            for path in draw_month(await sim.report(args.month), args.charts):
                print(f"wrote {path}", file=sys.stderr)
        return result
    finally:
        await sim.close_channels()


def main(args) -> int:
    """Run the month; 0 if every invariant held."""
    import uvloop

    print(f"simulate-month seed {args.seed}, {args.settlements:,} settlements in {args.month}", file=sys.stderr)
    gateway = None
    with tempfile.TemporaryDirectory() as tmp:
        target, certs_dir = args.target, args.certs
        if not target:
            from ..testing import start_gateway

            gateway = start_gateway(args.data_dir, args.ledger or os.path.join(tmp, "ledger.sqlite"))
            target, certs_dir = gateway.target, gateway.certs.directory
        try:
            result = uvloop.run(_simulate(args, target, certs_dir))
        finally:
            if gateway is not None:
                gateway.stop()
    print_comparison(result)
    print(json.dumps(result, ensure_ascii=False))
    ok = (result["net_positions_sum_fen"] == 0 and result["report_matches_records"] and result["positions_consistent"]
          and result["reconciliation_mismatches"] == 0 and result["lost"] == 0 and result["duplicated"] == 0)
    return 0 if ok else 1

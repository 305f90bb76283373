"""The operator's money commands (SPEC §8): prepaid positions, clearing months, statements, reconciliation ranges.

The state and its arithmetic are ``core.funds.Funds``; this part decides the
commands that change it and answers the reads that name a province, a month
or an institution.
"""
from __future__ import annotations

from typing import Callable

import msgspec

from .commands import ChangeClearingMonth, Decision, MonthResult, PositionResult, SetPrepaid, TopUpPrepaid
from .errors import YidiError
from .events import ClearingMonthChanged, PrepaidSet, PrepaidToppedUp
from .funds import DEFAULT_RED_BP, DEFAULT_YELLOW_BP, Funds, Report, check_amount, check_month
from .limits import check_date, check_id
from ._core import Index


class Clearing:
    def __init__(self, index: Index, funds: Funds) -> None:
        self.index = index
        self.funds = funds

    def decisions(self) -> dict[type, Callable]:
        return {SetPrepaid: self.decide_set_prepaid, TopUpPrepaid: self.decide_top_up,
                ChangeClearingMonth: self.decide_month}

    def appliers(self) -> dict[type, Callable]:
        return {PrepaidSet: self.apply_prepaid_set, PrepaidToppedUp: self.apply_topped_up,
                ClearingMonthChanged: self.apply_month}

    # ------------------------------------------------------------ reads
    def check_province(self, code: str) -> str:
        """A known province code (6 digits ending in 0000), else INVALID_ARGUMENT."""
        if not (isinstance(code, str) and len(code) == 6 and code.isdigit() and code.endswith("0000")
                and self.index.region_name(code)):
            raise YidiError("INVALID_ARGUMENT", what=f"省份代码「{str(code)[:20]}」",
                            problem="无效，应为已知省级行政区划代码（如 460000）", field="province")
        return code

    def positions(self, province: str = "") -> list[PositionResult]:
        """Prepaid positions with their provinces' names: one known province's, or every one held, by code."""
        provinces = [self.check_province(province)] if province else sorted(self.funds.positions)
        return [self._position(self.funds.position(p)) for p in provinces]

    def _position(self, position) -> PositionResult:
        return PositionResult(position, self.index.region_name(position.province) or "")

    def report(self, month: int, province: str = "", with_institutions: bool = True) -> Report:
        """A closed month's statement (SPEC §8); an open month has none yet."""
        check_month(month)
        if province:
            self.check_province(province)
        if month not in self.funds.closed:
            raise YidiError("CLEARING_MONTH_OPEN", month=month, action="出具清算报表")
        return self.funds.report(month, province, with_institutions)

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

    # ------------------------------------------------------------ decide
    def decide_set_prepaid(self, cmd: SetPrepaid, _seq: int) -> Decision:
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
                        self._position(after))

    def decide_top_up(self, cmd: TopUpPrepaid, _seq: int) -> Decision:
        """调增预付金."""
        province = self.check_province(cmd.province)
        before = self.funds.position(province)
        amount = check_amount(cmd.amount_fen, "调增金额", positive=True)
        check_amount(before.prepaid_fen + amount, "调增后的预付金额度")
        after = msgspec.structs.replace(before, prepaid_fen=before.prepaid_fen + amount,
                                        topped_up_fen=before.topped_up_fen + amount)
        return Decision(PrepaidToppedUp(province=province, amount_fen=amount), self._position(after))

    def decide_month(self, cmd: ChangeClearingMonth, _seq: int) -> Decision:
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

    # ------------------------------------------------------------- apply
    def apply_prepaid_set(self, event: PrepaidSet, _seq: int) -> list:
        self.funds.set_prepaid(event.province, event.amount_fen, event.yellow_bp, event.red_bp)
        return []

    def apply_topped_up(self, event: PrepaidToppedUp, _seq: int) -> list:
        self.funds.top_up(event.province, event.amount_fen)
        return []

    def apply_month(self, event: ClearingMonthChanged, _seq: int) -> list:
        if event.action == "closed":
            self.funds.close(event.month)
        elif event.action == "reopened":
            self.funds.reopen(event.month)
        else:
            self.funds.confirm(event.month, event.province)
        return []

"""Money between provinces: risk flags (SPEC §7), prepaid positions and clearing months (SPEC §8).

No I/O.  The engine calls in from ``decide`` (which flags a settlement gets,
which clearing month it is booked in) and from ``apply`` (draw on the insured
province's position, add to the month's aggregates), so the money follows
the ledger record that moves it and replay rebuilds it exactly.  The settle
path costs a handful of integer operations here and never reads the store.

* **Risk flags** are a bit set (``RISK_FLAGS``), decided once at settlement
  and carried in ``SettlementFacts.risk_flags``; they never block.
* **Positions** (预付金): per insured province, prepaid − drawn + given back.
  Every settlement draws its ``fund_pay_sumamt``, every cancellation gives
  it back.  Warning lines (yellow, red) are per province, set with the
  prepaid amount.  Nothing here refuses a settlement: a shortfall is a top-up
  demand, never a patient turned away.
* **Clearing months** (清算): a settlement or cancellation is booked in the
  month of its date if that month is open, else in the earliest open month
  after it.  A closed month is frozen; each province confirms its statement
  of a closed month; a month can be reopened only while nobody confirmed it.
  Per month the aggregates per (insured province, treatment province) and per
  institution are kept (``Totals``): they are small (months × province pairs
  × institutions), so they live in memory and in snapshots.
* **Detail reconciliation** (对账) merges two ascending streams of
  settlement ids (``DetailReconciliation``), fed in chunks, in bounded memory.
"""
from __future__ import annotations

import datetime
import hashlib
from collections import deque
from typing import Iterable, NamedTuple

import msgspec

from ._core import province_code, untracked
from .errors import YidiError, invariant
from .money import CLEARED_KEYS, cleared
from ._wire_numbers import RiskFlag

# ------------------------------------------------------------------ risk flags (SPEC §7)
RISK_FLAGS = ("LONG_STAY", "HIGH_COST", "ON_SITE_CHECK", "SAME_DAY_REPEAT")   # bit i is RISK_FLAGS[i]
RISK_FLAG_VALUES = tuple(RiskFlag["RISK_FLAG_" + name] for name in RISK_FLAGS)  # the contract's value of each bit
LONG_STAY, HIGH_COST, ON_SITE_CHECK, SAME_DAY_REPEAT = 1, 2, 4, 8
LONG_STAY_DAYS = 30              # an inpatient stay longer than this is LONG_STAY
ON_SITE_CHECK_BP = 2000          # the share of settlements sampled for on-site verification (20%)
SAME_DAY_REPEAT_FROM = 3         # a person's 3rd or later outpatient settlement of a day
SAME_DAY_WINDOW_DAYS = 3         # outpatient counts are kept for this many most recent settlement dates
# The sample is BLAKE2b-64 keyed with this constant over the setl_id: deterministic, uniform, and not a
# plain function of the id a hospital could tabulate from a public formula (a deployment may change the key;
# flags already recorded keep their value, since they are stored, not recomputed).
ON_SITE_CHECK_KEY = b"yidi-on-site-check-v1"

# ------------------------------------------------------------------ positions (SPEC §8)
DEFAULT_YELLOW_BP = 7000         # yellow warning when usage reaches 70% of the prepaid amount
DEFAULT_RED_BP = 9000            # red (紧急调增, urgent top-up) at 90%
MAX_PREPAID_FEN = 10 ** 15       # ten trillion yuan: far above any province's fund
LEVELS = ("normal", "yellow", "red", "exhausted")

# ------------------------------------------------------------------ clearing months
MIN_MONTH, MAX_MONTH = 190001, 210012
# A month's aggregate row: settlements, cancellations, one count per risk flag, then the money columns
# (core/money.py's cleared amounts and the accounts' total, summed net of cancellations).  Money comes last so
# that a column declared later is appended: a row kept before it existed reads it as 0.
MONEY_FIELDS = CLEARED_KEYS
TOTAL_FIELDS = ("settlements", "cancellations", *(flag.lower() for flag in RISK_FLAGS), *MONEY_FIELDS)
_FLAGS, _MONEY = 2, 2 + len(RISK_FLAGS)
N_TOTALS = len(TOTAL_FIELDS)
_FUND = MONEY_FIELDS.index("fund_pay_sumamt")

# ------------------------------------------------------------------ reconciliation and problems
MAX_RECONCILE_DIFFERENCES = 10_000   # differences listed in one detail answer (all are counted)
PROBLEM_OVERDUE_DAYS = 30            # an open problem report older than this is flagged in the list
MAX_PROBLEM_TEXT_BYTES = 4000        # a report's text, a comment or a resolution note (UTF-8)


def flag_names(flags: int) -> list[str]:
    return [name for i, name in enumerate(RISK_FLAGS) if flags >> i & 1]


def risk_flag_values(flags: int) -> tuple[int, ...]:
    """Flag bits -> the contract's RiskFlag values, in bit order."""
    if not flags:
        return ()
    return tuple([value for i, value in enumerate(RISK_FLAG_VALUES) if flags >> i & 1])


def on_site_check(setl_id: str) -> bool:
    """The deterministic 20% sample: a keyed 64-bit hash of the setl_id, below ON_SITE_CHECK_BP / 10000."""
    digest = hashlib.blake2b(setl_id.encode(), key=ON_SITE_CHECK_KEY, digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10000 < ON_SITE_CHECK_BP


def days_between(from_date: int, to_date: int) -> int:
    """Calendar days from one yyyymmdd to another (both already checked as real dates)."""
    return _ordinal(to_date) - _ordinal(from_date)


def _ordinal(yyyymmdd: int) -> int:
    return datetime.date(yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100).toordinal()


def check_month(month: int, what: str = "清算月份") -> int:
    if not (isinstance(month, int) and MIN_MONTH <= month <= MAX_MONTH and 1 <= month % 100 <= 12):
        raise YidiError("INVALID_DATE", what=f"{what} {month}", problem="无效，应为 yyyymm 格式（如 202611）")
    return month


def next_month(month: int) -> int:
    return month + 1 if month % 100 < 12 else (month // 100 + 1) * 100 + 1


def check_amount(amount_fen: int, what: str, *, positive: bool = False) -> int:
    low = 1 if positive else 0
    if not (isinstance(amount_fen, int) and low <= amount_fen <= MAX_PREPAID_FEN):
        raise YidiError("INVALID_AMOUNT", what=f"{what} {amount_fen} 分",
                        problem=f"不合理：应在 {low} 到 {MAX_PREPAID_FEN} 分之间（整数分）")
    return amount_fen


def check_text(text: str, what: str, *, required: bool = True) -> str:
    if required and not text.strip():
        raise YidiError("INVALID_ARGUMENT", what=what, problem="须填写")
    if len(text.encode()) > MAX_PROBLEM_TEXT_BYTES:
        raise YidiError("INVALID_ARGUMENT", what=what, problem=f"不能超过 {MAX_PROBLEM_TEXT_BYTES} 字节")
    return text


# ------------------------------------------------------------------ state
class Position(msgspec.Struct, gc=False):
    """An insured province's prepaid position (预付金), all fen."""

    province: str
    prepaid_fen: int = 0
    drawn_fen: int = 0            # fund paid by its insured persons' settlements
    given_back_fen: int = 0       # by their cancellations
    topped_up_fen: int = 0        # of prepaid_fen, what top-ups added since it was last set
    yellow_bp: int = DEFAULT_YELLOW_BP
    red_bp: int = DEFAULT_RED_BP

    @property
    def used_fen(self) -> int:
        return self.drawn_fen - self.given_back_fen

    @property
    def balance_fen(self) -> int:
        """prepaid − drawn + given back (negative once the prepaid amount is exhausted)."""
        return self.prepaid_fen - self.drawn_fen + self.given_back_fen

    @property
    def usage_bp(self) -> int:
        """Used / prepaid in basis points, rounded down (10000 × used when nothing is prepaid)."""
        return self.used_fen * 10000 // self.prepaid_fen if self.prepaid_fen else (10000 if self.used_fen else 0)

    @property
    def level(self) -> str:
        """SPEC §8: a line counts usage equal to it (达到), compared exactly in fen (never via usage_bp)."""
        used, prepaid = self.used_fen, self.prepaid_fen
        if used > 0 and used >= prepaid:
            return "exhausted"
        if used * 10000 >= self.red_bp * prepaid and used > 0:
            return "red"
        if used * 10000 >= self.yellow_bp * prepaid and used > 0:
            return "yellow"
        return "normal"

    @property
    def top_up_demand_fen(self) -> int:
        """What the province must add for its prepaid amount to cover what it has used."""
        return max(0, self.used_fen - self.prepaid_fen)


class Month(msgspec.Struct, gc=False):
    """One clearing month: its state and the aggregates booked in it, each a tuple in TOTAL_FIELDS order, replaced
    at each booking by one the collector does not track (``core.untracked``): a list per institution and month
    would be walked by every full collection, and a tracked tuple would make every young collection walk the
    whole dict until the next full one."""

    month: int
    closed: bool = False
    confirmed: list[str] = msgspec.field(default_factory=list)
    pairs: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)          # insured + treatment province
    institutions: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)   # treatment province + code


class FundsState(msgspec.Struct):
    """What ``Funds`` keeps, for snapshots (``EngineState.funds``)."""

    positions: list[Position] = msgspec.field(default_factory=list)
    months: list[Month] = msgspec.field(default_factory=list)
    # (settlement date, [(psn_no, live outpatient settlements that day)]) for the recent dates
    same_day: list[tuple[int, list[tuple[str, int]]]] = msgspec.field(default_factory=list)


class Booking(NamedTuple):
    """What one settlement or cancellation adds to a month: sign +1 (settled) or -1 (cancelled)."""

    insured: str
    treatment: str
    fixmedins_code: str
    money: tuple[int, ...]      # MONEY_FIELDS of the settlement's breakdown
    flags: int


class PairRow(NamedTuple):
    insured: str
    treatment: str
    totals: dict[str, int]


class InstitutionRow(NamedTuple):
    treatment: str
    fixmedins_code: str
    totals: dict[str, int]


class NetRow(NamedTuple):
    province: str
    receivable_fen: int   # fund paid at its institutions, for other provinces' insured persons
    payable_fen: int      # fund paid for its insured persons elsewhere
    net_fen: int          # receivable − payable


class Report(NamedTuple):
    month: int
    closed: bool
    confirmed: list[str]
    pairs: list[PairRow]
    institutions: list[InstitutionRow]
    nets: list[NetRow]
    totals: dict[str, int]


class Funds:
    """Positions, clearing months and same-day outpatient counts, in memory (the ledger is the truth)."""

    def __init__(self) -> None:
        self.positions: dict[str, Position] = {}
        self.months: dict[int, Month] = {}
        self.closed: set[int] = set()
        self.same_day: dict[int, dict[str, int]] = {}
        self._frozen: dict[int, bytes] = {}   # debug builds: a closed month's aggregates as closed

    # ------------------------------------------------------------ decide
    def booking_month(self, date: int) -> int:
        """SPEC §8: the month of the date if open, else the earliest open month after it."""
        month = date // 100
        while month in self.closed:
            month = next_month(month)
        return month

    def settlement_flags(self, *, inpatient: bool, adm_date: int, setl_date: int, high_cost: bool,
                         setl_id: str, psn_no: str) -> int:
        """The risk flags a settlement gets (SPEC §7), from what decide knows; never a refusal."""
        flags = HIGH_COST if high_cost else 0
        if inpatient:
            if days_between(adm_date, setl_date) > LONG_STAY_DAYS:
                flags |= LONG_STAY
        else:
            seen = self.same_day_count(psn_no, setl_date)
            if seen is not None and seen + 1 >= SAME_DAY_REPEAT_FROM:
                flags |= SAME_DAY_REPEAT
        if setl_id and on_site_check(setl_id):
            flags |= ON_SITE_CHECK
        return flags

    def same_day_count(self, psn_no: str, date: int) -> int | None:
        """Live outpatient settlements of the person that day; None if the date is older than the window."""
        day = self.same_day.get(date)
        if day is not None:
            return day.get(psn_no, 0)
        if len(self.same_day) >= SAME_DAY_WINDOW_DAYS and date < min(self.same_day):
            return None
        return 0

    def month_state(self, month: int) -> Month:
        return self.months.get(month) or Month(month)

    # ------------------------------------------------------------ apply
    def book(self, booking: Booking, month: int, sign: int) -> None:
        """A settlement (+1) or a cancellation (-1) on the insured province's position and in its month."""
        invariant(month not in self.closed, f"booking into the closed clearing month {month}")
        position = self.positions.get(booking.insured)
        if position is None:
            position = self.positions[booking.insured] = Position(booking.insured)
        fund = booking.money[_FUND]
        if sign > 0:
            position.drawn_fen += fund
        else:
            position.given_back_fen += fund
        state = self.months.get(month)
        if state is None:
            state = self.months[month] = Month(month)
        _add(state.pairs, booking.insured + booking.treatment, booking, sign)
        _add(state.institutions, booking.treatment + booking.fixmedins_code, booking, sign)

    def count_outpatient(self, psn_no: str, date: int, sign: int) -> None:
        """Keep the same-day counts of the most recent SAME_DAY_WINDOW_DAYS dates (older dates are not counted)."""
        day = self.same_day.get(date)
        if day is None:
            if sign < 0 or self.same_day_count(psn_no, date) is None:
                return
            day = self.same_day[date] = {}
            while len(self.same_day) > SAME_DAY_WINDOW_DAYS:
                del self.same_day[min(self.same_day)]
        count = day.get(psn_no, 0) + sign
        if count > 0:
            day[psn_no] = count
        else:
            day.pop(psn_no, None)

    def set_prepaid(self, province: str, amount_fen: int, yellow_bp: int, red_bp: int) -> Position:
        position = self.positions.setdefault(province, Position(province))
        position.prepaid_fen, position.topped_up_fen = amount_fen, 0
        position.yellow_bp, position.red_bp = yellow_bp, red_bp
        return position

    def top_up(self, province: str, amount_fen: int) -> Position:
        position = self.positions.setdefault(province, Position(province))
        position.prepaid_fen += amount_fen
        position.topped_up_fen += amount_fen
        return position

    def close(self, month: int) -> None:
        state = self.months.setdefault(month, Month(month))
        state.closed = True
        self.closed.add(month)
        self._frozen[month] = _fingerprint(state)

    def reopen(self, month: int) -> None:
        self.months[month].closed = False
        self.closed.discard(month)
        self._frozen.pop(month, None)

    def confirm(self, month: int, province: str) -> None:
        self.months[month].confirmed.append(province)

    # ------------------------------------------------------------ reads
    def position(self, province: str) -> Position:
        return self.positions.get(province) or Position(province)

    def report(self, month: int, province: str = "", with_institutions: bool = True) -> Report:
        """A clearing month's statement: everything (province "") or what involves one province."""
        state = self.month_state(month)
        pairs = [PairRow(k[:6], k[6:], _named(v)) for k, v in sorted(state.pairs.items())]
        nets = net_positions(pairs)
        totals = _named(_sum(state.pairs.values()))
        institutions = []
        if with_institutions:
            institutions = [InstitutionRow(k[:6], k[6:], _named(v)) for k, v in sorted(state.institutions.items())
                            if not province or k[:6] == province]
        if province:
            pairs = [p for p in pairs if province in (p.insured, p.treatment)]
            nets = [n for n in nets if n.province == province]
        return Report(month, state.closed, sorted(state.confirmed), pairs, institutions, nets, totals)

    # ------------------------------------------------------------ snapshots
    def export(self) -> FundsState:
        return FundsState(
            positions=[msgspec.structs.replace(p) for p in self.positions.values()],
            months=[msgspec.msgpack.decode(msgspec.msgpack.encode(m), type=Month) for m in self.months.values()],
            same_day=[(date, list(day.items())) for date, day in sorted(self.same_day.items())],
        )

    @classmethod
    def restore(cls, state: FundsState) -> Funds:
        funds = cls()
        funds.positions = {p.province: msgspec.structs.replace(p) for p in state.positions}
        for month in state.months:
            month = funds.months[month.month] = msgspec.msgpack.decode(msgspec.msgpack.encode(month), type=Month)
            for rows in (month.pairs, month.institutions):   # untracked; padded if kept before a money column was declared
                for key, row in rows.items():
                    rows[key] = untracked(row + (0,) * (N_TOTALS - len(row)))
            if month.closed:
                funds.close(month.month)
        funds.same_day = {date: dict(rows) for date, rows in state.same_day}
        return funds

    # ------------------------------------------------------------ invariants
    def check_invariants(self) -> None:
        """The books balance: checked after every booking in debug builds, and by the tests.

        * every month's net positions sum to exactly 0, and its per-institution
          aggregates add up to its per-pair aggregates;
        * each province's drawn − given back equals the fund it owes in all months' pairs;
        * a closed month is exactly as it was when it was closed.
        """
        owed: dict[str, int] = {}
        for month, state in self.months.items():
            pairs = [PairRow(k[:6], k[6:], _named(v)) for k, v in state.pairs.items()]
            invariant(sum(n.net_fen for n in net_positions(pairs)) == 0, f"net positions of {month} do not sum to 0")
            invariant(_sum(state.pairs.values()) == _sum(state.institutions.values()),
                      f"institution aggregates of {month} differ from its province pairs")
            for pair in pairs:
                owed[pair.insured] = owed.get(pair.insured, 0) + pair.totals["fund_pay_sumamt"]
            if month in self._frozen:
                invariant(_fingerprint(state) == self._frozen[month], f"closed month {month} changed")
        for province, position in self.positions.items():
            invariant(position.used_fen == owed.get(province, 0),
                      f"position of {province} differs from the fund booked in its clearing months")


def booking_of(facts) -> Booking:
    """The booking of a settlement (``events.SettlementFacts``): provinces, money by field, flags."""
    return Booking(province_code(facts.insuplc_admdvs), province_code(facts.mdtrtarea_admdvs), facts.fixmedins_code,
                   cleared(facts.breakdown), facts.risk_flags)


def net_positions(pairs: Iterable[PairRow]) -> list[NetRow]:
    """Per province: receivable as treatment place − payable as insured place (fund paid, all layers, and
    the personal accounts' payments, which the insured province also owes: SPEC §10.1)."""
    receivable: dict[str, int] = {}
    payable: dict[str, int] = {}
    for pair in pairs:
        fund = pair.totals["fund_pay_sumamt"] + pair.totals["acct_pay_sumamt"]
        receivable[pair.treatment] = receivable.get(pair.treatment, 0) + fund
        payable[pair.insured] = payable.get(pair.insured, 0) + fund
    return [NetRow(p, receivable.get(p, 0), payable.get(p, 0), receivable.get(p, 0) - payable.get(p, 0))
            for p in sorted(receivable.keys() | payable.keys())]


def _fingerprint(month: Month) -> bytes:
    """What must not change once a month is closed (confirmations are added to a closed month)."""
    return msgspec.msgpack.encode((month.pairs, month.institutions))


def _add(rows: dict[str, tuple[int, ...]], key: str, booking: Booking, sign: int) -> None:
    old = rows.get(key)
    row = list(old) if old is not None else [0] * N_TOTALS
    row[0 if sign > 0 else 1] += 1
    for i, amount in enumerate(booking.money, _MONEY):
        row[i] += sign * amount
    flags = booking.flags
    if flags:
        for bit in range(len(RISK_FLAGS)):
            if flags >> bit & 1:
                row[_FLAGS + bit] += sign
    rows[key] = untracked(tuple(row))


def _sum(rows: Iterable[tuple[int, ...]]) -> list[int]:
    total = [0] * N_TOTALS
    for row in rows:
        for i, value in enumerate(row):
            total[i] += value
    return total


def _named(row: tuple[int, ...] | list[int]) -> dict[str, int]:
    return dict(zip(TOTAL_FIELDS, row, strict=True))


# ------------------------------------------------------------------ reconciliation (对账)
class Figures(NamedTuple):
    """Totals of an institution's settlements in a date range (live settlements only)."""

    count: int
    medfee_sumamt: int
    fund_pay_sumamt: int
    psn_cash_pay: int
    acct_pay_sumamt: int = 0    # acct_pay + acct_mulaid_pay (SPEC §10.1)


class Item(NamedTuple):
    """One settlement in a detail reconciliation: its number (setl_id's digits), id, fund paid, cancelled, and
    accounts paid (acct_pay + acct_mulaid_pay; None on the province's side when it did not send it)."""

    setl_no: int
    setl_id: str
    fund_pay_sumamt: int
    cancelled: bool
    acct_pay_sumamt: int | None = None


DIFFERENCE_KINDS = ("missing_on_province", "missing_on_platform", "amount_differs", "state_differs")


class Difference(NamedTuple):
    kind: str
    setl_id: str
    platform: Item | None
    province: Item | None


class DetailReconciliation:
    """The merge of the province's and the platform's settlements, both ascending by setl_no, fed in chunks.

    Memory is one chunk of each side: the service feeds the province's items
    as they stream in and the platform's rows as it reads them from the store
    (``needs_platform`` says when), so any length reconciles in bounded
    memory.  At most ``max_listed`` differences are kept; all are counted.
    """

    def __init__(self, max_listed: int = MAX_RECONCILE_DIFFERENCES) -> None:
        self.max_listed = max_listed
        self.differences: list[Difference] = []
        self.counts = dict.fromkeys(DIFFERENCE_KINDS, 0)
        self.province_items = self.platform_items = 0
        self._province: deque[Item] = deque()
        self._platform: deque[Item] = deque()
        self._province_done = self._platform_done = False
        self._last_province = -1

    def feed_province(self, items: Iterable[Item]) -> None:
        for item in items:
            if item.setl_no <= self._last_province:
                raise YidiError("INVALID_ARGUMENT", what="对账明细",
                                problem=f"须按结算ID严格升序发送：{item.setl_id} 出现在更大或相同的结算ID之后")
            self._last_province = item.setl_no
            self._province.append(item)
            self.province_items += 1

    def province_done(self) -> None:
        self._province_done = True

    def feed_platform(self, items: list[Item]) -> None:
        """The next rows of the platform's side; an empty list means there are no more."""
        if not items:
            self._platform_done = True
        self._platform.extend(items)
        self.platform_items += len(items)

    @property
    def needs_platform(self) -> bool:
        return not self._platform and not self._platform_done and (bool(self._province) or self._province_done)

    @property
    def finished(self) -> bool:
        return self._province_done and self._platform_done and not self._province and not self._platform

    def run(self) -> None:
        """Compare as far as both sides are known."""
        province, platform = self._province, self._platform
        while province or platform:
            if not platform and not self._platform_done:
                return
            if not province and not self._province_done:
                return
            if not platform or (province and province[0].setl_no < platform[0].setl_no):
                self._differ("missing_on_platform", None, province.popleft())
            elif not province or platform[0].setl_no < province[0].setl_no:
                self._differ("missing_on_province", platform.popleft(), None)
            else:
                ours, theirs = platform.popleft(), province.popleft()
                if ours.cancelled != theirs.cancelled:
                    self._differ("state_differs", ours, theirs)
                elif ours.fund_pay_sumamt != theirs.fund_pay_sumamt or (
                        theirs.acct_pay_sumamt is not None and ours.acct_pay_sumamt != theirs.acct_pay_sumamt):
                    self._differ("amount_differs", ours, theirs)

    def _differ(self, kind: str, platform: Item | None, province: Item | None) -> None:
        self.counts[kind] += 1
        if len(self.differences) < self.max_listed:
            self.differences.append(Difference(kind, (platform or province).setl_id, platform, province))

"""Money, declared once: every amount a settlement has, the fund layers that pay, the accumulators they move.

Everything that knows the money's shape takes it from here: the core's C
constants (generated from this file at build time into ``core/_money.pxi``),
the ledger's event encoding (``events.Breakdown``), clearing totals
(``core.funds``), the CLI's rendering and the simulated month; the protos
are the hand-written contract, checked against this by tests
(tests/core/test_money.py).  Pure data and the standard library only: setup.py
reads it before anything is built.

Positions are forever.  An amount's place in ``BREAKDOWN`` is its place in
every recorded settlement (and its field number in common.proto's
Breakdown, minus one); an accumulator's place in ``ACCUMULATORS`` is its place
in every recorded delta and snapshot.  A new one is appended, never inserted,
and a record written before it existed reads it as 0, so every earlier ledger
replays unchanged.

Adding a fund layer: declare its amount here (``layer=``), its ``Layer``
(what it is called, the accumulators it keeps), its rule in
core/benefit.pxi, its policy terms in core/load.pxi, and its field in
common.proto's Breakdown and funds.proto's ClearingTotals.
"""
from __future__ import annotations

from typing import NamedTuple


class Amount(NamedTuple):
    """One amount of a settlement's breakdown (SPEC §5), in fen unless ``unit`` says otherwise."""

    name: str              # the national interface's field name (events, protos, the ledger)
    label: str             # what a clerk reads
    layer: str = ""        # the fund layer that pays it ("" for the bill's parts and totals)
    cleared: bool = False  # summed into the clearing month's totals (SPEC §8), net of cancellations
    unit: str = "fen"      # "fen" or "bp" (basis points)


class Layer(NamedTuple):
    """A fund layer (SPEC §5.3): one name in the core, and the national field(s) it is reported as."""

    name: str
    label: str
    # The Breakdown field it is reported in, by insutype ("" key: every insutype).
    reported_as: dict[str, str]


class Accumulator(NamedTuple):
    """One figure kept per person per calendar year (SPEC §5.5), moved by each settlement's deltas."""

    name: str
    label: str
    unit: str = "fen"      # "fen" or "count"


BREAKDOWN: tuple[Amount, ...] = (
    Amount("medfee_sumamt", "医疗费总额", cleared=True),
    Amount("fulamt_ownpay_amt", "全自费"),
    Amount("overlmt_selfpay", "超限价自费"),
    Amount("preselfpay_amt", "先行自付"),
    Amount("inscp_scp_amt", "符合范围"),
    Amount("act_pay_dedc", "起付线"),
    Amount("pay_ratio_bp", "支付比例", unit="bp"),
    Amount("hifp_pay", "统筹基金", layer="basic", cleared=True),
    Amount("hifmi_pay", "居民大病", layer="supplementary", cleared=True),
    Amount("hifob_pay", "职工大额", layer="supplementary", cleared=True),
    Amount("maf_pay", "医疗救助", layer="assistance", cleared=True),
    Amount("fund_pay_sumamt", "基金支付合计", cleared=True),
    Amount("psn_cash_pay", "个人现金支付", cleared=True),
    Amount("acct_pay", "个人账户支付"),
    Amount("acct_mulaid_pay", "共济账户支付"),
)

LAYERS: tuple[Layer, ...] = (
    Layer("basic", "统筹基金", {"": "hifp_pay"}),
    # critical illness: 大病保险 for residents (390), 职工大额医疗 for employees (310)
    Layer("supplementary", "大病保险", {"390": "hifmi_pay", "310": "hifob_pay"}),
    Layer("assistance", "医疗救助", {"": "maf_pay"}),
)

ACCUMULATORS: tuple[Accumulator, ...] = (
    Accumulator("inpatient_fund_paid_fen", "住院统筹基金已支付"),
    Accumulator("inpatient_admissions", "住院次数", unit="count"),
    Accumulator("crit_base_fen", "大病保险累计政策内自付"),
    Accumulator("crit_paid_fen", "大病保险已支付"),
    Accumulator("assist_paid_fen", "医疗救助已支付"),
    Accumulator("outpatient_fund_paid_fen", "门诊统筹基金已支付"),
    Accumulator("outpatient_deductible_used_fen", "门诊起付线已累计"),
)

# What the accounts paid in all (SPEC §10.1): owed by the insured province beside the fund, cleared as one figure.
ACCOUNTS = ("acct_pay", "acct_mulaid_pay")
ACCOUNTS_CLEARED = "acct_pay_sumamt"



def _derive() -> None:
    """The names everything else reads, from the declarations above (run again by a build that declares more)."""
    global BREAKDOWN_KEYS, ACCUMULATOR_KEYS, CLEARED_KEYS, LABELS
    BREAKDOWN_KEYS = tuple(a.name for a in BREAKDOWN)
    ACCUMULATOR_KEYS = tuple(a.name for a in ACCUMULATORS)
    # The clearing month's money columns, in order: the cleared amounts, then the accounts' total.
    CLEARED_KEYS = tuple(a.name for a in BREAKDOWN if a.cleared) + (ACCOUNTS_CLEARED,)
    LABELS = {**{a.name: a.label for a in BREAKDOWN}, **{a.name: a.label for a in ACCUMULATORS},
              ACCOUNTS_CLEARED: "个人账户支付合计"}


BREAKDOWN_KEYS: tuple[str, ...]
ACCUMULATOR_KEYS: tuple[str, ...]
CLEARED_KEYS: tuple[str, ...]
LABELS: dict[str, str]
_derive()


def accounts_total(breakdown) -> int:
    """What the accounts paid in all, from a Breakdown (the event's or the protobuf message)."""
    return sum(getattr(breakdown, name) for name in ACCOUNTS)


def cleared(breakdown) -> tuple[int, ...]:
    """A settlement's contribution to the clearing month's money columns (``CLEARED_KEYS``), from a Breakdown."""
    return (*(getattr(breakdown, name) for name in CLEARED_KEYS[:-1]), accounts_total(breakdown))


def reported_as(layer: str, insutype: str) -> str:
    """The Breakdown field a layer's payment goes in for a person of this insutype."""
    fields = next(x.reported_as for x in LAYERS if x.name == layer)
    return fields.get(insutype) or fields[""]


def pad(values: tuple[int, ...], n: int) -> tuple[int, ...]:
    """A recorded array from before the newest positions existed, read with 0 for each of them."""
    return values if len(values) >= n else values + (0,) * (n - len(values))


def cython_constants() -> str:
    """The generated core/_money.pxi: C names for every position (setup.py writes it at build time)."""
    lines = ["# Generated by setup.py from core/money.py; do not edit.", "", "cdef enum:"]
    lines += [f"    BD_{a.name.upper()} = {i}" for i, a in enumerate(BREAKDOWN)]
    lines += [f"    N_BREAKDOWN = {len(BREAKDOWN)}"]
    lines += [f"    ACC_{a.name.upper()} = {i}" for i, a in enumerate(ACCUMULATORS)]
    lines += [f"    N_ACCUMULATORS = {len(ACCUMULATORS)}"]
    for layer in LAYERS:
        for insutype, field in layer.reported_as.items():
            suffix = f"_{insutype}" if insutype else ""
            lines.append(f"    LAYER_{layer.name.upper()}{suffix} = BD_{field.upper()}")
    # the positions as the C side numbers them, for tests/core/test_core_layout.py
    lines += ["", "MONEY_INDEX = {"]
    lines += [f'    "{a.name}": BD_{a.name.upper()},' for a in BREAKDOWN]
    lines += [f'    "{a.name}": ACC_{a.name.upper()},' for a in ACCUMULATORS]
    lines += ["}"]
    return "\n".join(lines) + "\n"

"""The property tests' settlement traffic: random visit lifecycles as steps, turned into commands.

``step`` draws one step (admission, fee upload, withdrawal, refund, discharge or mid-stay settlement,
cancellation, outpatient settlement, account adjustment); ``Traffic.command`` turns it into the command
it stands for, choosing its target (an open stay, a settlement) from the state of an engine.  The engine
property test (tests/core/test_engine_property.py) runs the commands through the engine itself; the
settle-path equivalence test (tests/gateway/test_settle_paths.py) sends the same commands to gateways,
each through another RPC path, with an engine beside them as the reference.
"""
from __future__ import annotations

from hypothesis import strategies as st

from core import commands as cmd
from core.engine import Engine
from core.events import FeeLine
from builders import DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, NOT_LISTED, TREATMENT_A

PERSONS = ("retired", "assist", "in_service", "acct")   # "acct" has a personal and a family account
ACCOUNTS = ("acct", "family")
CODES = (DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, TREATMENT_A, NOT_LISTED)

fee_line = st.tuples(st.sampled_from(CODES), st.integers(0, 3_000_000), st.integers(1, 20_000))
step = st.one_of(
    st.tuples(st.just("admit"), st.sampled_from(PERSONS), st.sampled_from(("hk_l1", "hk_l2", "hk_l3"))),
    st.tuples(st.just("fees"), st.integers(0, 7), st.lists(fee_line, min_size=1, max_size=4)),
    st.tuples(st.just("withdraw"), st.integers(0, 7), st.integers(0, 3)),
    st.tuples(st.just("settle"), st.integers(0, 7), st.sampled_from((20260315, 20260901, 20270110))),
    st.tuples(st.just("cancel"), st.integers(0, 7), st.just(None)),
    st.tuples(st.just("outpatient"), st.sampled_from(PERSONS), st.lists(fee_line, min_size=1, max_size=3)),
    st.tuples(st.just("adjust"), st.sampled_from(ACCOUNTS), st.integers(-400_000, 400_000)),
    st.tuples(st.just("refund"), st.integers(0, 7), st.integers(1, 20_000)),   # SPEC §10.4
)


class Traffic:
    """Steps -> commands on the spec data set (``names``: datagen.spec_fixture's), request ids ``prefix`` + n."""

    def __init__(self, names: dict, prefix: str = "r") -> None:
        self.names = names
        self.psn = {name: names["psn"][name] for name in PERSONS + ACCOUNTS}
        self.prefix = prefix
        self.sn = 0   # fee line numbers, unique over the whole traffic

    def lines(self, spec) -> tuple[FeeLine, ...]:
        first = self.sn + 1
        self.sn += len(spec)
        return tuple(FeeLine(str(first + i), c, "", p, q, 20260310 + (first + i) % 10)
                     for i, (c, p, q) in enumerate(spec))

    def command(self, engine: Engine, n: int, kind: str, a, b) -> cmd.Command | None:
        """The command step ``n`` stands for in the engine's state now; None when it has no target."""
        names, psn, rid = self.names, self.psn, f"{self.prefix}{n}"
        visits = [v for v in engine.visits.open.values() if v.facts.visit_kind == "inpatient"]
        if kind == "admit":
            return cmd.Admit(request_id=rid, person=cmd.PersonId(psn_no=psn[a]), fixmedins_code=names["inst"][b],
                             adm_date=20260310)
        if kind == "outpatient":
            return cmd.OutpatientSettle(request_id=rid, person=cmd.PersonId(psn_no=psn[a]),
                                        fixmedins_code=names["inst"]["hk_l1"], setl_date=20260320,
                                        lines=self.lines(b), acct_used_flag=n % 3 != 0, acct_mulaid_flag=n % 2 == 0)
        if kind == "adjust":
            return cmd.AdjustAccount(request_id=rid, psn_no=psn[a], amount_fen=b, reason="年度划入")
        if kind == "cancel":
            setl_ids = sorted(engine.archive.settlements)
            if not setl_ids or not visits:
                return None
            return cmd.CancelSettlement(request_id=rid, setl_id=setl_ids[a % len(setl_ids)], cancel_date=20270201)
        if not visits:
            return None
        visit = visits[a % len(visits)]
        if kind == "fees":
            return cmd.UploadFees(request_id=rid, mdtrt_id=visit.mdtrt_id, lines=self.lines(b))
        if kind == "refund":
            originals = [ln for ln in visit.lines.values() if not ln.init_feedetl_sn]
            if not originals:
                return None
            original = originals[b % len(originals)]
            self.sn += 1
            return cmd.UploadFees(request_id=rid, mdtrt_id=visit.mdtrt_id, lines=(FeeLine(
                f"r{self.sn}", original.code, "", original.unit_price_fen, -b, original.fee_date,
                original.feedetl_sn),))
        if kind == "withdraw":
            return cmd.WithdrawFees(request_id=rid, mdtrt_id=visit.mdtrt_id, sns=tuple(list(visit.lines)[:b]))
        return cmd.DischargeSettle(request_id=rid, mdtrt_id=visit.mdtrt_id, dscg_date=b, acct_used_flag=n % 3 != 0,
                                   acct_mulaid_flag=n % 2 == 0, mid_setl_flag=n % 4 == 1)   # SPEC §10.3

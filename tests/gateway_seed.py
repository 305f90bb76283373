"""Prior history for gateway tests, written into a ledger before the gateway starts.

SPEC §5.6 E2, E4 and E5 start from accumulators "so far" this year. Over the
API the only way to get there is earlier settlements, so the tests write
those earlier settlements as ledger records, built from the same event
classes the gateway records (core/events.py), and the gateway replays them at
start-up.
"""
from __future__ import annotations

from core import ACCUMULATOR_KEYS, events
from core.events import Admitted, Breakdown, Filed, Settled, SettlementFacts, VisitFacts
from gateway.testing import seal_key
from gateway.store import Record, SqliteStore


def filed(person: dict, filing: dict) -> Filed:
    filing = dict(filing, status=filing.get("status", "active"))
    return Filed(person=events.Person(**{k: person[k] for k in events.Person.__struct_fields__}),
                 filing=events.Filing(**dict(filing, fixmedins_codes=tuple(filing["fixmedins_codes"]))))


def prior_settlement(n: int, psn_no: str, insuplc: str, fixmedins_code: str, mdtrtarea: str, level: int,
                     filing: dict, setl_date: int, deltas: dict, inpatient: bool) -> list[events.Event]:
    """The events of one earlier settlement that applied exactly ``deltas``."""
    visit = VisitFacts(
        mdtrt_id=f"M{900_000_000_000_000 + n:015d}", psn_no=psn_no, fixmedins_code=fixmedins_code,
        visit_kind="inpatient" if inpatient else "outpatient", adm_date=setl_date,
        filing_id=filing["filing_id"], filing_kind=filing["kind"], insuplc_admdvs=insuplc,
        mdtrtarea_admdvs=mdtrtarea, fixmedins_level=level,
    )
    settlement = SettlementFacts(
        setl_id=f"S{900_000_000_000_000 + n:015d}", mdtrt_id=visit.mdtrt_id, psn_no=psn_no,
        fixmedins_code=fixmedins_code, insuplc_admdvs=insuplc, mdtrtarea_admdvs=mdtrtarea,
        visit_kind=visit.visit_kind, insutype="310", setl_date=setl_date, year=setl_date // 10000,
        breakdown=Breakdown(*[0] * len(Breakdown.__struct_fields__)),
        deltas=tuple(deltas.get(k, 0) for k in ACCUMULATOR_KEYS),
    )
    if inpatient:
        return [Admitted(visit=visit), Settled(settlement=settlement)]
    return [Settled(settlement=settlement, visit=visit)]


def write_ledger(path: str, caller: str, seeded: list[events.Event]) -> None:
    store = SqliteStore(path, seal_key())
    try:
        store.append([
            Record(kind=e.kind, caller=caller, request_id=f"seed-{i}", digest=i.to_bytes(16, "big"),
                   key=e.key, body=events.encode(e), response=b"")
            for i, e in enumerate(seeded, 1)
        ])
    finally:
        store.close()

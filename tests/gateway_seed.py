"""Prior history for gateway tests, written into a ledger before the gateway starts.

SPEC §5.6 E2, E4 and E5 start from accumulators "so far" this year. Over the
API the only way to get there is earlier settlements, so the tests write
those earlier settlements as ledger records, exactly as the gateway would
have, and the gateway replays them at start-up.
"""
from __future__ import annotations

import orjson

from gateway.app import event_key
from gateway.ledger import Record, SqliteStore


def filed(person: dict, filing: dict) -> dict:
    return {"type": "filed", "person": dict(person), "filing": dict(filing, status=filing.get("status", "active"))}


def prior_settlement(n: int, psn_no: str, insuplc: str, fixmedins_code: str, mdtrtarea: str, level: int,
                     filing: dict, setl_date: int, deltas: dict, inpatient: bool) -> list[dict]:
    """The events of one earlier settlement that applied exactly ``deltas``."""
    visit = {
        "mdtrt_id": f"M{900_000_000_000_000 + n:015d}", "psn_no": psn_no, "fixmedins_code": fixmedins_code,
        "visit_kind": "inpatient" if inpatient else "outpatient", "adm_date": setl_date,
        "filing_id": filing["filing_id"], "filing_kind": filing["kind"], "insuplc_admdvs": insuplc,
        "mdtrtarea_admdvs": mdtrtarea, "fixmedins_level": level,
    }
    settlement = {
        "setl_id": f"S{900_000_000_000_000 + n:015d}", "mdtrt_id": visit["mdtrt_id"], "psn_no": psn_no,
        "psn_name": "", "fixmedins_code": fixmedins_code, "fixmedins_name": "", "insuplc_admdvs": insuplc,
        "mdtrtarea_admdvs": mdtrtarea, "visit_kind": visit["visit_kind"], "insutype": "310",
        "filing_id": filing["filing_id"], "filing_kind": filing["kind"], "setl_date": setl_date,
        "policy_effective_from": 20260101, "breakdown": {}, "lines": [], "status": "settled",
        "year": setl_date // 10000, "deltas": deltas,
    }
    if inpatient:
        return [{"type": "admitted", "visit": visit, "ipt_no": ""}, {"type": "settled", "settlement": settlement}]
    return [{"type": "settled", "visit": visit, "lines": [], "settlement": settlement}]


def write_ledger(path: str, caller: str, events: list[dict]) -> None:
    store = SqliteStore(path)
    try:
        store.append([
            Record(kind=e["type"], caller=caller, request_id=f"seed-{i}", digest=i.to_bytes(16, "big"),
                   key=event_key(e), body=orjson.dumps(e), response=b"")
            for i, e in enumerate(events, 1)
        ])
    finally:
        store.close()

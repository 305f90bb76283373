"""A fund layer and an accumulator added later: every ledger written before them replays unchanged.

    python tests/money_layer.py record DIR      (with today's build: a ledger, a snapshot, the answers)
    python tests/money_layer.py extend TREE     (declare a made-up layer's amount and an accumulator in a copy)

`make test-debug` records a ledger with the project's build, declares a made-up layer in the debug tree's
core/money.py (an amount of the breakdown that is cleared, and an accumulator), builds that tree and runs
tests/core/test_core_money_layer.py there, which replays the recorded ledger (and restores its snapshot) and finds
every recorded amount, accumulator and clearing total as it was, and the new ones 0.
"""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MADE_UP = '''

# A made-up layer, declared by tests/money_layer.py extend for tests/core/test_core_money_layer.py (test builds only).
BREAKDOWN += (Amount("test_layer_pay", "测试层", layer="test_layer", cleared=True),)
LAYERS += (Layer("test_layer", "测试层", {"": "test_layer_pay"}),)
ACCUMULATORS += (Accumulator("test_layer_paid_fen", "测试层已支付"),)
_derive()
'''


def extend(tree: str) -> None:
    with open(os.path.join(tree, "core", "money.py"), "a", encoding="utf-8") as f:
        f.write(MADE_UP)


def record(out: str) -> None:
    """Today's ledger: settlements of every kind and layer, a cancellation, an account, a closed month."""
    out = os.path.abspath(out)
    sys.path.insert(0, ROOT)
    from builders import DRUG_A, DRUG_B, TREATMENT_A
    from core import Index, events
    from core import commands as cmd
    from core.archive import MemoryArchive
    from core.engine import Engine
    from core.events import FeeLine
    from datagen.spec_fixture import DATE, write_spec_dataset
    from gateway.store import snapshot
    from gateway.transport.convert import encode_reply
    from gateway.store import Record, SqliteStore
    from gateway.store.seal import SealKey, write_key

    names = write_spec_dataset(os.path.join(out, "data"))
    index = Index()
    index.load_dir(names["dir"])
    write_key(os.path.join(out, "seal.key"))   # the test that replays it reads the same key
    store = SqliteStore(os.path.join(out, "ledger.sqlite"), SealKey.read(os.path.join(out, "seal.key")))
    engine = Engine(index, MemoryArchive())
    seq, settled = 0, {}

    def do(command, caller="460000"):
        nonlocal seq
        decision = engine.decide(command, seq + 1)
        seq += 1
        changes = engine.apply(decision.event, seq)
        store.append([Record(decision.event.kind, caller, command.request_id, seq.to_bytes(16, "big"),
                             decision.event.key, events.encode(decision.event), encode_reply(decision.result),
                             seq, changes=tuple(changes))])
        return decision

    def lines(*spec):
        return tuple(FeeLine(str(i), code, "", price, qty) for i, (code, price, qty) in enumerate(spec, 1))

    psn, inst = names["psn"], names["inst"]
    do(cmd.SetPrepaid(request_id="p", province="210000", amount_fen=10 ** 9), "national")
    for who, level in (("retired", "hk_l3"), ("assist", "hk_l2")):       # inpatient: supplementary, assistance
        visit = do(cmd.Admit(request_id=f"a-{who}", person=cmd.PersonId(psn_no=psn[who]),
                             fixmedins_code=inst[level], adm_date=DATE)).event.visit
        do(cmd.UploadFees(request_id=f"f-{who}", mdtrt_id=visit.mdtrt_id,
                          lines=lines((TREATMENT_A, 8_000_000, 1000), (DRUG_B, 50_000, 20_000))))
        settled[who] = do(cmd.DischargeSettle(request_id=f"s-{who}", mdtrt_id=visit.mdtrt_id,
                                              dscg_date=DATE + 5)).event.settlement
    blob_seq = seq
    state = engine.export_state()
    for n, who in enumerate(("in_service", "acct", "retired")):         # outpatient, after the snapshot
        settled[f"op-{who}"] = do(cmd.OutpatientSettle(
            request_id=f"o-{n}", person=cmd.PersonId(psn_no=psn[who]), fixmedins_code=inst["hk_l1"],
            setl_date=DATE + 6, lines=lines((DRUG_A, 1250, 6000), (DRUG_B, 8800, 1500)),
            acct_used_flag=who == "acct")).event.settlement
    do(cmd.CancelSettlement(request_id="c", setl_id=settled["op-retired"].setl_id, cancel_date=DATE + 7))
    do(cmd.ChangeClearingMonth(request_id="close", month=DATE // 100, action="close"), "national")
    key = store.key
    snapshot.Snapshots(os.path.join(out, "ledger.sqlite.snapshots")).write(
        snapshot.seal(blob_seq, snapshot.encode(blob_seq, names["dir"], state), store.chain_at(blob_seq), key),
        blob_seq)
    store.close()
    report = engine.clearing.report(DATE // 100)
    expected = {
        "data_dir": names["dir"], "records": seq, "snapshot_seq": blob_seq,
        "breakdowns": {s.setl_id: msgspec_dict(s.breakdown) for s in settled.values()},
        "deltas": {s.setl_id: list(s.deltas) for s in settled.values()},
        "accumulators": {p: engine.index.accumulators(p, DATE // 10000) for p in psn.values()},
        "clearing_totals": report.totals,
    }
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)


def msgspec_dict(struct) -> dict:
    import msgspec

    return msgspec.structs.asdict(struct)


if __name__ == "__main__":
    {"record": record, "extend": extend}[sys.argv[1]](sys.argv[2])

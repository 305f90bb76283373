"""A ledger written before a fund layer and an accumulator were declared replays unchanged (core/money.py).

Runs in the tree `make test-debug` builds with a made-up layer declared (tests/money_layer.py extend), on the
ledger tests/money_layer.py recorded with the project's own build (``YIDI_MONEY_LAYER_LEDGER``): a full replay
and a restore from its snapshot give every recorded amount, accumulator and clearing total as recorded, and
the new amount, accumulator and clearing column 0.  Skipped where no made-up layer is declared.
"""
from __future__ import annotations

import json
import os

import msgspec
import pytest

from core import Index, events, money
from core.archive import MemoryArchive
from core.engine import Engine
from datagen.spec_fixture import DATE, YEAR
from gateway.store import snapshot
from gateway.store import SqliteStore
from gateway.store.seal import SealKey

LEDGER_DIR = os.environ.get("YIDI_MONEY_LAYER_LEDGER", "")
NEW_AMOUNT, NEW_ACCUMULATOR = "test_layer_pay", "test_layer_paid_fen"

pytestmark = pytest.mark.skipif(NEW_AMOUNT not in money.BREAKDOWN_KEYS or not LEDGER_DIR,
                                reason="needs a build with the made-up layer and a recorded ledger (make test-debug)")


@pytest.fixture(scope="module")
def recorded():
    with open(os.path.join(LEDGER_DIR, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


def open_ledger() -> SqliteStore:
    return SqliteStore(os.path.join(LEDGER_DIR, "ledger.sqlite"), SealKey.read(os.path.join(LEDGER_DIR, "seal.key")))


def replayed(after: int, engine: Engine, until: int = 1 << 62) -> dict:
    """Apply the records after seq ``after`` (up to ``until``); the settlements replayed, by setl_id."""
    store = open_ledger()
    settled = {}
    try:
        for record in store.scan(after):
            if record.seq > until:
                break
            event = events.decode(record.body)
            engine.apply(event, record.seq)
            if type(event) is events.Settled:
                settled[event.settlement.setl_id] = event.settlement
    finally:
        store.close()
    return settled


def fresh_engine(recorded, archive=None) -> Engine:
    index = Index()
    index.load_dir(recorded["data_dir"])
    return Engine(index, archive or MemoryArchive())


def check(recorded, engine: Engine, settled) -> None:
    for psn_no, values in recorded["accumulators"].items():
        assert engine.index.accumulators(psn_no, YEAR) == {**values, NEW_ACCUMULATOR: 0}, psn_no
    for setl_id, facts in settled.items():
        assert msgspec.structs.asdict(facts.breakdown) == {**recorded["breakdowns"][setl_id], NEW_AMOUNT: 0}
        assert list(facts.deltas) == recorded["deltas"][setl_id] + [0]
    totals = engine.clearing.report(DATE // 100).totals
    assert totals == {**recorded["clearing_totals"], NEW_AMOUNT: 0}


def test_a_full_replay_reads_the_new_layer_and_accumulator_as_zero(recorded):
    engine = fresh_engine(recorded)
    settled = replayed(0, engine)
    assert len(settled) == len(recorded["breakdowns"])
    check(recorded, engine, settled)


def test_a_snapshot_kept_before_them_restores_with_them_zero(recorded):
    store = open_ledger()
    key = store.key
    store.close()
    snap = snapshot.Snapshots(os.path.join(LEDGER_DIR, "ledger.sqlite.snapshots")).newest(10 ** 9, key)
    assert snap is not None and snap.seq == recorded["snapshot_seq"]
    history = fresh_engine(recorded)     # the archive as the store holds it when the snapshot is restored
    replayed(0, history, until=snap.seq)
    engine = Engine.restore(fresh_engine(recorded).index, snap.engine, history.archive)
    check(recorded, engine, replayed(snap.seq, engine))

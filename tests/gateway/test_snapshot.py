"""Snapshots: written atomically, checked on read, a bad one skipped for an older one or a full replay."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.engine import EngineState
from core.events import Person
from datagen.spec_fixture import write_spec_dataset
from gateway.store import snapshot
from gateway._pb.yidi.v1 import admin_pb2, problems_pb2 as ppb, settlement_pb2 as spb
from gateway.store.seal import SealKey
from gateway_harness import file_person

PERSON = Person("P1", "210102195001010011", "名", "210102", "310", "retired", "active", False, "K1", "3.0")


def state(n: int) -> EngineState:
    return EngineState(persons=[PERSON] * n, filings=[], visits=[], accumulators=[("P1", 2026, (n,) * 7)])


CHAIN = bytes(range(32))
KEY = SealKey(bytes(range(32))).for_ledger("test-ledger")


def sealed(seq: int, data_dir: str, engine: EngineState, key=KEY) -> bytes:
    return snapshot.seal(seq, snapshot.encode(seq, data_dir, engine), CHAIN, key)


def test_round_trip_and_every_corruption_is_detected():
    blob = sealed(42, "/data", state(3))
    body = snapshot.decode(blob, KEY)
    assert (body.seq, body.data_dir, body.engine, body.chain) == (42, "/data", state(3), CHAIN)
    # magic, version, seq/length, seal, the ledger's chain value, body
    for i in (0, 9, 20, 40, 70, len(blob) // 2, len(blob) - 1):
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        with pytest.raises(snapshot.SnapshotCorrupt):
            snapshot.decode(bytes(flipped), KEY)
    with pytest.raises(snapshot.SnapshotCorrupt):
        snapshot.decode(blob[:-1], KEY)
    with pytest.raises(snapshot.SnapshotCorrupt):
        snapshot.decode(blob[:10], KEY)


def test_a_snapshot_resealed_without_the_key_or_by_another_ledger_is_refused():
    """Issue 13 item 4: the seal was an unkeyed hash, so an edited body could be resealed by anyone."""
    blob = sealed(42, "/data", state(3))
    edited = snapshot.encode(42, "/data", state(4))   # the accumulators changed
    for key in (SealKey(bytes(32)).for_ledger("test-ledger"), SealKey(bytes(range(32))).for_ledger("another")):
        with pytest.raises(snapshot.SnapshotCorrupt, match="seal"):
            snapshot.decode(snapshot.seal(42, edited, CHAIN, key), KEY)
    assert snapshot.decode(blob, KEY).engine == state(3)


def test_newest_valid_is_used_and_a_corrupt_one_skipped_with_its_name(tmp_path, caplog):
    snaps = snapshot.Snapshots(str(tmp_path / "s"), keep=3)
    for seq in (10, 20, 30, 40):
        snaps.write(sealed(seq, "/d", state(seq // 10)), seq)
    assert snaps.seqs() == [40, 30, 20]  # only the newest three are kept
    with open(snaps.path(40), "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\xff\xff\xff")
    with caplog.at_level(logging.ERROR, logger="yidi.snapshot"):
        newest = snaps.newest(100, KEY)
    assert newest.seq == 30 and len(newest.engine.persons) == 3
    assert snaps.path(40) in caplog.text and "seal" in caplog.text
    assert [path for path, _ in snaps.rejected] == [snaps.path(40)]   # the gateway reports it
    with pytest.raises(snapshot.LedgerBehindSnapshot):
        snaps.newest(35, KEY)  # the ledger lost records a snapshot covers: refuse to start


def test_writers_of_one_seq_never_share_a_temporary_file(tmp_path):
    """Two writes of the same seq at once (they shared ``<name>.tmp``: one renamed the other's file away)."""
    snaps = snapshot.Snapshots(str(tmp_path / "s"), keep=3)
    blobs = {seq: sealed(seq, "/d", state(seq)) for seq in (1, 2)}
    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(lambda i: snaps.write(blobs[1 + i % 2], 1 + i % 2), range(64)))
    assert set(written) == {snaps.path(1), snaps.path(2)}
    assert sorted(os.listdir(snaps.directory)) == sorted(os.path.basename(p) for p in set(written))
    for seq in (1, 2):
        with open(snaps.path(seq), "rb") as f:
            assert f.read() == blobs[seq]


def test_a_corrupt_snapshot_at_start_up_falls_back_to_a_full_replay(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    ledger = str(tmp_path / "ledger.sqlite")
    gw = gateways(names["dir"], ledger)
    liaoning, national = gw.client("210000"), gw.client("national")
    file_person(liaoning, "P2101028001", "21010219800101801")
    snap = national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
    file_person(liaoning, "P2101028002", "21010219800101802")  # after the snapshot: the tail
    assert gw.stop() == 0
    with open(snap.path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    gw = gateways(names["dir"], ledger)
    assert f"snapshot {snap.path} rejected" in gw.log()
    liaoning = gw.client("210000")
    for psn_no in ("P2101028001", "P2101028002"):
        acc = liaoning(liaoning.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no=psn_no, year=2026))
        assert acc.psn_no == psn_no  # both filings are back: the whole ledger was replayed
    national = gw.client("national")
    status = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
    assert status.snapshot_seq == 0
    reports = national(national.problems.ListProblems, ppb.ListProblemsRequest()).problems
    assert [p.category for p in reports if snap.path in p.text] == [ppb.PROBLEM_CATEGORY_INTERNAL_ERROR]


def test_concurrent_snapshots_all_answer_and_a_restart_uses_them(tmp_path, gateways):
    """Issue 13 item 8: TakeSnapshot four at a time answered INTERNAL (two writers of one temporary file).
    Now every call answers with a durable, valid snapshot covering at least the records before it, the
    files left are whole, and a restart starts from the newest."""
    names = write_spec_dataset(tmp_path / "data")
    ledger = str(tmp_path / "ledger.sqlite")
    gw = gateways(names["dir"], ledger)
    liaoning, national = gw.client("210000"), gw.client("national")
    answers = []
    for wave in range(10):
        file_person(liaoning, f"P21010281{wave:02d}", f"21010219800101{wave:03d}")
        before = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
        calls = [national.admin.TakeSnapshot.future(admin_pb2.TakeSnapshotRequest(), timeout=30) for _ in range(8)]
        wave_answers = [call.result() for call in calls]  # raises on INTERNAL
        # No record was applied during the wave: one snapshot was written and every call answered with it.
        assert len({(a.ledger_seq, a.path, a.bytes) for a in wave_answers}) == 1, wave_answers
        assert wave_answers[0].ledger_seq == before.ledger_seq and wave_answers[0].bytes > 0
        answers += wave_answers
    assert len(answers) == 80
    directory = os.path.dirname(answers[0].path)
    left = sorted(os.listdir(directory))
    assert not [name for name in left if not name.endswith(".yidi")], left  # no temporary file left behind
    snaps = snapshot.Snapshots(directory)
    newest = max(a.ledger_seq for a in answers)
    assert snaps.seqs()[0] == newest
    for seq in snaps.seqs():
        with open(snaps.path(seq), "rb") as f:
            assert f.read(len(snapshot.MAGIC)) == snapshot.MAGIC
    assert gw.stop() == 0
    gw = gateways(names["dir"], ledger)
    # The newest is whole and sealed: the restart starts from it.
    assert f"state rebuilt: snapshot at seq {newest}," in gw.log() and "skipped" not in gw.log()
    national, liaoning = gw.client("national"), gw.client("210000")
    status = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
    assert status.snapshot_seq == newest
    for wave in range(10):
        acc = liaoning(liaoning.settlement.GetAccumulators,
                       spb.GetAccumulatorsRequest(psn_no=f"P21010281{wave:02d}", year=2026))
        assert acc.psn_no == f"P21010281{wave:02d}"

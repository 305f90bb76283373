"""A ledger that proves itself (gateway/store/chain.py): every kind of damage found from outside is detected.

Before: changing one digit of a settlement's recorded deltas or hifp_pay, one
bit of a stored response, or truncating the WAL by a frame went unnoticed —
the gateway started, reported SERVING and served wrong accumulators, wrong
amounts, non-identical replays, or silently dropped acknowledged settlements.
Now start-up refuses to serve, with one sentence naming the file, the record
and what is wrong, and ``yidi verify-ledger`` finds the same offline.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import grpc
import msgspec
import pytest

from core import events
from gateway.store import chain
from gateway._pb.yidi.v1 import admin_pb2, settlement_pb2 as spb
from gateway.testing import dev_certs, ledger_key, seal_key
from gateway.store.sqlite.verify import verify_ledger
from builders import DRUG_A, HK_L3, TREATMENT_A, admit, line, outpatient, settle, upload
from gateway_harness import ROOT, file_person
import ledger_edit

HAINAN, LIAONING = "460000", "210000"
WAL_FRAME_BYTES = 24 + 4096  # frame header + one page


@pytest.fixture(scope="module")
def pristine(spec_data, module_gateways):
    """A ledger with a filing, an inpatient settlement and an outpatient settlement, stopped cleanly."""
    ledger = spec_data["ledger"]
    gw = module_gateways(spec_data["dir"], ledger)
    hainan, liaoning = gw.client(HAINAN), gw.client(LIAONING)
    file_person(liaoning, "PI-1", "21010219800101011")
    a = admit(hainan, "PI-1", HK_L3, "i-admit", 20260301)
    upload(hainan, a.mdtrt_id, [line(1, TREATMENT_A, 500000, 1000)], "i-fees")
    settled = settle(hainan, a.mdtrt_id, "i-settle", 20260310)
    hainan(hainan.settlement.OutpatientSettle, outpatient("i-op", "PI-1", date=20260311,
                                                          lines=[line(1, DRUG_A, 1250, 6000)]))
    assert gw.stop() == 0
    return spec_data, ledger, int(settled.setl_id[1:])


def copy_ledger(pristine, tmp_path) -> str:
    _, ledger, _ = pristine
    copy = str(tmp_path / "ledger.sqlite")
    for suffix in ("", ".head"):
        shutil.copy(ledger + suffix, copy + suffix)
    return copy


def rewrite(path: str, seq: int, column: str, change) -> None:
    """Change one field of one record in its group behind the gateway's back (as a bad disk or a hand would)."""
    ledger_edit.rewrite(path, seq, **{column: change(getattr(ledger_edit.record(path, seq), column))})


def with_deltas_digit_changed(body: bytes) -> bytes:
    event = events.decode(body)
    deltas = list(event.settlement.deltas)
    deltas[0] += 1  # one more fen of inpatient fund paid
    return events.encode(msgspec.structs.replace(event, settlement=msgspec.structs.replace(
        event.settlement, deltas=tuple(deltas))))


def with_hifp_pay_changed(body: bytes) -> bytes:
    event = events.decode(body)
    b = msgspec.structs.replace(event.settlement.breakdown, hifp_pay=event.settlement.breakdown.hifp_pay + 10)
    return events.encode(msgspec.structs.replace(event, settlement=msgspec.structs.replace(event.settlement, breakdown=b)))


def one_bit_flipped(blob: bytes) -> bytes:
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0x04
    return bytes(flipped)


def refused_start(gateways, names, ledger) -> str:
    """Start a gateway that must refuse; its log (one clear line, no traceback)."""
    with pytest.raises(RuntimeError) as failed:
        gateways(names["dir"], ledger, timeout=60)
    log = str(failed.value)
    assert "Traceback" not in log, log
    return log


@pytest.mark.parametrize("damage", ["deltas", "hifp_pay", "response bit", "chain value"])
def test_a_changed_record_is_refused_at_start_up_and_by_verify_ledger(pristine, tmp_path, damage, gateways):
    names, _, setl_seq = pristine
    ledger = copy_ledger(pristine, tmp_path)
    column, change = {"deltas": ("body", with_deltas_digit_changed), "hifp_pay": ("body", with_hifp_pay_changed),
                      "response bit": ("response", one_bit_flipped),
                      "chain value": ("chain", one_bit_flipped)}[damage]
    rewrite(ledger, setl_seq, column, change)
    with pytest.raises(chain.LedgerCorrupt) as found:
        verify_ledger(ledger, ledger + ".snapshots", seal_key())
    assert found.value.seq == setl_seq and ledger in str(found.value)
    log = refused_start(gateways, names, ledger)
    assert f"refusing to start: ledger {ledger} record {setl_seq}: " in log, log[-2000:]


def test_a_truncated_wal_that_lost_acknowledged_records_is_refused(pristine, tmp_path, gateways):
    names, _, _ = pristine
    ledger = copy_ledger(pristine, tmp_path)
    gw = gateways(names["dir"], ledger)
    hainan = gw.client(HAINAN)
    for n in range(3):  # acknowledged: in the WAL, not yet checkpointed into the database file
        hainan(hainan.settlement.OutpatientSettle, outpatient(f"wal-{n}", "PI-1", date=20260312,
                                                              lines=[line(1, DRUG_A, 1250, 1000 + n)]))
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(30)
    gw.stop()
    wal = ledger + "-wal"
    size = os.path.getsize(wal)
    assert size > WAL_FRAME_BYTES
    os.truncate(wal, size - WAL_FRAME_BYTES)
    recorded = chain.HeadFile(chain.head_path(ledger), ledger_key(ledger)).read()
    log = refused_start(gateways, names, ledger)
    assert f"record {recorded.seq}: is missing" in log and "acknowledged records were lost" in log, log[-2000:]
    with pytest.raises(chain.LedgerCorrupt):
        verify_ledger(ledger, ledger + ".snapshots", seal_key())


def test_a_record_changed_before_the_newest_snapshot_is_never_served(pristine, tmp_path, gateways):
    """Start-up verifies from the newest snapshot on; older records are checked as they are read."""
    names, _, setl_seq = pristine
    ledger = copy_ledger(pristine, tmp_path)
    gw = gateways(names["dir"], ledger)
    national = gw.client("national")
    snap = national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
    assert gw.stop() == 0
    rewrite(ledger, setl_seq, "response", one_bit_flipped)
    gw = gateways(names["dir"], ledger)  # records after the snapshot verify; this one is before it
    hainan = gw.client(HAINAN)
    code, reason, message = hainan.refused(hainan.settlement.GetSettlement,
                                           spb.GetSettlementRequest(setl_id=f"S{setl_seq:015d}"))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "LEDGER_DAMAGED")  # not the damaged bytes
    assert gw.stop() == 0
    assert f"record {setl_seq}: its content does not match its checksum" in gw.log()
    with pytest.raises(chain.LedgerCorrupt) as found:
        verify_ledger(ledger, ledger + ".snapshots", seal_key())
    assert found.value.seq == setl_seq
    # The record the snapshot stands on is checked against the chain value the snapshot recorded.
    rewrite(ledger, setl_seq, "response", one_bit_flipped)  # undo
    rewrite(ledger, snap.ledger_seq, "chain", one_bit_flipped)
    log = refused_start(gateways, names, ledger)
    assert f"record {snap.ledger_seq}: " in log


def test_verify_ledger_command_says_ok_or_names_the_record(pristine, tmp_path):
    ledger = copy_ledger(pristine, tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT)
    key = ["--key", dev_certs().seal_key]
    ok = subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", ledger, *key], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK {ledger}: ") and "keyed hash chain verified" in ok.stdout
    unkeyed = subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", ledger], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert unkeyed.returncode == 0 and unkeyed.stdout.startswith(f"OK (without the seal key) {ledger}: ")
    assert "need --key" in unkeyed.stdout
    rewrite(ledger, 2, "body", one_bit_flipped)
    bad = subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", ledger, *key], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip() == (
        f"NOT OK: ledger {ledger} record 2: its content does not match its checksum "
        "(it was changed after it was written)")


@pytest.mark.parametrize("make", ["missing directory", "a directory", "not a database"])
def test_a_ledger_that_cannot_be_opened_is_one_clear_line(pristine, tmp_path, make):
    names, _, _ = pristine
    if make == "missing directory":
        ledger = str(tmp_path / "no" / "such" / "ledger.sqlite")
    elif make == "a directory":
        ledger = str(tmp_path / "dir.sqlite")
        os.mkdir(ledger)
    else:
        ledger = str(tmp_path / "junk.sqlite")
        with open(ledger, "wb") as f:
            f.write(b"not sqlite at all " * 100)
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "gateway", "serve", "--data-dir", names["dir"], "--ledger", ledger,
                          "--listen", "127.0.0.1:0", "--insecure"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"refusing to start: cannot open the ledger {ledger}: "), last

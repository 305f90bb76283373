"""Damage to the ledger's files, as an attacker or an unlucky operator would do it: is any of it served?

    python tests/tamper.py                 (make tamper; every case, prints one JSON line)
    python tests/tamper.py --case NAME     (one case, its details)

A ledger is made over real gRPC and mTLS on the SPEC fixture (filings,
outpatient settlements, a batch of them (one commit group), a cancellation, a reversal, an inpatient stay, a
problem report with a comment, a snapshot in the middle, settlements after
it), with a witness directory and a copy of everything taken half way (for
the rollback case).  Every answer it gave is kept: each acknowledged
request's response bytes, and the bytes of GetSettlement, GetAccumulators,
ReconcileTotals, GetProblem and ListProblems.

Each case copies that ledger, damages the copy, and then:

1. ``yidi verify-ledger --key --witness`` on it: does it say NOT OK?
2. starts a gateway on it: does it refuse to start (one sentence)?
3. if it starts: asks every kept question again (acknowledged requests are
   retried with their request ids: a damaged idempotency index would
   perform them again).  An answer different from the kept one, or a
   refusal other than LEDGER_DAMAGED, is *served silently*; so is a gateway
   that still reports SERVING on its plaintext health port 15 s after start
   while its ledger is damaged.

Where each case was caught: ``start`` (refused to start, or a damaged
snapshot refused at start with a problem report, nothing wrong served),
``after start`` (every damaged answer refused LEDGER_DAMAGED, NOT_SERVING
within seconds: the background verification or a proof on read), and
``verify`` (verify-ledger).  Two cases run against a live gateway: the
ledger file unlinked while it serves, and a second gateway on the same
ledger.  The JSON line: ``cases``, ``detected_at_start``,
``detected_after_start``, ``detected_by_verify_ledger``,
``served_silently`` (must be 0) and each case's outcome.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import grpc  # noqa: E402
import msgspec  # noqa: E402

from core import events  # noqa: E402
from datagen.spec_fixture import write_spec_dataset  # noqa: E402
from gateway.store import chain, snapshot  # noqa: E402
from gateway._pb.yidi.v1 import admin_pb2, common_pb2 as pb, funds_pb2 as fdpb  # noqa: E402
from gateway._pb.yidi.v1 import problems_pb2 as ppb, settlement_pb2 as spb  # noqa: E402
from gateway.store.chain import decode_head_row as _HEAD_DECODE, encode_head_row as _HEAD_ENCODE  # noqa: E402
from gateway.store.seal import SealKey  # noqa: E402
from gateway.transport.status import reason_of  # noqa: E402
from gateway.testing import dev_certs, ledger_key, start_gateway  # noqa: E402
from tests.gateway_harness import file_person  # noqa: E402
from tests.builders import HK_L1, HK_L3, TREATMENT_A, line, outpatient  # noqa: E402
from tests import ledger_edit  # noqa: E402

HAINAN, LIAONING, NATIONAL = "460000", "210000", "national"
CLINIC, HOSPITAL = HK_L1, HK_L3
DETECTION_WAIT_S = 15


# ------------------------------------------------------------------ the pristine ledger and its answers
@dataclass
class Question:
    caller: str
    method: str        # "/yidi.v1.SettlementService/GetSettlement"
    request: bytes
    answer: bytes


@dataclass
class Pristine:
    data_dir: str
    work: str          # ledger.sqlite, its head file, snapshots, witness/, early/ (the half-way copy)
    questions: list[Question] = field(default_factory=list)
    settlements: dict[str, int] = field(default_factory=dict)   # request_id -> seq of the settlement record
    snapshot_seq: int = 0
    batch: list[int] = field(default_factory=list)   # seqs of the settlements of one SettleBatch: one group
    cancelled_setl: int = 0
    problem_seq: int = 0

    @property
    def ledger(self) -> str:
        return os.path.join(self.work, "ledger.sqlite")


def ask(gw, caller: str, method: str, request) -> bytes:
    return gw.client(caller).raw(method, request)


def options(p_work: str) -> tuple[str, ...]:
    return ("--witness", os.path.join(p_work, "witness"), "--health-listen", "127.0.0.1:0")


def keep(p: Pristine, gw, caller: str, method: str, request) -> bytes:
    answer = ask(gw, caller, method, request)
    p.questions.append(Question(caller, method, request.SerializeToString(), answer))
    return answer


def keep_outpatient(p: Pristine, gw, request_id: str, price: int) -> spb.SettlementResponse:
    request = outpatient(request_id, "PT-1", CLINIC, date=20260316, price=price, qty_milli=2000)
    answer = spb.SettlementResponse.FromString(keep(p, gw, HAINAN, "/yidi.v1.SettlementService/OutpatientSettle",
                                                    request))
    p.settlements[request_id] = int(answer.settlement.setl_id[1:])
    return answer


def keep_batch(p: Pristine, gw, items: list) -> None:
    """A SettleBatch of outpatient settlements: its records are one commit group."""
    request = spb.SettleBatchRequest(items=[spb.SettleItem(outpatient=item) for item in items])
    answer = spb.SettleBatchResponse.FromString(keep(p, gw, HAINAN, "/yidi.v1.SettlementService/SettleBatch",
                                                     request))
    p.batch = [int(o.settlement.settlement.setl_id[1:]) for o in answer.outcomes]
    assert len(p.batch) == len(items) and p.batch == list(range(p.batch[0], p.batch[0] + len(items))), p.batch
    for item, seq in zip(items, p.batch, strict=True):
        p.settlements[item.request_id] = seq


def build(work: str) -> Pristine:
    """The ledger every case damages a copy of, and the answers it gave."""
    names = write_spec_dataset(os.path.join(work, "data"))
    p = Pristine(names["dir"], os.path.join(work, "pristine"))
    os.makedirs(os.path.join(p.work, "witness"))
    gw = start_gateway(p.data_dir, p.ledger, *options(p.work))
    liaoning, national = gw.client(LIAONING), gw.client(NATIONAL)
    file_person(liaoning, "PT-1", "21010219800101071")
    file_person(liaoning, "PT-2", "21010219800101072", person_type=pb.PERSON_TYPE_RETIRED)
    for n in range(4):
        keep_outpatient(p, gw, f"t-op-{n}", 1000 + 37 * n)
    keep_batch(p, gw, [outpatient(f"t-batch-{n}", "PT-1", CLINIC, date=20260316, price=700 + 11 * n)
                       for n in range(4)])
    cancel = spb.CancelSettlementRequest(request_id="t-cancel", setl_id=f"S{p.settlements['t-op-1']:015d}",
                                         cancel_date=20260317)
    keep(p, gw, HAINAN, "/yidi.v1.SettlementService/CancelSettlement", cancel)
    p.cancelled_setl = p.settlements["t-op-1"]
    keep(p, gw, HAINAN, "/yidi.v1.SettlementService/Reverse",
         spb.ReverseRequest(request_id="t-rev", original_request_id="t-op-2", reverse_date=20260317))
    admitted = spb.AdmitResponse.FromString(keep(p, gw, HAINAN, "/yidi.v1.SettlementService/Admit", spb.AdmitRequest(
        request_id="t-adm", psn_no="PT-2", fixmedins_code=HOSPITAL, adm_date=20260301)))
    keep(p, gw, HAINAN, "/yidi.v1.SettlementService/UploadFees", spb.UploadFeesRequest(
        request_id="t-fees", mdtrt_id=admitted.mdtrt_id, lines=[line(1, TREATMENT_A, 500000, 1000)]))
    stay = spb.SettlementResponse.FromString(keep(p, gw, HAINAN, "/yidi.v1.SettlementService/DischargeSettle",
                                                  spb.DischargeSettleRequest(request_id="t-dis",
                                                                             mdtrt_id=admitted.mdtrt_id,
                                                                             dscg_date=20260310)))
    p.settlements["t-dis"] = int(stay.settlement.setl_id[1:])
    report = ppb.ProblemResponse.FromString(keep(p, gw, HAINAN, "/yidi.v1.ProblemService/ReportProblem",
                                                 ppb.ReportProblemRequest(request_id="t-prob",
                                                                          setl_id=stay.settlement.setl_id,
                                                                          category=ppb.PROBLEM_CATEGORY_OTHER,
                                                                          text="核对住院费用")))
    p.problem_seq = int(report.problem.problem_id[1:])
    keep(p, gw, HAINAN, "/yidi.v1.ProblemService/CommentProblem", ppb.UpdateProblemRequest(
        request_id="t-comment", problem_id=report.problem.problem_id, text="已联系医院"))
    p.snapshot_seq = national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest()).ledger_seq
    assert gw.stop() == 0
    copy_files(p.work, os.path.join(p.work, "early"), witness=False)   # the operator's "backup", for the rollback
    gw = start_gateway(p.data_dir, p.ledger, *options(p.work))
    for n in range(4, 7):
        keep_outpatient(p, gw, f"t-op-{n}", 2000 + 41 * n)                # after the snapshot: the tail
    for seq in p.settlements.values():
        keep(p, gw, HAINAN, "/yidi.v1.SettlementService/GetSettlement",
             spb.GetSettlementRequest(setl_id=f"S{seq:015d}"))
    for psn_no in ("PT-1", "PT-2"):
        keep(p, gw, LIAONING, "/yidi.v1.SettlementService/GetAccumulators",
             spb.GetAccumulatorsRequest(psn_no=psn_no, year=2026))
    for code in (CLINIC, HOSPITAL):
        keep(p, gw, HAINAN, "/yidi.v1.FundsService/ReconcileTotals", fdpb.ReconcileTotalsRequest(
            range=fdpb.ReconcileRange(fixmedins_code=code, date_from=20260301, date_to=20260331)))
    keep(p, gw, HAINAN, "/yidi.v1.ProblemService/GetProblem",
         ppb.GetProblemRequest(problem_id=report.problem.problem_id))
    keep(p, gw, HAINAN, "/yidi.v1.ProblemService/ListProblems", ppb.ListProblemsRequest(province=HAINAN))
    keep(p, gw, NATIONAL, "/yidi.v1.FundsService/GetPositions", fdpb.GetPositionsRequest())
    assert gw.stop() == 0
    return p


LEDGER_FILES = ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite.head", "ledger.sqlite.snapshots")


def copy_files(src: str, dst: str, witness: bool = True) -> None:
    os.makedirs(dst, exist_ok=True)
    names = LEDGER_FILES + (("witness",) if witness else ())
    for name in names:
        path = os.path.join(src, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(dst, name))
        elif os.path.exists(path):
            shutil.copy(path, os.path.join(dst, name))


# ------------------------------------------------------------------ damage, as SQL or bytes on disk
def sql(ledger: str, *statements: tuple) -> None:
    conn = sqlite3.connect(ledger, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(*statement) if isinstance(statement, tuple) else conn.execute(statement)
    finally:
        conn.close()


def one(ledger: str, query: str, *args):
    conn = sqlite3.connect(ledger)
    try:
        return conn.execute(query, args).fetchone()
    finally:
        conn.close()


def record_body_changed(ledger: str, seq: int, recompute_checksum: bool) -> None:
    """hifp_pay of a settlement record up by ¥1,000 (the body the archive and answers read from)."""
    event = events.decode(ledger_edit.record(ledger, seq).body)
    b = msgspec.structs.replace(event.settlement.breakdown, hifp_pay=event.settlement.breakdown.hifp_pay + 100_000)
    body = events.encode(msgspec.structs.replace(event, settlement=msgspec.structs.replace(event.settlement,
                                                                                           breakdown=b)))
    ledger_edit.rewrite(ledger, seq, body=body)
    if recompute_checksum:
        ledger_edit.rewrite(ledger, seq, checksum=ledger_edit.with_checksum(ledger_edit.record(ledger, seq),
                                                                            seq).checksum)


def records_swapped(ledger: str, a: int, b: int) -> None:
    """Two records' contents exchanged, each given the checksum of its new place (the chain left as it was)."""
    ledger_edit.swap(ledger, a, b)


def resealed_without_the_key(ledger: str, seq: int) -> None:
    """An edit, then the chain, the head row, the head file and the snapshots recomputed with a key of one's own."""
    record_body_changed(ledger, seq, recompute_checksum=True)
    forger = SealKey(hashlib.blake2b(b"not the seal key", digest_size=32).digest())
    (body,) = one(ledger, "SELECT body FROM head WHERE id = 1")
    head = _HEAD_DECODE(body)
    fkey = forger.for_ledger(head.ledger_id)
    previous = ledger_edit.rechained(ledger, fkey)
    new_head = msgspec.structs.replace(head, chain=previous)
    new_body = _HEAD_ENCODE(new_head)
    sql(ledger, ("UPDATE head SET body = ?, tag = ? WHERE id = 1", (new_body, fkey.mac(b"head" + new_body))))
    chain.HeadFile(chain.head_path(ledger), fkey).write(chain.Head(new_head.seq, previous))
    for path in glob.glob(os.path.join(ledger + ".snapshots", "*.yidi")):
        with open(path, "rb") as f:
            snap = snapshot.decode(f.read(), ledger_key(ledger))
        chain_at = ledger_edit.chain_at(ledger, snap.seq)
        with open(path, "wb") as f:
            f.write(snapshot.seal(snap.seq, snapshot._ENCODER.encode(snap), chain_at, fkey))


def snapshot_accumulators_edited(ledger: str, forger_key) -> None:
    """¥777 more on every accumulator row of the snapshot, resealed (unkeyed, or by another key)."""
    lkey = ledger_key(ledger)
    for path in glob.glob(os.path.join(ledger + ".snapshots", "*.yidi")):
        with open(path, "rb") as f:
            blob = f.read()
        snap = snapshot.decode(blob, lkey)
        rows = [(psn, year, tuple(v + 77_700 if i == 0 else v for i, v in enumerate(values)))
                for psn, year, values in snap.engine.accumulators]
        snap = msgspec.structs.replace(snap, engine=msgspec.structs.replace(snap.engine, accumulators=rows))
        body = snapshot._ENCODER.encode(snap)
        if forger_key is None:   # as the seal used to be: a hash anyone can recompute
            header = blob[:snapshot._HEADER.size]
            magic, version, seq, _, _, chain_value = snapshot._HEADER.unpack(header)
            digest = hashlib.blake2b(chain_value + body, digest_size=32).digest()
            sealed = snapshot._HEADER.pack(magic, version, seq, len(body), digest, chain_value) + body
        else:
            sealed = snapshot.seal(snap.seq, body, snap.chain, forger_key)
        with open(path, "wb") as f:
            f.write(sealed)


def head_row_counts_edited(ledger: str) -> None:
    (body,) = one(ledger, "SELECT body FROM head WHERE id = 1")
    head = _HEAD_DECODE(body)
    counts = dict(head.counts, requests=head.counts["requests"] - 1)
    new_body = _HEAD_ENCODE(msgspec.structs.replace(head, counts=counts))
    sql(ledger, ("UPDATE head SET body = ? WHERE id = 1", (new_body,)),
        "DELETE FROM requests WHERE (h, seq) IN (SELECT h, seq FROM requests LIMIT 1)")


def byte_flipped(path: str, offset: int = 20) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def chain_flipped(ledger: str, seq: int) -> None:
    flipped = bytearray(ledger_edit.chain_at(ledger, seq))
    flipped[3] ^= 0x01
    ledger_edit.rewrite(ledger, seq, chain=bytes(flipped))


@dataclass
class Case:
    name: str
    expect: str                                # where it must be caught: "start" or "after start"
    damage: Callable[[Pristine, str], None]   # (the pristine ledger, the case's directory)
    seal_key: str = ""                         # a key file other than the development one (an operator's slip)


def _at(d: str) -> str:
    return os.path.join(d, "ledger.sqlite")


def _rolled_back(p: Pristine, d: str) -> None:
    """The operator's restore: the ledger, its head file and its snapshots from the copy taken half way."""
    shutil.rmtree(_at(d) + ".snapshots")
    for name in LEDGER_FILES[:3]:
        if os.path.exists(os.path.join(d, name)):
            os.remove(os.path.join(d, name))
    copy_files(os.path.join(p.work, "early"), d, witness=False)


def _newest_visit_status_deleted(p: Pristine, d: str) -> None:
    sql(_at(d), "DELETE FROM visit_status WHERE (mdtrt_id, seq) IN"
                " (SELECT mdtrt_id, seq FROM visit_status ORDER BY seq DESC LIMIT 1)")


def _note_invented(p: Pristine, d: str) -> None:
    sql(_at(d), "INSERT INTO problem_notes (problem_seq, seq, action, by, text, at_ms, tag)"
                " SELECT problem_seq, seq + 1000, action, by, '已解决', at_ms, tag FROM problem_notes LIMIT 1")


def _recon_from_earlier_copy(p: Pristine, d: str) -> None:
    sql(_at(d), f"ATTACH '{os.path.join(p.work, 'early', 'ledger.sqlite')}' AS early", "DELETE FROM recon",
        "INSERT INTO recon SELECT * FROM early.recon")


def _cases() -> list[Case]:
    def op(p: Pristine, n: int) -> int:
        return p.settlements[f"t-op-{n}"]

    start, after = "start", "after start"
    return [
        Case("idempotency index: every row deleted", start, lambda p, d: sql(_at(d), "DELETE FROM requests")),
        Case("idempotency index: one acknowledged key deleted", start,
             lambda p, d: sql(_at(d), ("DELETE FROM requests WHERE seq = ?", (op(p, 0),)))),
        Case("idempotency index: a key pointed at another record", after,
             lambda p, d: sql(_at(d), ("UPDATE requests SET seq = seq + 1 WHERE seq = ?", (op(p, 0),)))),
        Case("record before the snapshot: hifp_pay +¥1,000, checksum recomputed", after,
             lambda p, d: record_body_changed(_at(d), op(p, 0), recompute_checksum=True)),
        Case("record before the snapshot: hifp_pay +¥1,000, checksum not recomputed", after,
             lambda p, d: record_body_changed(_at(d), op(p, 0), recompute_checksum=False)),
        Case("record before the snapshot: deleted", start,
             lambda p, d: ledger_edit.delete(_at(d), op(p, 3))),
        Case("records before the snapshot: two swapped, checksums recomputed", after,
             lambda p, d: records_swapped(_at(d), op(p, 0), op(p, 3))),
        Case("record before the snapshot: chain value changed", after, lambda p, d: chain_flipped(_at(d), op(p, 0))),
        Case("record after the snapshot: hifp_pay +¥1,000, checksum recomputed", start,
             lambda p, d: record_body_changed(_at(d), op(p, 5), recompute_checksum=True)),
        Case("a group of records (a batch): one record inside it, hifp_pay +¥1,000, checksum recomputed", after,
             lambda p, d: record_body_changed(_at(d), p.batch[1], recompute_checksum=True)),
        Case("groups: a batch's group and the group after it swapped, checksums recomputed", after,
             lambda p, d: ledger_edit.swap_groups(_at(d), p.batch[0], p.batch[-1] + 1)),
        Case("groups: the last group dropped", start, lambda p, d: ledger_edit.drop_last_group(_at(d))),
        Case("groups: a batch's group cut, its last 60 bytes", after,
             lambda p, d: ledger_edit.cut_tail(_at(d), p.batch[0], 60)),
        Case("groups: a batch's group without its last record, count and offsets made to match", start,
             lambda p, d: ledger_edit.drop_tail_records(_at(d), p.batch[0], 1)),
        Case("cancellation row deleted", start, lambda p, d: sql(_at(d), "DELETE FROM cancellations")),
        Case("reconciliation row: fund +¥1,000", after, lambda p, d: sql(_at(d), (
            "UPDATE recon SET fund = fund + 100000, medfee = medfee + 100000 WHERE setl_no = ?", (op(p, 0),)))),
        Case("visit status: newest row deleted", start, _newest_visit_status_deleted),
        Case("problem report: state edited", after, lambda p, d: sql(_at(d), "UPDATE problems SET state = 'resolved'")),
        Case("problem report: a note invented", start, _note_invented),
        Case("snapshot: accumulators +¥777, resealed with an unkeyed hash", start,
             lambda p, d: snapshot_accumulators_edited(_at(d), None)),
        Case("snapshot: accumulators +¥777, resealed with another key", start,
             lambda p, d: snapshot_accumulators_edited(_at(d), SealKey(bytes(32)).for_ledger("x"))),
        Case("whole rollback: ledger, head file and snapshots restored from an earlier copy", start, _rolled_back),
        Case("an edit with the chain, head row, head file and snapshots recomputed by another key", start,
             lambda p, d: resealed_without_the_key(_at(d), op(p, 0))),
        Case("head row deleted", start, lambda p, d: sql(_at(d), "DELETE FROM head")),
        Case("head row counts edited and a key deleted to match", start, lambda p, d: head_row_counts_edited(_at(d))),
        Case("head file changed", start, lambda p, d: byte_flipped(_at(d) + ".head", 20)),
        Case("witness deleted", start,
             lambda p, d: [os.remove(f) for f in glob.glob(os.path.join(d, "witness", "*"))]),
        Case("ledger file deleted", start, lambda p, d: os.remove(_at(d))),
        Case("reconciliation table swapped for an earlier copy's", start, _recon_from_earlier_copy),
        Case("started with another seal key", start, lambda p, d: None, seal_key="other"),
    ]


CASES = _cases()


# ------------------------------------------------------------------ one case
@dataclass
class Outcome:
    case: str
    verify: bool | None = False   # verify-ledger said NOT OK (None: the ledger is not damaged, nothing to find)
    expect: str = ""
    where: str = ""            # "start" | "after start" | "" (not detected)
    served: list[str] = field(default_factory=list)   # answers served from the damaged ledger
    note: str = ""


def verified(ledger: str, witness: str, key_file: str) -> tuple[bool, str]:
    run = subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", ledger, "--key", key_file,
                          "--witness", witness], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, timeout=120)
    return run.returncode == 1, (run.stdout + run.stderr).strip().splitlines()[-1:]


def rejected_snapshot_reported(gw) -> bool:
    national = gw.client(NATIONAL)
    try:
        problems = national(national.problems.ListProblems, ppb.ListProblemsRequest()).problems
    except grpc.RpcError:
        return False
    return any("快照文件" in problem.text for problem in problems)


def ask_again(p: Pristine, gw) -> tuple[list[str], int]:
    """Every kept question again: (answers that differ or are refused otherwise than LEDGER_DAMAGED, damaged)."""
    served, damaged = [], 0
    for q in p.questions:
        try:
            answer = gw.client(q.caller).raw(q.method, _Raw(q.request))
        except grpc.RpcError as err:
            if reason_of(err) == "LEDGER_DAMAGED":
                damaged += 1
                continue
            served.append(f"{q.method.rsplit('/', 1)[1]}: {reason_of(err) or err.code().name}")
            continue
        if answer != q.answer:
            served.append(f"{q.method.rsplit('/', 1)[1]}: a different answer")
    return served, damaged


class _Raw:
    """Request bytes sent as they are."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:   # noqa: N802 - the protobuf name the client calls
        return self.data


def run_case(p: Pristine, case: Case, work: str) -> Outcome:
    d = os.path.join(work, "case")
    shutil.rmtree(d, ignore_errors=True)
    copy_files(p.work, d)
    case.damage(p, d)
    ledger, witness = os.path.join(d, "ledger.sqlite"), os.path.join(d, "witness")
    out = Outcome(case.name, expect=case.expect)
    key_file = dev_certs().seal_key
    if case.seal_key:
        key_file = os.path.join(work, "other.key")
        if not os.path.exists(key_file):
            subprocess.run([sys.executable, "-m", "gateway", "keys", "--out", key_file], cwd=ROOT, check=True,
                           env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True)
    out.verify = verified(ledger, witness, dev_certs().seal_key)[0] if not case.seal_key else None
    try:
        gw = start_gateway(p.data_dir, ledger, "--seal-key", key_file, *options(d), timeout=60)
    except RuntimeError as err:
        out.where = "start"
        out.note = next((line for line in str(err).splitlines() if line.startswith("refusing to start")), "")[:300]
        return out
    try:
        out.served, damaged = ask_again(p, gw)
        if rejected_snapshot_reported(gw) and not out.served:
            out.where, out.note = "start", "the snapshot was refused at start and reported; state from the ledger"
            return out
        deadline = time.monotonic() + DETECTION_WAIT_S
        while time.monotonic() < deadline and gw.plain_health() == "SERVING":
            time.sleep(0.1)
        if gw.plain_health() != "SERVING":
            out.where = "after start"
            out.note = f"{damaged} answers refused LEDGER_DAMAGED; NOT_SERVING"
    finally:
        gw.stop(signal.SIGKILL)
    return out


# ------------------------------------------------------------------ against a live gateway
def unlinked_while_serving(p: Pristine, work: str) -> Outcome:
    """Item 6: the ledger file removed while the gateway serves: nothing more may be acknowledged."""
    d = os.path.join(work, "case")
    shutil.rmtree(d, ignore_errors=True)
    copy_files(p.work, d)
    ledger = os.path.join(d, "ledger.sqlite")
    out = Outcome("ledger file unlinked while serving", expect="after start")
    gw = start_gateway(p.data_dir, ledger, *options(d))
    try:
        hainan = gw.client(HAINAN)
        os.remove(ledger)
        acknowledged = 0
        for n in range(20):
            try:
                hainan(hainan.settlement.OutpatientSettle, outpatient(f"t-gone-{n}", "PT-1", CLINIC, date=20260318,
                                                                      price=900 + n, qty_milli=1000))
                acknowledged += 1
            except grpc.RpcError:
                pass
        if acknowledged:
            out.served.append(f"{acknowledged} settlements acknowledged into the unlinked file")
        gw.proc.wait(10)
        out.where = "after start" if gw.proc.poll() is not None else ""
        out.note = f"exit {gw.proc.poll()}; the first commit after the unlink failed, nothing acknowledged"
    finally:
        gw.stop(signal.SIGKILL)
    out.verify = verified(ledger, os.path.join(d, "witness"), dev_certs().seal_key)[0]
    try:
        start_gateway(p.data_dir, ledger, *options(d), timeout=60).stop(signal.SIGKILL)
        out.served.append("a restart served a ledger without those records")
    except RuntimeError:
        pass   # the restart refuses: its head file and witness say records were committed
    return out


def second_gateway(p: Pristine, work: str) -> Outcome:
    """Item 7: a second gateway on a ledger another one is writing is refused at start, naming the holder."""
    d = os.path.join(work, "case")
    shutil.rmtree(d, ignore_errors=True)
    copy_files(p.work, d)
    ledger = os.path.join(d, "ledger.sqlite")
    out = Outcome("a second gateway on the same ledger", verify=None, expect="start")
    first = start_gateway(p.data_dir, ledger, *options(d))
    try:
        start_gateway(p.data_dir, ledger, timeout=60).stop(signal.SIGKILL)
        out.served.append("a second writer started")
    except RuntimeError as err:
        out.where = "start"
        out.note = next((line for line in str(err).splitlines() if "in use by process" in line), "")[:300]
        if f"process {first.proc.pid} " not in out.note:
            out.served.append("the refusal does not name the holder")
    finally:
        first.stop(signal.SIGKILL)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", help="run only the case whose name contains this")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="yidi-tamper-") as work:
        pristine = build(work)
        outcomes = [run_case(pristine, case, work) for case in CASES if not args.case or args.case in case.name]
        if not args.case:
            outcomes += [unlinked_while_serving(pristine, work), second_gateway(pristine, work)]
    silently = [o for o in outcomes if o.served or not o.where]
    elsewhere = [o.case for o in outcomes if o.where and o.where != o.expect]
    missed_by_verify = [o.case for o in outcomes if o.verify is False]
    result = {
        "cases": len(outcomes),
        "detected_at_start": sum(o.where == "start" for o in outcomes),
        "detected_after_start": sum(o.where == "after start" and not o.served for o in outcomes),
        "detected_by_verify_ledger": sum(bool(o.verify) for o in outcomes),
        "served_silently": len(silently),
        "caught_elsewhere_than_expected": elsewhere,
        "missed_by_verify_ledger": missed_by_verify,
        "outcomes": [{"case": o.case, "where": o.where or "not detected",
                      "verify_ledger": "n/a" if o.verify is None else o.verify,
                      **({"served": o.served} if o.served else {}), **({"note": o.note} if o.note else {})}
                     for o in outcomes],
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0 if not (silently or elsewhere) else 1


if __name__ == "__main__":
    sys.exit(main())

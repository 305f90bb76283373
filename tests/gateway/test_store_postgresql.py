"""The PostgreSQL store (issue 16), against a real PostgreSQL server and a real gateway over gRPC and mTLS.

A gateway started with ``--store postgresql://…`` settles, answers a repeated
request id with its first answer byte for byte, reverses, and after kill -9
a restart replays from PostgreSQL (a snapshot kept there, then the tail) to
the same answers and accumulators; the same traffic gives the same answers
on SQLite and on PostgreSQL, and start-up rebuilds the same engine state
from either.  At the store itself: the keyed chain and the
sealed head are SQLite's, a second writer is refused, a deposed writer's
append is refused by the fencing token, the UNIQUE (caller, request_id)
constraint refuses a key twice, a changed row is caught when read, and the
partition's lease is taken only when free or expired, hands the partition
over with a token that fences the old writer, and is taken back from a
writer stopped inside an append's transaction.
"""
from __future__ import annotations

import signal
import time

import grpc
import msgspec
import psycopg
import pytest

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import (admin_pb2, funds_pb2 as fdpb, problems_pb2 as ppb,
                                 settlement_pb2 as spb)
from gateway.app import build_state
from gateway.pgcluster import Cluster
from gateway.config import Config
from gateway.store import LedgerCorrupt, LedgerUnavailable, Record, SqliteStore, open_snapshots, open_store
from gateway.store import chain
from gateway.store.idempotency import Keys
from gateway.store.rows import request_hash
from gateway.store.postgresql import safe_url
from gateway.store.postgresql import lease
from gateway.store.postgresql.store import Deposed, PostgresStore
from gateway.store.postgresql.verify import verify_ledger
from gateway.testing import seal_key
import builders
from builders import HK_L1, HK_L3, TREATMENT_A
from gateway_harness import file_person
import ledger_edit

HAINAN, LIAONING, NATIONAL = "460000", "210000", "national"
CLINIC, HOSPITAL = HK_L1, HK_L3
SETTLE = "/yidi.v1.SettlementService/OutpatientSettle"


def pg_outpatient(rid: str, price: int) -> spb.OutpatientSettleRequest:
    return builders.outpatient(rid, "PG-1", CLINIC, date=20260316, price=price)


def traffic(gw) -> list[bytes]:
    """Settlements, a stay, reversals (of a performed and of a not yet performed original), a cancellation and a
    problem report; the raw answer bytes of each mutating call, in order."""
    hainan = gw.client(HAINAN)
    answers = [file_person(gw.client(LIAONING), "PG-1", "21010219800101041").SerializeToString(),
               file_person(gw.client(LIAONING), "PG-2", "21010219800101042").SerializeToString()]
    for n in range(1, 6):
        answers.append(hainan.raw(SETTLE, pg_outpatient(f"pg-op-{n}", 1000 + 37 * n)))
    answers.append(hainan.raw("/yidi.v1.SettlementService/Reverse", spb.ReverseRequest(
        request_id="pg-rev-1", original_request_id="pg-op-2", reverse_date=20260317)))
    answers.append(hainan.raw("/yidi.v1.SettlementService/Reverse", spb.ReverseRequest(
        request_id="pg-rev-2", original_request_id="pg-op-late", reverse_date=20260317)))
    admitted = spb.AdmitResponse.FromString(hainan.raw("/yidi.v1.SettlementService/Admit", spb.AdmitRequest(
        request_id="pg-adm", psn_no="PG-2", fixmedins_code=HOSPITAL, adm_date=20260301)))
    answers.append(admitted.SerializeToString())
    answers.append(hainan.raw("/yidi.v1.SettlementService/UploadFees", spb.UploadFeesRequest(
        request_id="pg-fees", mdtrt_id=admitted.mdtrt_id, lines=[builders.line(1, TREATMENT_A, price=500000, qty_milli=1000)])))
    stay = spb.SettlementResponse.FromString(hainan.raw("/yidi.v1.SettlementService/DischargeSettle",
                                                        spb.DischargeSettleRequest(request_id="pg-dis",
                                                                                   mdtrt_id=admitted.mdtrt_id,
                                                                                   dscg_date=20260310)))
    answers.append(stay.SerializeToString())
    answers.append(hainan.raw("/yidi.v1.SettlementService/CancelSettlement", spb.CancelSettlementRequest(
        request_id="pg-cancel", setl_id=answers_setl_id(answers[4]), cancel_date=20260318)))
    answers.append(hainan.raw("/yidi.v1.ProblemService/ReportProblem", ppb.ReportProblemRequest(
        request_id="pg-prob", setl_id=stay.settlement.setl_id, category=ppb.PROBLEM_CATEGORY_OTHER, text="核对住院费用")))
    return answers


def answers_setl_id(raw: bytes) -> str:
    return spb.SettlementResponse.FromString(raw).settlement.setl_id


def reads(gw) -> list[bytes]:
    """What the gateway answers of its state and projections (no clock in any of them)."""
    hainan, liaoning, national = gw.client(HAINAN), gw.client(LIAONING), gw.client(NATIONAL)
    out = [liaoning(liaoning.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no=psn, year=2026))
           for psn in ("PG-1", "PG-2")]
    out.append(national(national.funds.GetPositions, fdpb.GetPositionsRequest()))
    for code in (CLINIC, HOSPITAL):
        out.append(hainan(hainan.funds.ReconcileTotals, fdpb.ReconcileTotalsRequest(
            range=fdpb.ReconcileRange(fixmedins_code=code, date_from=20260301, date_to=20260331))))
    for n in (1, 2, 4):
        setl_id = answers_setl_id(hainan.raw(SETTLE, pg_outpatient(f"pg-op-{n}", 1000 + 37 * n)))
        out.append(hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=setl_id)))
    problems = national(national.problems.ListProblems, ppb.ListProblemsRequest()).problems
    out.append(len(problems).to_bytes(2, "big"))
    return [m if isinstance(m, bytes) else m.SerializeToString(deterministic=True) for m in out]


def wait_for(gw, text: str, timeout_s: float = 30, after: int = 0) -> str:
    """The gateway's first whole log line holding text (waiting for it: a line being written is not read yet), in
    its log after the first ``after`` characters (those of a gateway before it on the same log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in gw.log()[after:].splitlines(keepends=True):
            if text in line and line.endswith("\n"):
                return line.rstrip("\n")
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in the gateway's log:\n{gw.log()[-3000:]}")


def ledger_seq(gw) -> int:
    national = gw.client(NATIONAL)
    return national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest()).ledger_seq


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("pg-data")
    return write_spec_dataset(base / "data")["dir"]


def test_a_gateway_on_postgresql_settles_is_idempotent_reverses_and_survives_kill_9(dataset, pg_url, pg_cluster,
                                                                                   tmp_path, gateways):
    gw = gateways(dataset, str(tmp_path / "node"), "--store", pg_url)
    try:
        answers = traffic(gw)
        hainan = gw.client(HAINAN)
        at = ledger_seq(gw)
        # a repeated request id: the first answer, byte for byte, and nothing written
        assert hainan.raw(SETTLE, pg_outpatient("pg-op-1", 1037)) == answers[2]
        assert ledger_seq(gw) == at
        # the original of a reversal, arriving late: refused, nothing written
        code, reason, _ = hainan.refused(hainan.settlement.OutpatientSettle, pg_outpatient("pg-op-late", 1500))
        assert reason == "REQUEST_REVERSED" and ledger_seq(gw) == at
        national = gw.client(NATIONAL)
        snap = national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
        assert snap.ledger_seq == at
        tail = [hainan.raw(SETTLE, pg_outpatient(f"pg-tail-{n}", 3000 + n)) for n in range(3)]   # after the snapshot
        before = reads(gw)
    finally:
        gw.stop(signal.SIGKILL)
    assert pg_cluster.password not in gw.log()
    with psycopg.connect(pg_url) as conn:   # the snapshot is kept in PostgreSQL, not in a file
        assert conn.execute("SELECT seq FROM snapshots").fetchall() == [(snap.ledger_seq,)]
    earlier = len(gw.log())   # the first gateway's lines (its own background verification among them, if it ended)
    gw = gateways(dataset, str(tmp_path / "node"), "--store", pg_url)
    try:
        assert "snapshot at seq %d, 3 ledger records replayed" % snap.ledger_seq in gw.log()
        verified = wait_for(gw, "ledger verified in", after=earlier)   # the whole ledger, in a process of its own
        assert f"OK {safe_url(pg_url)}: {at + 3} records" in verified
        assert reads(gw) == before
        hainan = gw.client(HAINAN)
        assert [hainan.raw(SETTLE, pg_outpatient(f"pg-tail-{n}", 3000 + n)) for n in range(3)] == tail
        assert hainan.raw("/yidi.v1.SettlementService/Reverse", spb.ReverseRequest(
            request_id="pg-rev-1", original_request_id="pg-op-2", reverse_date=20260317)) == answers[7]
        assert ledger_seq(gw) == at + 3
        # and it goes on: the next settlement is numbered after the replayed ones
        nxt = answers_setl_id(hainan.raw(SETTLE, pg_outpatient("pg-next", 1234)))
        assert int(nxt[1:]) == at + 4
    finally:
        assert gw.stop() == 0
    assert pg_cluster.password not in gw.log()


def test_the_same_traffic_gives_the_same_answers_and_state_on_sqlite_and_postgresql(dataset, pg_url, tmp_path,
                                                                                     gateways):
    seen = {}
    for name, target in (("sqlite", str(tmp_path / "sqlite.sqlite")), ("postgresql", pg_url)):
        gw = gateways(dataset, str(tmp_path / f"{name}.sqlite"), "--store", target)
        try:
            answers = traffic(gw)
        finally:
            assert gw.stop() == 0
        gw = gateways(dataset, str(tmp_path / f"{name}.sqlite"), "--store", target)   # replayed from its store
        try:
            seen[name] = (answers[:-1], reads(gw))   # the problem report's answer carries the time it was made
        finally:
            assert gw.stop() == 0
        seen[name] += (replayed_state(target, dataset),)
    assert b"PG-1" in seen["postgresql"][2] and b"PG-2" in seen["postgresql"][2]   # persons, stays, accumulators
    assert seen["sqlite"] == seen["postgresql"]


def replayed_state(target: str, dataset: str) -> bytes:
    """The engine's state (everything but the reference data) as start-up rebuilds it from the store, encoded."""
    store = open_store(target, seal_key())
    try:
        state, _ = build_state(Config(data_dir=dataset), store, Keys(store, 1000), dataset,
                               open_snapshots(store, target + ".snapshots"))
        return msgspec.msgpack.encode(state.engine.export_state())
    finally:
        store.close()


def test_a_lost_database_server_is_storage_unavailable_and_nothing_is_acknowledged_before_it_is_back(dataset,
                                                                                                  tmp_path, gateways):
    cluster = Cluster().start()   # its own: this test stops it
    try:
        url = cluster.create_database("outage")
        gw = gateways(dataset, str(tmp_path / "node"), "--store", url)
        file_person(gw.client(LIAONING), "PG-1", "21010219800101041")
        hainan = gw.client(HAINAN)
        first = hainan.raw(SETTLE, pg_outpatient("out-1", 1000))
        cluster.halt()
        code, reason, _ = hainan.refused(hainan.settlement.OutpatientSettle, pg_outpatient("out-2", 1100))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
        national = gw.client(NATIONAL)
        code, reason, _ = national.refused(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
        # retry advice, not a bug (once its lease has run out: not the owner any more)
        assert code == grpc.StatusCode.UNAVAILABLE and reason in ("STORAGE_UNAVAILABLE", "NOT_PARTITION_OWNER")
        # its lease cannot be renewed: once it has run out the gateway stops (it may no longer own the ledger)
        assert gw.proc.wait(30) == 70
        assert "was not renewed in time: NOT_SERVING, exiting" in gw.log() or "ran out" in gw.log()
        cluster.resume()
        gw.stop()
        gw = gateways(dataset, str(tmp_path / "node"), "--store", url)
        hainan = gw.client(HAINAN)
        assert hainan.raw(SETTLE, pg_outpatient("out-1", 1000)) == first
        second = hainan.raw(SETTLE, pg_outpatient("out-2", 1100))   # performed now, once
        assert answers_setl_id(second) != answers_setl_id(first)
        assert hainan.raw(SETTLE, pg_outpatient("out-2", 1100)) == second
        assert gw.stop() == 0
    finally:
        cluster.stop()


# ------------------------------------------------------------------ the store itself
def record(n: int, request_id: str = "") -> Record:
    return Record(kind="settle", caller=HAINAN, request_id=request_id or f"r-{n}", digest=bytes(16), key=f"S{n}",
                  body=b"body %d" % n, response=b"answer %d" % n)


def test_the_store_keeps_sqlites_chain_and_refuses_a_second_writer_a_deposed_one_and_a_key_twice(pg_url, tmp_path):
    store = open_store(pg_url, seal_key())
    assert store.append([record(n) for n in range(1, 4)]) == [1, 2, 3]
    assert store.append([record(n) for n in range(4, 60)]) == list(range(4, 60))   # a group big enough for COPY
    lite = SqliteStore(str(tmp_path / "l.sqlite"), seal_key())
    lite.append([record(n) for n in range(1, 60)])
    # the same checksums; the chain is keyed per ledger, and proves itself from its own genesis value
    assert [r.checksum for r in store.scan()] == [r.checksum for r in lite.scan()]
    assert chain.verify(store.path, store.scan(), store.key) == store.head()
    assert store.find_request(HAINAN, "r-7").seq == 7 and store.find_request(HAINAN, "r-none") is None
    assert store.known_request_hashes([]) == set()
    lite.close()

    with pytest.raises(LedgerUnavailable, match="is owned by yidi pid .* refusing a second writer"):
        open_store(pg_url, seal_key())
    # a key already in the ledger: the UNIQUE constraint refuses the whole group
    with pytest.raises(psycopg.errors.UniqueViolation):
        store.append([record(60), record(61, request_id="r-5")])
    assert store.last_seq() == 59 and store.read(60) is None

    # a writer that lost the ledger to a newer one (a new fencing token) cannot append
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE head SET token = token + 1")
    with pytest.raises(Deposed):
        store.append([record(60)])
    assert store.last_seq() == 59
    store.close()

    store = open_store(pg_url, seal_key())   # the first writer gave its lease up on close
    assert isinstance(store, PostgresStore) and store.last_seq() == 59
    hashes = [request_hash(HAINAN, "r-3"), request_hash(HAINAN, "r-none"), request_hash(LIAONING, "r-3")]
    assert store.known_request_hashes(hashes) == {hashes[0]}
    snapshots = open_snapshots(store, "")
    for seq in (10, 20, 30, 40):
        snapshots.write(b"blob %d" % seq, seq)
    assert snapshots.seqs() == [40, 30, 20] and snapshots.read(30) == b"blob 30"
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM snapshots")
    assert verify_ledger(pg_url, seal_key()).startswith(f"OK {safe_url(pg_url)}: 59 records")

    ledger_edit.rewrite(pg_url, 5, response=b"changed")   # a changed record: refused when read, and by verify
    store = open_store(pg_url, seal_key())
    with pytest.raises(LedgerCorrupt, match="checksum"):
        store.read(5)
    store.close()
    with pytest.raises(LedgerCorrupt, match="record 5: its content does not match its checksum"):
        verify_ledger(pg_url, seal_key())
    with psycopg.connect(pg_url, autocommit=True) as conn:   # a deleted row: the sealed head's counts say so
        conn.execute("DELETE FROM requests WHERE request_id = 'r-9'")
    with pytest.raises(LedgerCorrupt, match="table requests has 58 rows"):
        open_store(pg_url, seal_key())


def test_a_lease_hands_the_partition_over_fences_the_old_writer_and_outlives_a_stalled_one(pg_url):
    ttl_s = 0.5
    a, b = (PostgresStore(pg_url, seal_key(), lease_ttl_s=ttl_s) for _ in range(2))   # two nodes, neither writes
    conn_a, conn_b = a.connect_lease(), b.connect_lease()
    try:
        token_a = lease.take(conn_a, 0, "a", "10.0.0.1:50051", ttl_s)
        held = lease.take(conn_b, 0, "b", "10.0.0.2:50051", ttl_s)
        assert isinstance(held, lease.Holder) and (held.owner, held.address, held.token) == ("a", "10.0.0.1:50051",
                                                                                           token_a)
        assert 0 < held.expires_in_s <= ttl_s
        with pytest.raises(Deposed, match="no lease"):
            b.append([record(1)])
        assert a.take_over(token_a).seq == 0 and a.append([record(1), record(2)]) == [1, 2]
        assert lease.renew(conn_a, 0, token_a, ttl_s)
        time.sleep(ttl_s + 0.1)   # not renewed: it has run out by the server's clock
        token_b = lease.take(conn_b, 0, "b", "10.0.0.2:50051", ttl_s)
        assert token_b == token_a + 1 and b.take_over(token_b) == a.head()
        with pytest.raises(Deposed, match="no longer 1"):   # the old owner, alive: fenced by the head row's token
            a.append([record(3)])
        assert not lease.renew(conn_a, 0, token_a, ttl_s) and b.append([record(3)]) == [3]

        # b stalls inside an append (as under SIGSTOP) holding the head row's lock, its last statements sent
        # without their Sync, so its session is not even idle: once b's lease has expired, taking it ends b's
        # session (its transaction rolled back) instead of waiting behind it
        with pytest.raises(psycopg.OperationalError), b._wconn.pipeline():
            b._wconn.execute("UPDATE head SET tag = tag WHERE part = 0")
            b._wconn.pgconn.send_flush_request()   # sent and run, without a Sync
            b._wconn.pgconn.flush()
            time.sleep(ttl_s + 0.1)
            token = _take_or_wait(conn_a, ttl_s)
            assert token == token_b + 1, token
        assert a.take_over(token).seq == 3 and a.append([record(4)]) == [4]
        lease.release(conn_a, 0, token)
        assert isinstance(lease.take(conn_b, 0, "b", "10.0.0.2:50051", ttl_s), int)   # given up: free at once
    finally:
        for closing in (conn_a, conn_b, a, b):
            closing.close()
    assert verify_ledger(pg_url, seal_key()).startswith(f"OK {safe_url(pg_url)}: 4 records")


def _take_or_wait(conn, ttl_s: float):
    try:
        return lease.take(conn, 0, "a", "10.0.0.1:50051", ttl_s)
    except psycopg.errors.LockNotAvailable as err:   # the stalled writer still holds the head row
        time.sleep(0.05)
        return err


@pytest.mark.parametrize("url, shown", [
    ("postgresql://yidi:s3cret@127.0.0.1:5432/yidi", "postgresql://yidi@127.0.0.1:5432/yidi"),
    ("postgresql://yidi:s3cret@pg1:5432,pg2:5432,pg3:5432/yidi?target_session_attrs=read-write",
     "postgresql://yidi@pg1:5432,pg2:5432,pg3:5432/yidi?target_session_attrs=read-write"),
    ("postgresql://yidi@[::1]:5432/yidi?password=s3cret&sslmode=require",
     "postgresql://yidi@[::1]:5432/yidi?sslmode=require"),
    ("postgresql://yidi@pg1,pg2/yidi", "postgresql://yidi@pg1,pg2/yidi"),
])
def test_a_url_is_shown_without_its_password_and_with_every_host(url, shown):
    assert safe_url(url) == shown and "s3cret" not in safe_url(url)


def test_a_read_on_a_connection_lost_since_its_last_use_is_asked_again_on_a_new_one(pg_url):
    """After a failover each thread's idle reading connection is to a server that is gone: the read that finds it so
    is asked again on a new connection (a standby taking a partition over reads the tail this way) instead of
    failing STORAGE_UNAVAILABLE; a server that cannot be reached is still StorageDown (the test above)."""
    store = open_store(pg_url, seal_key())
    try:
        store.append([record(1)])
        assert store.find_request(HAINAN, "r-1").seq == 1
        lost = store._reader().conn.info.backend_pid
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s, 5000)", (lost,)).fetchone() == (True,)
        assert store.find_request(HAINAN, "r-1").seq == 1
        assert store._reader().conn.info.backend_pid != lost
    finally:
        store.close()

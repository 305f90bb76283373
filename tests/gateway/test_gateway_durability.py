"""SPEC §6 durability over real gRPC: a real gateway subprocess, real SIGKILL and SIGTERM.

"A settlement is acknowledged only after it is durable; after any crash, a
retry with the same key either returns the original settlement or performs
it once."  These tests kill the gateway (quietly, and in the middle of load),
restart it on the same ledger file and check, from the outside only, that
every acknowledged answer is still there byte for byte, that retries of
requests whose outcome was unknown are performed exactly once, and that the
accumulators equal the sum of the settlements that exist.
"""
from __future__ import annotations

import signal
import threading
import time
from functools import partial

import grpc
import pytest

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb
import builders
from builders import (DRUG_A, DRUG_B, DRUG_C, HK_L1, HK_L2, HK_L3, TREATMENT_A, accumulators, get_settlement, line,
                      outpatient, reference_status, upload)
from gateway_harness import file_person
from gateway.transport.status import reason_of

HAINAN, LIAONING = "460000", "210000"

SVC = "/yidi.v1.SettlementService/"
ADMIT, UPLOAD, SETTLE, OUTPATIENT = SVC + "Admit", SVC + "UploadFees", SVC + "DischargeSettle", SVC + "OutpatientSettle"
RESPONSE_OF = {ADMIT: spb.AdmitResponse, UPLOAD: spb.VisitResponse,
               SETTLE: spb.SettlementResponse, OUTPATIENT: spb.SettlementResponse}

ACC_FIELDS = ("inpatient_fund_paid_fen", "inpatient_admissions", "crit_base_fen", "crit_paid_fen",
              "assist_paid_fen", "outpatient_fund_paid_fen", "outpatient_deductible_used_fen")


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_spec_dataset(tmp_path_factory.mktemp("durability") / "data")["dir"]


def kill(gw, sig: int = signal.SIGKILL) -> int:
    """Send sig to the gateway process and wait for it, without closing client channels first."""
    gw.proc.send_signal(sig)
    return gw.proc.wait(30)


# ------------------------------------------------------------------- helpers
# The visits here: admitted 20260301, discharged 20260310, cancelled 20260312.
admit = partial(builders.admit, date=20260301)
settle = partial(builders.settle, date=20260310)
cancel = partial(builders.cancel, date=20260312)


def expected_accumulators(settlements) -> dict[str, int]:
    """The accumulators that the given (settled, not cancelled) settlements add up to (SPEC §5.5)."""
    acc = dict.fromkeys(ACC_FIELDS, 0)
    for s in settlements:
        b = s.breakdown
        if s.visit_kind == pb.VISIT_KIND_INPATIENT:
            acc["inpatient_fund_paid_fen"] += b.hifp_pay
            acc["inpatient_admissions"] += 1
            acc["crit_base_fen"] += b.inscp_scp_amt - b.hifp_pay
            acc["crit_paid_fen"] += b.hifmi_pay + b.hifob_pay
        else:
            acc["outpatient_fund_paid_fen"] += b.hifp_pay
            acc["outpatient_deductible_used_fen"] += b.act_pay_dedc
        acc["assist_paid_fen"] += b.maf_pay
    return acc


def as_dict(acc: pb.Accumulators) -> dict[str, int]:
    return {name: getattr(acc, name) for name in ACC_FIELDS}


# ------------------------------------------------------- a quiet SIGKILL
def test_everything_acknowledged_survives_sigkill(data_dir, tmp_path, gateways):
    ledger = str(tmp_path / "ledger.sqlite")
    gw = gateways(data_dir, ledger)
    hainan, liaoning, national = gw.client(HAINAN), gw.client(LIAONING), gw.client("national")
    for n, psn in enumerate(("PK-SETTLED", "PK-OPEN", "PK-RESETTLE", "PK-CANCELLED", "PK-NEW"), 1):
        file_person(liaoning, psn, f"210102198001010{n:02d}", assistance=(n == 1))

    # Settled: an inpatient stay and an outpatient visit; the settle answers kept as raw bytes.
    a = admit(hainan, "PK-SETTLED", HK_L3, "k-admit-1")
    upload(hainan, a.mdtrt_id, [line(1, TREATMENT_A, 600000, 1000), line(2, DRUG_B, 8800, 3500),
                                line(3, DRUG_C, 45000, 1000)], "k-fees-1")
    settle_req = spb.DischargeSettleRequest(request_id="k-settle-1", mdtrt_id=a.mdtrt_id, dscg_date=20260310)
    settle_bytes = hainan.raw(SETTLE, settle_req)
    settled = spb.SettlementResponse.FromString(settle_bytes).settlement
    op_req = outpatient("k-op-1", "PK-SETTLED", HK_L1, date=20260311,
                        lines=[line(1, DRUG_A, 1250, 6000), line(2, TREATMENT_A, 90000, 1000)])
    op_bytes = hainan.raw(OUTPATIENT, op_req)
    op = spb.SettlementResponse.FromString(op_bytes).settlement

    # Open: admitted with fees, not settled.
    admit_open_req = spb.AdmitRequest(request_id="k-admit-2", psn_no="PK-OPEN", fixmedins_code=HK_L2,
                                      adm_date=20260301)
    admit_open_bytes = hainan.raw(ADMIT, admit_open_req)
    open_visit = spb.AdmitResponse.FromString(admit_open_bytes)
    upload(hainan, open_visit.mdtrt_id, [line(1, TREATMENT_A, 300000, 1000)], "k-fees-2")

    # Settled, cancelled and settled again; and settled then cancelled for good.
    r = admit(hainan, "PK-RESETTLE", HK_L2, "k-admit-3")
    upload(hainan, r.mdtrt_id, [line(1, TREATMENT_A, 400000, 1000)], "k-fees-3")
    first = settle(hainan, r.mdtrt_id, "k-settle-3a")
    cancel(hainan, first.setl_id, "k-cancel-3")
    upload(hainan, r.mdtrt_id, [line(2, DRUG_A, 1250, 8000)], "k-fees-3b")
    second = settle(hainan, r.mdtrt_id, "k-settle-3b", date=20260313)
    c = admit(hainan, "PK-CANCELLED", HK_L1, "k-admit-4")
    upload(hainan, c.mdtrt_id, [line(1, TREATMENT_A, 250000, 1000)], "k-fees-4")
    gone = settle(hainan, c.mdtrt_id, "k-settle-4")
    cancel(hainan, gone.setl_id, "k-cancel-4")

    setl_ids = [settled.setl_id, op.setl_id, first.setl_id, second.setl_id, gone.setl_id]
    shown = {s: get_settlement(hainan, s) for s in setl_ids}
    persons = ("PK-SETTLED", "PK-OPEN", "PK-RESETTLE", "PK-CANCELLED")
    acc_before = {psn: accumulators(hainan, psn) for psn in persons}
    seq_before = reference_status(national).ledger_seq
    old_mdtrt = {a.mdtrt_id, op.mdtrt_id, open_visit.mdtrt_id, r.mdtrt_id, c.mdtrt_id}
    # Sanity of the "before" picture itself.
    assert acc_before["PK-CANCELLED"].inpatient_admissions == 0 == acc_before["PK-CANCELLED"].inpatient_fund_paid_fen
    assert as_dict(acc_before["PK-RESETTLE"]) == expected_accumulators([second])
    assert as_dict(acc_before["PK-SETTLED"]) == expected_accumulators([settled, op])

    assert kill(gw) == -signal.SIGKILL
    gw.stop()
    gw = gateways(data_dir, ledger)
    hainan, national = gw.client(HAINAN), gw.client("national")

    # Nothing lost, nothing added.
    assert reference_status(national).ledger_seq == seq_before
    for setl_id, before in shown.items():
        after = get_settlement(hainan, setl_id)
        assert after == before
        assert after.breakdown == before.breakdown and list(after.lines) == list(before.lines)
    assert shown[first.setl_id].status == pb.SETTLEMENT_STATUS_CANCELLED == shown[gone.setl_id].status
    assert shown[first.setl_id].cancel_date == 20260312
    assert shown[second.setl_id].status == pb.SETTLEMENT_STATUS_SETTLED
    for psn in persons:
        assert accumulators(hainan, psn) == acc_before[psn], psn
    # Cancelled deltas stay given back.
    assert as_dict(accumulators(hainan, "PK-RESETTLE")) == expected_accumulators([second])
    assert as_dict(accumulators(hainan, "PK-CANCELLED")) == dict.fromkeys(ACC_FIELDS, 0)

    # Replays are byte-identical; the same key for another request is refused and changes nothing.
    assert hainan.raw(SETTLE, settle_req) == settle_bytes
    assert hainan.raw(OUTPATIENT, op_req) == op_bytes
    assert hainan.raw(ADMIT, admit_open_req) == admit_open_bytes
    other = spb.DischargeSettleRequest(request_id="k-settle-1", mdtrt_id=a.mdtrt_id, dscg_date=20260311)
    code, reason, message = hainan.refused(hainan.settlement.DischargeSettle, other)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED") and "k-settle-1" in message
    other_op = outpatient("k-op-1", "PK-SETTLED", HK_L1, date=20260311, lines=[line(1, DRUG_A, 1250, 7000)])
    assert hainan.refused(hainan.settlement.OutpatientSettle, other_op)[1] == "IDEMPOTENCY_KEY_REUSED"
    assert reference_status(national).ledger_seq == seq_before
    assert accumulators(hainan, "PK-SETTLED") == acc_before["PK-SETTLED"]

    # The stay that was open is still open: a second admission is a duplicate, it takes fees and settles.
    code, reason, _ = hainan.refused(hainan.settlement.Admit, spb.AdmitRequest(
        request_id="k-admit-2b", psn_no="PK-OPEN", fixmedins_code=HK_L3, adm_date=20260305))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_ADMISSION")
    visit = upload(hainan, open_visit.mdtrt_id, [line(2, DRUG_A, 1250, 4000)], "k-fees-2b")
    assert (visit.line_count, visit.medfee_sumamt) == (2, 300000 + 5000)
    late = settle(hainan, open_visit.mdtrt_id, "k-settle-2")
    assert late.breakdown.medfee_sumamt == 305000 and late.status == pb.SETTLEMENT_STATUS_SETTLED
    assert as_dict(accumulators(hainan, "PK-OPEN")) == expected_accumulators([late])

    # New ids after the restart never collide with ids issued before it.
    fresh = admit(hainan, "PK-NEW", HK_L2, "k-admit-5")
    upload(hainan, fresh.mdtrt_id, [line(1, TREATMENT_A, 100000, 1000)], "k-fees-5")
    fresh_settled = settle(hainan, fresh.mdtrt_id, "k-settle-5")
    new_mdtrt = {open_visit.mdtrt_id, fresh.mdtrt_id}
    assert fresh.mdtrt_id not in old_mdtrt and fresh.mdtrt_id > max(old_mdtrt)
    new_setl = {late.setl_id, fresh_settled.setl_id}
    assert not new_setl & set(setl_ids) and min(new_setl) > max(setl_ids)
    assert len(new_mdtrt | old_mdtrt) == 6

    # And the state built after the restart survives the next one.
    acc_open = accumulators(hainan, "PK-OPEN")
    assert kill(gw) == -signal.SIGKILL
    gw.stop()
    gw = gateways(data_dir, ledger)
    hainan = gw.client(HAINAN)
    assert accumulators(hainan, "PK-OPEN") == acc_open
    assert get_settlement(hainan, late.setl_id) == late
    assert gw.stop() == 0, gw.log()[-3000:]


# ------------------------------------------------------- kill under load
class Stopped(Exception):
    """The worker was told to stop before its next call."""


class Worker:
    """One platform thread: admit → upload → discharge settle (and every 2nd cycle an outpatient
    settlement) for its own person, with deterministic request ids, so any cycle can be retried."""

    def __init__(self, t: int) -> None:
        self.t = t
        self.psn_no = f"PW-{t:02d}"
        self.acked: dict[str, tuple[str, object, bytes]] = {}  # request_id -> (method, request, bytes)
        self.setl_ids: list[str] = []
        self.cycle_at: int | None = None  # the cycle in progress when the worker stopped
        self.error: grpc.RpcError | None = None
        self.replays = 0
        self.stop: threading.Event | None = None

    def call(self, client, method: str, request):
        if self.stop is not None and self.stop.is_set():
            raise Stopped
        reply = client.raw(method, request)
        first = self.acked.get(request.request_id)
        if first is not None:  # a retry of something acknowledged: the very same bytes
            assert first[2] == reply, (method, request.request_id)
            self.replays += 1
        else:
            self.acked[request.request_id] = (method, request, reply)
        message = RESPONSE_OF[method].FromString(reply)
        if method in (SETTLE, OUTPATIENT) and message.settlement.setl_id not in self.setl_ids:
            self.setl_ids.append(message.settlement.setl_id)
        return message

    def cycle(self, client, i: int) -> None:
        rid = f"w{self.t}-{i}"
        a = self.call(client, ADMIT, spb.AdmitRequest(
            request_id=rid + "-admit", psn_no=self.psn_no, fixmedins_code=(HK_L1, HK_L2, HK_L3)[i % 3],
            adm_date=20260301))
        self.call(client, UPLOAD, spb.UploadFeesRequest(request_id=rid + "-fees", mdtrt_id=a.mdtrt_id, lines=[
            line(1, TREATMENT_A, 20000 + 100 * self.t + i, 1000), line(2, DRUG_B, 8800, 1500 + i),
            line(3, DRUG_C, 3000, 1000)]))
        self.call(client, SETTLE, spb.DischargeSettleRequest(
            request_id=rid + "-settle", mdtrt_id=a.mdtrt_id, dscg_date=20260310))
        if i % 2:
            self.call(client, OUTPATIENT, outpatient(
                rid + "-op", self.psn_no, HK_L2, date=20260311,
                lines=[line(1, DRUG_A, 1250 + i, 3000), line(2, DRUG_B, 8800, 1000)]))

    def run(self, client, stop: threading.Event) -> None:
        self.stop = stop
        i = 0
        while not stop.is_set():
            self.cycle_at = i
            try:
                self.cycle(client, i)
            except grpc.RpcError as err:
                self.error = err
                return
            except Stopped:
                return
            i += 1
        self.cycle_at = None


def run_load_and_stop(data_dir, ledger, gateways, sig: int, threads: int = 8, seconds: float = 1.2):
    """File one person per worker, run the workers, send sig mid-load; return (workers, exit code)."""
    gw = gateways(data_dir, ledger)
    liaoning = gw.client(LIAONING)
    workers = [Worker(t) for t in range(threads)]
    for w in workers:
        file_person(liaoning, w.psn_no, f"210102199002{w.t + 1:02d}001",
                    person_type=pb.PERSON_TYPE_RETIRED if w.t % 2 else pb.PERSON_TYPE_IN_SERVICE,
                    assistance=(w.t % 4 == 0))
    stop = threading.Event()
    clients = [gw.client(HAINAN) for _ in workers]
    pool = [threading.Thread(target=w.run, args=(c, stop), daemon=True) for w, c in zip(workers, clients, strict=True)]
    for th in pool:
        th.start()
    time.sleep(seconds)
    if sig == signal.SIGTERM:
        # Stop issuing new calls as the signal goes out: the calls in flight must finish (grace).
        # (Calls that reach grpc.aio just as it shuts down can, rarely, sit unhandled until the
        # grace period ends, a race inside grpc.aio's serving loop; they are then refused and
        # retried like any other call of unknown outcome. Not issuing them keeps this test fast.)
        stop.set()
    code = kill(gw, sig)
    stop.set()
    for th in pool:
        th.join(30)
        assert not th.is_alive()
    gw.stop()
    return workers, code


def check_after_restart(data_dir, ledger, gateways, workers, graceful=False) -> None:
    gw = gateways(data_dir, ledger)
    hainan = gw.client(HAINAN)
    if graceful:
        # A graceful stop finishes what it started: every record in the ledger (one filing per
        # worker, then the workers' requests) was answered to its caller.
        national = gw.client("national")
        assert reference_status(national).ledger_seq == len(workers) + sum(len(w.acked) for w in workers)
    for w in workers:
        if w.error is not None:  # cut off by the stop, never a refusal of ours
            assert reason_of(w.error) is None, (w.error.code(), w.error.details())
    # Every acknowledged answer is there, byte for byte.
    for w in workers:
        for request_id, (method, request, reply) in list(w.acked.items()):
            assert hainan.raw(method, request) == reply, request_id
    # The cycle each worker was in is retried with the same request ids: each acknowledged
    # step answers the original bytes (checked in Worker.call), each unknown one is done once.
    for w in workers:
        w.stop = None
        if w.cycle_at is not None:
            w.cycle(hainan, w.cycle_at)
    # Each person's accumulators are exactly the sum of their settlements.
    all_ids = [s for w in workers for s in w.setl_ids]
    assert len(all_ids) == len(set(all_ids))
    for w in workers:
        shown = [get_settlement(hainan, s) for s in w.setl_ids]
        assert all(s.status == pb.SETTLEMENT_STATUS_SETTLED and s.psn_no == w.psn_no for s in shown)
        assert as_dict(accumulators(hainan, w.psn_no)) == expected_accumulators(shown), w.psn_no
        # No stay is left open: a new admission is accepted.
        admit(hainan, w.psn_no, HK_L2, f"w{w.t}-after")
    assert gw.stop() == 0, gw.log()[-3000:]


def test_sigkill_under_load_loses_no_acknowledged_settlement(data_dir, tmp_path, gateways):
    ledger = str(tmp_path / "ledger.sqlite")
    workers, code = run_load_and_stop(data_dir, ledger, gateways, signal.SIGKILL)
    assert code == -signal.SIGKILL
    settled = sum(len(w.setl_ids) for w in workers)
    assert settled >= 16, "the load did not get going before the kill"
    assert sum(w.error is not None for w in workers) >= 1, "the kill hit no request in flight"
    check_after_restart(data_dir, ledger, gateways, workers)


def test_sigterm_is_graceful_and_keeps_state(data_dir, tmp_path, gateways):
    ledger = str(tmp_path / "ledger.sqlite")
    workers, code = run_load_and_stop(data_dir, ledger, gateways, signal.SIGTERM, threads=4, seconds=0.6)
    assert code == 0
    assert sum(len(w.setl_ids) for w in workers) >= 4
    check_after_restart(data_dir, ledger, gateways, workers, graceful=True)

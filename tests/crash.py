"""Crash safety, proven: clients settle over mTLS while the gateway is SIGKILLed at random moments.

    python tests/crash.py --crashes 100          (make crash CRASHES=100)
    python tests/crash.py --crashes 3            (the short form tests/e2e/test_crash.py runs in CI)

A small generated data set; a gateway on a fixed loopback port (so clients
find it again after each restart) and one ledger for the whole run. Client
threads send outpatient settlements, each under its own request_id, and
retry the *same* request_id until it is answered (any answer: a settlement
or a refusal with its reason), as a hospital system retrying after a
timeout must; one request in four is raced by its own reversal (冲正), sent
while the original is still in flight and retried the same way.  A national
thread asks for snapshots all the while (and the gateway writes one every
300 records), so kills land while snapshots are written.  The gateway is
killed with SIGKILL after a random 0.2–1.2 s and restarted on the same
ledger, ``--crashes`` times; every third restart is killed again while it
rebuilds its state (replaying the ledger), before it serves.

At the end, with the gateway running cleanly:

* every acknowledged settlement is in the ledger exactly once, and no
  request_id was recorded twice (``lost``, ``duplicated``);
* every reversal agrees with its original: cancelled if the original was
  performed, else the original refused ``REQUEST_REVERSED``
  (``reversal_violations``);
* the accumulators of a full replay equal the gateway's (its final snapshot;
  ``accumulator_mismatches`` is 0 or 1: they are compared whole);
* each insured province's prepaid position (drawn − given back) equals the
  fund paid of the settlements acknowledged for its persons and not
  reversed (``positions_ok``);
* the month is closed and its clearing report agrees with the acknowledged
  settlements: per (insured province, treatment province) the count,
  ``medfee_sumamt``, fund paid and cash paid, and every province's net
  position, which sum to 0 (``clearing_ok``);
* ``yidi verify-ledger``'s check passes: every checksum, the keyed chain,
  every derived row and every snapshot (``integrity_ok``).

Prints one JSON line and exits 0 only if everything holds.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import grpc  # noqa: E402

from bench.peak_day import check_ledger  # noqa: E402
from datagen import generate  # noqa: E402
from datagen.workload import Workload  # noqa: E402
from gateway._pb.yidi.v1 import admin_pb2, common_pb2 as pb, funds_pb2 as fdpb, settlement_pb2 as spb  # noqa: E402
from gateway._pb.yidi.v1 import admin_pb2_grpc, settlement_pb2_grpc  # noqa: E402
from gateway.transport.status import reason_of  # noqa: E402
from gateway.testing import credentials, dev_certs, seal_key, start_gateway  # noqa: E402
from gateway.store.sqlite.verify import verify_ledger  # noqa: E402

RETRY = {"STORAGE_UNAVAILABLE", "NOT_READY", "OVERLOADED", "DEADLINE_EXCEEDED", "INTERNAL"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clients:
    """Threads settling realistic outpatient visits, each request retried under its own key until answered."""

    def __init__(self, target: str, data_dir: str, threads: int) -> None:
        self.target = target
        self.workload = Workload(data_dir, seed=3, persons=20_000)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acknowledged: dict[str, spb.SettlementResponse] = {}   # request_id -> the answer
        self.reversed: set[str] = set()       # acknowledged, then cancelled by their reversal
        self.reversals = 0
        self.reversal_violations: list[str] = []
        self.refused: dict[str, int] = {}
        self.retries = 0
        self.cases = [self.workload.outpatient() for _ in range(5000)]
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(threads)]
        self._stubs = threading.local()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def stub(self, caller: str) -> settlement_pb2_grpc.SettlementServiceStub:
        stubs = self._stubs.__dict__.setdefault("by_caller", {})
        if caller not in stubs:
            # reconnect quickly after a restart (gRPC's default backoff grows to minutes)
            channel = grpc.secure_channel(self.target, credentials(caller, dev_certs()), options=[
                ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500)])
            stubs[caller] = settlement_pb2_grpc.SettlementServiceStub(channel)
        return stubs[caller]

    def answered(self, call, request, first=None):
        """The answer to a request (or the reason it was refused), retrying the same request until it comes."""
        while True:   # even after stop: the gateway is up then, and every request gets its answer
            try:
                if first is not None:
                    answer, first = first.result(), None
                else:
                    answer = call(request, timeout=10)
                return answer, None
            except grpc.RpcError as err:
                first = None
                reason = reason_of(err)
                if reason is not None and reason not in RETRY:
                    return None, reason
                with self.lock:
                    self.retries += 1
                time.sleep(0.05)

    def run(self, n: int) -> None:
        k = 0
        while not self.stop.is_set():
            case = self.cases[(n * 7919 + k) % len(self.cases)]
            request = spb.OutpatientSettleRequest(
                request_id=f"crash-{n}-{k}", psn_no=case.psn_no, fixmedins_code=case.fixmedins_code,
                setl_date=self.workload.date,
                lines=[pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen,
                                  qty_milli=x.qty_milli) for x in case.lines])
            k += 1
            stub = self.stub(case.treatment_province)
            if k % 4 == 0:
                self.race(stub, request)
                continue
            answer, reason = self.answered(stub.OutpatientSettle, request)
            self.note(request.request_id, answer, reason)

    def race(self, stub, request: spb.OutpatientSettleRequest) -> None:
        """The original, and while it is in flight its reversal; both retried until answered, then compared."""
        original = stub.OutpatientSettle.future(request, timeout=10)
        reverse = spb.ReverseRequest(request_id=request.request_id + "-r", original_request_id=request.request_id,
                                     reverse_date=self.workload.date)
        reversal, reversal_refused = self.answered(stub.Reverse, reverse)
        answer, reason = self.answered(stub.OutpatientSettle, request, first=original)
        self.note(request.request_id, answer, reason)
        with self.lock:
            self.reversals += 1
            if reversal is None:
                self.reversal_violations.append(f"{reverse.request_id}: refused {reversal_refused}")
            elif reversal.outcome == spb.REVERSE_OUTCOME_SETTLEMENT_CANCELLED:
                if answer is None or reversal.settlement.setl_id != answer.settlement.setl_id:
                    self.reversal_violations.append(f"{reverse.request_id}: cancelled a settlement not its original's")
                else:
                    self.reversed.add(request.request_id)
            elif reason != "REQUEST_REVERSED":
                self.reversal_violations.append(f"{reverse.request_id}: not performed, yet the original was "
                                                f"{'performed' if answer is not None else reason}")

    def note(self, request_id: str, answer, reason) -> None:
        with self.lock:
            if answer is not None:
                self.acknowledged[request_id] = answer
            else:
                self.refused[reason] = self.refused.get(reason, 0) + 1


class Snapshotter(threading.Thread):
    """The national operator asking for snapshots all the while, so that kills land while one is written."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.stop = threading.Event()
        self.taken = self.failed = 0

    def run(self) -> None:
        channel = grpc.secure_channel(self.target, credentials("national", dev_certs()), options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)])
        take = admin_pb2_grpc.AdminServiceStub(channel).TakeSnapshot
        while not self.stop.wait(0.15):
            try:
                take(admin_pb2.TakeSnapshotRequest(), timeout=10)
                self.taken += 1
            except grpc.RpcError:
                self.failed += 1
        channel.close()


def positions_agree(gw, acknowledged, reversed_: set[str]) -> bool:
    """Per insured province: drawn − given back on the prepaid position = fund paid of its acknowledged settlements
    that were not reversed."""
    national = gw.client("national")
    positions = national(national.funds.GetPositions, fdpb.GetPositionsRequest()).positions
    held = {p.province: p.drawn_fen - p.given_back_fen for p in positions}
    expected: dict[str, int] = {}
    for request_id, answer in acknowledged.items():
        s = answer.settlement
        province = s.insuplc_admdvs[:2] + "0000"
        live = request_id not in reversed_
        expected[province] = expected.get(province, 0) + s.breakdown.fund_pay_sumamt * live
    return all(held.get(p, 0) == v for p, v in expected.items()) and sum(held.values()) == sum(expected.values())


def clearing_agrees(gw, acknowledged, reversed_: set[str], month: int) -> bool:
    """Close the month; its report per province pair and its net positions equal the acknowledged settlements'
    (a reversed one counts as a settlement and a cancellation, its money netted out)."""
    national = gw.client("national")
    national(national.funds.CloseMonth, fdpb.ClearingMonthRequest(request_id=f"crash-close-{month}", month=month))
    report = national(national.funds.GetClearingReport, fdpb.GetClearingReportRequest(month=month))
    expected: dict[tuple[str, str], list[int]] = {}
    net: dict[str, int] = {}
    for request_id, answer in acknowledged.items():
        s = answer.settlement
        live = request_id not in reversed_
        insured, treatment = s.insuplc_admdvs[:2] + "0000", s.mdtrtarea_admdvs[:2] + "0000"
        row = expected.setdefault((insured, treatment), [0, 0, 0, 0, 0])
        for n, amount in enumerate((1, 1 - live, s.breakdown.medfee_sumamt * live,
                                    s.breakdown.fund_pay_sumamt * live, s.breakdown.psn_cash_pay * live)):
            row[n] += amount
        net[treatment] = net.get(treatment, 0) + s.breakdown.fund_pay_sumamt * live
        net[insured] = net.get(insured, 0) - s.breakdown.fund_pay_sumamt * live
    reported = {(p.insured_province, p.treatment_province): [p.totals.settlements, p.totals.cancellations,
                                                             p.totals.medfee_sumamt, p.totals.fund_pay_sumamt,
                                                             p.totals.psn_cash_pay]
                for p in report.pairs}
    nets = {n.province: n.net_fen for n in report.net_positions if n.net_fen}
    return (reported == expected and sum(n.net_fen for n in report.net_positions) == 0
            and nets == {p: v for p, v in net.items() if v})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crashes", type=int, default=100)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    kills_during_startup = 0
    with tempfile.TemporaryDirectory(prefix="yidi-crash-") as work:
        data_dir = os.path.join(work, "data")
        generate(data_dir, persons=2000, seed=2026)
        ledger = os.path.join(work, "ledger.sqlite")
        listen = f"127.0.0.1:{free_port()}"
        extra = ("--snapshot-every-records", "300")
        gw = start_gateway(data_dir, ledger, *extra, listen=listen)
        clients = Clients(gw.target, data_dir, args.threads)
        snapshots = Snapshotter(gw.target)
        clients.start()
        snapshots.start()
        for n in range(args.crashes):
            time.sleep(rng.uniform(0.2, 1.2))
            gw.stop(signal.SIGKILL)
            if n % 3 == 2:   # killed again while it rebuilds its state, before it serves
                gw = start_gateway(data_dir, ledger, *extra, listen=listen, wait_for="LISTENING")
                time.sleep(rng.uniform(0.0, 0.3))
                kills_during_startup += gw.proc.poll() is None
                gw.stop(signal.SIGKILL)
            gw = start_gateway(data_dir, ledger, *extra, listen=listen)
        time.sleep(1.0)
        snapshots.stop.set()
        clients.join()   # every thread ends on an answer, so every settlement made was acknowledged
        snapshots.join(30)
        if any(t.is_alive() for t in clients.threads):
            raise SystemExit("a client never got its answer from the running gateway")
        national = gw.client("national")
        national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
        positions_ok = positions_agree(gw, clients.acknowledged, clients.reversed)
        clearing_ok = clearing_agrees(gw, clients.acknowledged, clients.reversed, clients.workload.date // 100)
        stopped = gw.stop()
        setl_ids = [a.settlement.setl_id for a in clients.acknowledged.values()]
        checks = check_ledger(ledger, data_dir, ledger + ".snapshots", setl_ids, seal_key())
        try:
            verify_ledger(ledger, ledger + ".snapshots", seal_key())
            integrity_ok = True
        except Exception as err:  # noqa: BLE001 - any failure of the check is the finding
            print(f"verify-ledger: {err}", file=sys.stderr)
            integrity_ok = False
    result = {
        "crashes": args.crashes, "kills_during_startup": kills_during_startup, "snapshots_taken": snapshots.taken,
        "snapshot_calls_failed": snapshots.failed, "acknowledged": len(setl_ids), "reversals": clients.reversals,
        "reversed": len(clients.reversed), "reversal_violations": len(clients.reversal_violations),
        "refused": sum(clients.refused.values()), "refusals": clients.refused, "retries": clients.retries,
        "lost": checks["lost"], "duplicated": checks["duplicated"],
        "settlements_in_ledger": checks["settlements_in_ledger"],
        "accumulator_mismatches": 0 if checks["accumulators_equal_replay"] else 1,
        "positions_ok": positions_ok, "clearing_ok": clearing_ok, "integrity_ok": integrity_ok,
        "clean_stop": stopped == 0,
    }
    print(json.dumps(result, ensure_ascii=False))
    for violation in clients.reversal_violations[:10]:
        print(f"reversal violation: {violation}", file=sys.stderr)
    ok = (result["lost"] == 0 and result["duplicated"] == 0 and result["accumulator_mismatches"] == 0
          and not clients.reversal_violations and positions_ok and clearing_ok and integrity_ok and stopped == 0
          and result["acknowledged"] > 0 and checks["settlements_in_ledger"] == len(setl_ids))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

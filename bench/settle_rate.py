"""Settlements per second through the real gateway, against an empty RPC.

Generates a small national data set (datagen), starts the gateway in
a subprocess (gateway.testing.start_gateway: real gRPC on loopback, a
real SQLite ledger with synchronous=FULL), and with synchronous clients
measures for --seconds each:

  (a) empty:      the gRPC health Check (and GetReferenceDataStatus as national)
  (b) outpatient: OutpatientSettle of a 5-line bill (门诊一站式: one durable commit)
  (c) inpatient:  Admit + UploadFees (20 lines) + DischargeSettle (three durable commits)

and prints ops/s, µs/op (mean latency per call as one client sees it) and the
ratio settle/empty.  Client 0 is the demo person 2100000000000001 王建国
(retired_relocation to 460000) at the demo pharmacy P46010000001 and at
H46010000001; further clients (--clients K) use other filed persons and open
institutions of their filing destination, taken from the generated files.

    .venv/bin/python bench/settle_rate.py [--persons 20000] [--seconds 5] [--clients 1]

The data set and ledger go into a temporary directory under --dir (default:
the current directory, so the ledger's fsyncs hit a real disk, not a tmpfs);
it is removed at the end.  Not collected by pytest (no test_ prefix).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import tempfile
import threading
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from core import LONG_TERM_KINDS, pooling_code, province_code
from datagen import generate
from gateway._pb.yidi.v1 import admin_pb2, common_pb2 as pb, settlement_pb2 as spb
from gateway.testing import start_gateway

TREATMENT = "460000"  # 海南: every client settles there, as the Hainan platform
DEMO_PERSON, DEMO_PHARMACY, DEMO_HOSPITAL = "2100000000000001", "P46010000001", "H46010000001"
DATE = 20260315


def read_jsonl(path: str):
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw)


class Pairs:
    """Filed persons with outpatient and inpatient institutions of their filing destination in 海南."""

    def __init__(self, data_dir: str, want: int) -> None:
        insts = [r for r in read_jsonl(os.path.join(data_dir, "institutions.jsonl")) if province_code(r["admdvs"]) == TREATMENT]
        persons = {r["psn_no"]: r for r in read_jsonl(os.path.join(data_dir, "persons.jsonl"))}
        self.outpatient: list[tuple[str, str]] = [(DEMO_PERSON, DEMO_PHARMACY)]
        self.inpatient: list[tuple[str, str]] = [(DEMO_PERSON, DEMO_HOSPITAL)]
        for f in read_jsonl(os.path.join(data_dir, "filings.jsonl")):
            if len(self.outpatient) >= want and len(self.inpatient) >= want:
                break
            p = persons.get(f["psn_no"])
            if (f["psn_no"] == DEMO_PERSON or p is None or p["status"] != "active" or f["status"] != "active"
                    or f["kind"] not in LONG_TERM_KINDS or province_code(f["dest_admdvs"]) != TREATMENT
                    or f["valid_from"] > DATE or f["valid_to"] not in (0,) and f["valid_to"] < DATE
                    or province_code(p["insuplc_admdvs"]) == TREATMENT):
                continue
            dest = f["dest_admdvs"]  # a province or a city code; institutions sit in cities
            here = [i for i in insts if dest in (pooling_code(i["admdvs"]), province_code(i["admdvs"]))
                    and (not f["fixmedins_codes"] or i["fixmedins_code"] in f["fixmedins_codes"])]
            op = next((i for i in here if i["outpatient"]), None)
            ip = next((i for i in here if i["inpatient"]), None)
            if op is not None and len(self.outpatient) < want:
                self.outpatient.append((f["psn_no"], op["fixmedins_code"]))
            if ip is not None and len(self.inpatient) < want:
                self.inpatient.append((f["psn_no"], ip["fixmedins_code"]))


def catalogue_items(data_dir: str, n: int, seed: int = 1) -> list[tuple[str, int]]:
    """n (code, unit price) of 海南's class A/B items."""
    items = [r for r in read_jsonl(os.path.join(data_dir, "catalog.jsonl"))
             if r["province"] == TREATMENT and r["class"] in ("A", "B")]
    rng = random.Random(seed)
    picked = rng.sample(items, n)
    return [(r["code"], r["price_cap_fen"] or rng.randrange(500, 50000)) for r in picked]


def fee_lines(items, qty_milli=2000) -> list[pb.FeeLine]:
    return [pb.FeeLine(feedetl_sn=str(n), code=code, unit_price_fen=price, qty_milli=qty_milli)
            for n, (code, price) in enumerate(items, 1)]


def run_clients(name: str, make_op, clients: int, seconds: float, warmup: float = 0.3) -> dict:
    """Each of `clients` threads runs make_op(k)() back to back for `seconds` (after a warm-up)."""
    ops = [0] * clients
    busy = [0.0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        op = make_op(k)
        try:
            end = time.monotonic() + warmup
            while time.monotonic() < end:
                op()
            start.wait()
            end = time.monotonic() + seconds
            n, spent = 0, 0.0
            while True:
                t0 = time.perf_counter()
                op()
                spent += time.perf_counter() - t0
                n += 1
                if time.monotonic() >= end:
                    break
            ops[k], busy[k] = n, spent
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.monotonic()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    if errors:
        raise errors[0]
    total = sum(ops)
    return {"name": name, "ops": total, "ops_s": total / wall, "us_op": 1e6 * sum(busy) / max(1, total)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=1, help="synchronous client threads, one channel each")
    ap.add_argument("--dir", default=".", help="where the temporary data set and ledger go")
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="settle_rate-", dir=args.dir)
    gw = None
    try:
        t0 = time.monotonic()
        data_dir = os.path.join(work, "data")
        manifest = generate(data_dir, persons=args.persons)
        print(f"data set: {manifest['counts']} in {time.monotonic() - t0:.1f} s")
        pairs = Pairs(data_dir, args.clients)
        if len(pairs.outpatient) < args.clients or len(pairs.inpatient) < args.clients:
            raise SystemExit(f"only {len(pairs.outpatient)}/{len(pairs.inpatient)} person-institution pairs "
                             f"for {args.clients} clients: use more --persons")
        op_items = catalogue_items(data_dir, 5, seed=5)
        ip_items = catalogue_items(data_dir, 20, seed=20)

        t0 = time.monotonic()
        gw = start_gateway(data_dir, os.path.join(work, "ledger.sqlite"))
        print(f"gateway serving {gw.target} after {time.monotonic() - t0:.1f} s; "
              f"{args.clients} synchronous client(s), {args.seconds:g} s per measurement")
        ids = itertools.count(1)

        def health_op(k):
            stub = health_pb2_grpc.HealthStub(gw.client(None).channel)
            req = health_pb2.HealthCheckRequest(service="")
            return lambda: stub.Check(req, timeout=30)

        def status_op(k):
            c = gw.client("national")
            req = admin_pb2.GetReferenceDataStatusRequest()
            return lambda: c(c.admin.GetReferenceDataStatus, req)

        def outpatient_op(k):
            c = gw.client(TREATMENT)
            psn_no, inst = pairs.outpatient[k]
            lines = fee_lines(op_items)

            def op():
                s = c(c.settlement.OutpatientSettle, spb.OutpatientSettleRequest(
                    request_id=f"op-{k}-{next(ids)}", psn_no=psn_no, fixmedins_code=inst, setl_date=DATE,
                    lines=lines)).settlement
                assert s.setl_id and s.breakdown.medfee_sumamt > 0

            return op

        def inpatient_op(k):
            c = gw.client(TREATMENT)
            psn_no, inst = pairs.inpatient[k]
            lines = fee_lines(ip_items)

            def op():
                n = next(ids)
                a = c(c.settlement.Admit, spb.AdmitRequest(
                    request_id=f"ad-{k}-{n}", psn_no=psn_no, fixmedins_code=inst, adm_date=DATE - 5))
                c(c.settlement.UploadFees, spb.UploadFeesRequest(
                    request_id=f"fe-{k}-{n}", mdtrt_id=a.mdtrt_id, lines=lines))
                s = c(c.settlement.DischargeSettle, spb.DischargeSettleRequest(
                    request_id=f"st-{k}-{n}", mdtrt_id=a.mdtrt_id, dscg_date=DATE)).settlement
                assert s.setl_id and len(s.lines) == 20

            return op

        results = [
            run_clients("(a) empty: health Check", health_op, args.clients, args.seconds),
            run_clients("(a') GetReferenceDataStatus", status_op, args.clients, args.seconds),
            run_clients("(b) OutpatientSettle, 5 lines", outpatient_op, args.clients, args.seconds),
            run_clients("(c) Admit + 20 lines + DischargeSettle", inpatient_op, args.clients, args.seconds),
        ]
        print()
        print(f"{'measurement':<42} {'ops':>8} {'ops/s':>10} {'µs/op':>10}")
        for r in results:
            print(f"{r['name']:<42} {r['ops']:>8} {r['ops_s']:>10.0f} {r['us_op']:>10.0f}")
        empty, outpatient, inpatient = results[0], results[2], results[3]
        print()
        print(f"settle/empty latency ratio: outpatient {outpatient['us_op'] / empty['us_op']:.1f}x, "
              f"inpatient sequence {inpatient['us_op'] / empty['us_op']:.1f}x "
              f"(throughput: empty/outpatient {empty['ops_s'] / outpatient['ops_s']:.1f}x)")
        code = gw.stop()
        gw = None
        if code != 0:
            raise SystemExit(f"gateway exited with {code}")
    finally:
        if gw is not None:
            gw.stop(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

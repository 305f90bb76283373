"""A national peak day replayed through the gateway: 2,000,000 settlements in the published mix.

    make peak-day                                   (SETTLEMENTS=2000000 by default)
    python bench/peak_day.py --data-dir data/national --settlements 2000000 [--processes 2]

The mix (2023–2025 published volumes): about 91% outpatient and pharmacy visits (门诊一站式),
9% inpatient stays (入院登记, 费用明细上传 of 20 lines, 出院结算).  Cases are drawn from the data set
(datagen.workload) and prepared before the clock starts; then client processes replay them as fast
as the gateway goes, as a provincial platform would: SettleBatch calls of up to 1,000 items, one
treatment province per call, several in flight; an inpatient chunk is three batches in turn (its
admissions, then their fees, then their discharges).

At the end the gateway writes a snapshot of its memory, stops, and the ledger is checked offline:
every acknowledged settlement is in it exactly once, no request id twice, and the accumulators a
full replay of the ledger builds equal the ones the gateway held (its snapshot).  Prints a Markdown
summary and one JSON line (wall time, settlements/s, records per ledger transaction, fsyncs/s).

The rate counts settlements acknowledged only; every refused item is counted by reason beside it.  The
cases are drawn from the data set without checking every rule first, so some meet the business rules in
EXPECTED_REFUSALS; any other refusal (or a whole batch refused) ends the run with exit status 1 and no rate.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import bisect
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.outcomes import UnexpectedRefusals  # noqa: E402

SETTLE_BATCH = "/yidi.v1.SettlementService/SettleBatch"
INPATIENT_SHARE = 0.09
# Business rules the drawn cases meet, each answered with its reason and changing nothing: cases are drawn with
# replacement, so a person may be drawn for a second stay while the first is open (measured: 2 in 20,000).
EXPECTED_REFUSALS = ("DUPLICATE_ADMISSION",)


# ----------------------------------------------------------------- clients
def _prepare(data_dir: str, seed: int, n_settlements: int, batch: int):
    """Work units: ("op", caller, batch bytes, n) or ("ip", caller, [(case, request ids)...])."""
    from datagen.workload import DATE, Workload
    from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

    workload = Workload(data_dir, seed=seed, persons=300_000)
    n_in = int(n_settlements * INPATIENT_SHARE)
    pools: dict[str, list] = {}
    for k in range(n_settlements - n_in):
        case = workload.outpatient()
        item = spb.SettleItem(outpatient=spb.OutpatientSettleRequest(
            request_id=f"pd{seed}-op-{k}", psn_no=case.psn_no, fixmedins_code=case.fixmedins_code, setl_date=DATE,
            lines=[pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen,
                              qty_milli=x.qty_milli) for x in case.lines]))
        pools.setdefault(case.treatment_province, []).append(item)
    units = []
    for caller, items in pools.items():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            units.append(("op", caller, spb.SettleBatchRequest(items=chunk).SerializeToString(), len(chunk)))
    stays: dict[str, list] = {}
    for k in range(n_in):
        case = workload.inpatient()
        stays.setdefault(case.treatment_province, []).append((case, f"pd{seed}-ip-{k}"))
    for caller, cases in stays.items():
        for i in range(0, len(cases), batch):
            units.append(("ip", caller, cases[i:i + batch], 0))
    # Interleave the kinds, as a day's traffic would be.
    units.sort(key=lambda u: hash((seed, u[1], id(u))) % 1000)
    return units


async def _replay(target: str, units: list, lanes: int) -> dict:
    import grpc

    from datagen.workload import DATE
    from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

    from bench.loadgen import aio_channel
    from bench.outcomes import call_refusal, status_reason

    size = 64 << 20
    channels: dict[str, object] = {}
    calls: dict[str, object] = {}

    def call(caller: str):
        """SettleBatch on the caller's own channel (its client certificate names it)."""
        if caller not in calls:
            channel = channels[caller] = aio_channel(target, caller, **{"grpc.max_receive_message_length": size,
                                                                        "grpc.max_send_message_length": size})
            calls[caller] = channel.unary_unary(SETTLE_BATCH, response_deserializer=spb.SettleBatchResponse.FromString)
        return calls[caller]
    queue: asyncio.Queue = asyncio.Queue()
    for unit in units:
        queue.put_nowait(unit)
    settled: list[str] = []
    refused: dict[str, int] = {}

    def note(outcomes, want: str) -> list:
        out = []
        for o in outcomes:
            if o is None:   # its whole batch was refused (counted once, by batch)
                out.append(None)
            elif o.WhichOneof("outcome") == "refused":
                reason = status_reason(o.refused)
                refused[reason] = refused.get(reason, 0) + 1
                out.append(None)
            else:
                out.append(getattr(o, want))
        return out

    async def batch(caller: str, items) -> list:
        if not items:
            return []
        request = items if isinstance(items, bytes) else spb.SettleBatchRequest(items=items).SerializeToString()
        try:
            return (await call(caller)(request, timeout=600)).outcomes
        except grpc.aio.AioRpcError as err:   # a whole batch refused: counted, and the run fails at its end
            reason = "batch " + call_refusal(err)
            refused[reason] = refused.get(reason, 0) + 1
            return [] if isinstance(items, bytes) else [None] * len(items)

    async def lane() -> None:
        while not queue.empty():
            kind, caller, payload, _n = queue.get_nowait()
            if kind == "op":
                settled.extend(s.settlement.setl_id for s in note(await batch(caller, payload), "settlement") if s)
                continue
            admits = [spb.SettleItem(admit=spb.AdmitRequest(request_id=rid + "-a", psn_no=c.psn_no,
                                                            fixmedins_code=c.fixmedins_code, adm_date=DATE))
                      for c, rid in payload]
            admitted = note(await batch(caller, admits), "admitted")
            stays = [(c, rid, a.mdtrt_id) for (c, rid), a in zip(payload, admitted, strict=True) if a]
            fees = [spb.SettleItem(fees=spb.UploadFeesRequest(
                request_id=rid + "-f", mdtrt_id=m, lines=[pb.FeeLine(
                    feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen, qty_milli=x.qty_milli)
                    for x in c.lines])) for c, rid, m in stays]
            note(await batch(caller, fees), "visit")
            discharges = [spb.SettleItem(discharge=spb.DischargeSettleRequest(request_id=rid + "-s", mdtrt_id=m,
                                                                              dscg_date=DATE))
                          for _c, rid, m in stays]
            settled.extend(s.settlement.setl_id for s in note(await batch(caller, discharges), "settlement") if s)

    await asyncio.gather(*(lane() for _ in range(lanes)))
    for channel in channels.values():
        await channel.close()
    return {"settled": settled, "refused": refused}


def _client(target: str, data_dir: str, seed: int, n: int, batch: int, lanes: int, ready, go, out) -> None:
    import uvloop

    units = _prepare(data_dir, seed, n, batch)
    ready.put(sum(u[3] for u in units if u[0] == "op"))
    go.wait()
    start = time.monotonic()
    result = uvloop.run(_replay(target, units, lanes))
    result["seconds"] = time.monotonic() - start
    out.put(result)


# ----------------------------------------------------------------- checks
def check_ledger(ledger: str, data_dir: str, snapshots: str, acknowledged: list[str], key) -> dict:
    """Every acknowledged settlement once, no request id twice, and a full replay's accumulators equal the
    gateway's (its final snapshot)."""
    from core import events
    from core.archive import MemoryArchive
    from core.engine import Engine
    from core.events import Settled, id_seq
    from gateway.app import load_index
    from gateway.config import Config
    from gateway.store import SqliteStore
    from gateway.store.rows import request_hash
    from gateway.store.snapshot import Snapshots

    store = SqliteStore(ledger, key)
    try:
        duplicated = len(acknowledged) - len(set(acknowledged))
        engine = Engine(load_index(Config(data_dir=data_dir), data_dir), MemoryArchive())
        twice = 0
        seen: set[int] = set()   # 63-bit hashes of every (caller, request id): bounded memory at 2M records
        settled = array.array("q")   # the seq of every settlement whose id is its own, in seq order (the scan's)
        for record in store.scan():
            if record.request_id:
                h = request_hash(record.caller, record.request_id)
                twice += h in seen
                seen.add(h)
            event = events.decode(record.body)
            engine.apply(event, record.seq)
            if type(event) is Settled and id_seq(event.settlement.setl_id, "S") == record.seq:
                settled.append(record.seq)
        replayed = sorted(engine.index.accumulator_rows())
        ledger_id = store.key.ledger_id
    finally:
        store.close()
    # an acknowledged settlement is found when its id's seq holds it (one pass: reading 2M records one at a time
    # from packed rows costs a blob read each)
    missing = sum(not _holds(settled, id_seq(setl_id, "S")) for setl_id in acknowledged)
    settlements = len(settled)
    snap = Snapshots(snapshots).newest(10**18, key.for_ledger(ledger_id))
    held = sorted(tuple(x) for x in snap.engine.accumulators)
    return {"lost": missing, "duplicated": duplicated + twice, "settlements_in_ledger": settlements,
            "accumulators_equal_replay": replayed == held, "person_years": len(held)}


def _holds(seqs: array.array, seq: int) -> bool:
    i = bisect.bisect_left(seqs, seq)
    return i < len(seqs) and seqs[i] == seq


# ----------------------------------------------------------------- main
def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def run(data_dir: str, settlements: int, processes: int = 2, lanes: int = 4, batch: int = 1000) -> dict:
    """Replay the day through a gateway this starts; the summary (times, checks, resident memory per settlement).
    UnexpectedRefusals (after the checks) if an item or batch was refused for a reason not expected."""
    from bench.loadgen import start_gateway
    from bench.outcomes import require_expected

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(data_dir))) as tmp:
        proc, target = start_gateway(data_dir, tmp)
        rss_serving = rss_bytes(proc.pid)
        ledger = os.path.join(tmp, "loadgen-ledger.sqlite")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        share = settlements // processes
        clients = [ctx.Process(target=_client, args=(target, data_dir, 100 + i, share, batch, lanes,
                                                     ready, go, out)) for i in range(processes)]
        prep = time.monotonic()
        for c in clients:
            c.start()
        outpatient = sum(ready.get() for _ in clients)
        prep = time.monotonic() - prep
        start = time.monotonic()
        go.set()
        results = [out.get() for _ in clients]
        wall = time.monotonic() - start
        for c in clients:
            c.join()
        rss_end = rss_bytes(proc.pid)
        import grpc

        from gateway.security import certs
        from gateway._pb.yidi.v1 import admin_pb2
        from gateway.testing import Client, credentials, seal_key
        from bench.loadgen import certs_dir

        national = Client(grpc.secure_channel(target, credentials("national", certs.Paths(certs_dir()))), "national")
        status = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
        national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
        national.channel.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        acknowledged = [s for r in results for s in r["settled"]]
        refused: dict[str, int] = {}
        for r in results:
            for k, v in r["refused"].items():
                refused[k] = refused.get(k, 0) + v
        checks = check_ledger(ledger, data_dir, ledger + ".snapshots", acknowledged, seal_key())
    require_expected("peak day", refused, EXPECTED_REFUSALS)
    return {
        "settlements_asked": settlements, "outpatient_asked": outpatient, "settlements": len(acknowledged),
        "refused": sum(refused.values()), "refusals": refused, "prepare_s": round(prep, 1),
        "peak_day_s": round(wall, 1), "settlements_per_s": round(len(acknowledged) / wall),
        "ledger_transactions": status.ledger_commits,
        "records_per_transaction": round(status.ledger_commit_records / max(1, status.ledger_commits), 1),
        "fsyncs_per_s": round(status.ledger_commits / wall, 1),
        "rss_serving_mib": round(rss_serving / 2**20, 1), "rss_end_mib": round(rss_end / 2**20, 1),
        # every record the day made (admissions and fee uploads included) is charged to its settlements
        "bytes_per_settlement": round((rss_end - rss_serving) / max(1, len(acknowledged))),
        **checks,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--settlements", type=int, default=2_000_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--lanes", type=int, default=4, help="batches in flight per client process")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--json", default="")
    args = p.parse_args()
    try:
        summary = run(args.data_dir, args.settlements, args.processes, args.lanes, args.batch)
    except UnexpectedRefusals as err:
        raise SystemExit(f"peak_day: {err}") from None
    print(f"| peak day | {summary['settlements']:,} settlements | {summary['peak_day_s']} s | "
          f"{summary['settlements_per_s']:,}/s | {summary['records_per_transaction']} records/txn | "
          f"lost {summary['lost']} | duplicated {summary['duplicated']} | "
          f"accumulators = replay: {summary['accumulators_equal_replay']} |", file=sys.stderr)
    print(json.dumps(summary, ensure_ascii=False))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()

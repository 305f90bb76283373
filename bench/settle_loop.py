"""The core's outpatient settle loop against the engine's Python path, in one process: µs per settlement.

    python bench/settle_loop.py --items 20000 --rounds 3

Plain outpatient settlements (three fee lines, the spec data set's four filed persons, every second one
drawing on the personal account) are decided, applied and recorded (a gateway Record each, as the gateway
makes them) twice on fresh engines: by ``core.settle_outpatients`` in one call, and one by one by
``Engine.perform`` plus the record's encoding, as ``Gateway._perform`` does.  A third path starts from the
SettleBatch request's bytes (batches of 500), as a gateway gets them: the items read (``convert.batch_items``),
authorized and settled by the core's loop, and their audit lines written; its stages are timed apart.  The rounds
alternate, so the ratio is measured under the same machine load; no gRPC, no ledger.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from builders import DRUG_A, DRUG_B, TREATMENT_A  # noqa: E402
from core import Index, events  # noqa: E402
from core import commands as cmd  # noqa: E402
from core import settle_outpatients  # noqa: E402
from core.archive import MemoryArchive  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.events import FeeLine  # noqa: E402
from datagen.spec_fixture import write_spec_dataset  # noqa: E402
from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb  # noqa: E402
from gateway.security.audit import AuditLog  # noqa: E402
from gateway.store.parts import Record  # noqa: E402
from gateway.transport import convert  # noqa: E402

CALLER = "460000"
BATCH_ITEMS = 500


def items(names: dict, n: int) -> list[tuple[cmd.OutpatientSettle, bytes]]:
    persons = [names["psn"][p] for p in ("retired", "assist", "in_service", "acct")]
    codes = (DRUG_A, DRUG_B, TREATMENT_A)
    return [(cmd.OutpatientSettle(
        request_id=f"r{i}", person=cmd.PersonId(psn_no=persons[i % len(persons)]),
        fixmedins_code=names["inst"]["hk_l1"], setl_date=20260320, acct_used_flag=i % 2 == 0,
        lines=tuple(FeeLine(f"{i}-{k}", codes[k], "", 1250 + 100 * k, 2000, 20260320) for k in range(3))),
        b"\0" * 16) for i in range(n)]


def batch_requests(batch) -> list[bytes]:
    """The commands as SettleBatch requests of BATCH_ITEMS items, serialized as a client sends them."""
    def request(c: cmd.OutpatientSettle) -> spb.SettleItem:
        return spb.SettleItem(outpatient=spb.OutpatientSettleRequest(
            request_id=c.request_id, psn_no=c.person.psn_no, fixmedins_code=c.fixmedins_code, setl_date=c.setl_date,
            acct_used_flag=c.acct_used_flag, lines=[pb.FeeLine(
                feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen, qty_milli=x.qty_milli,
                fee_date=x.fee_date) for x in c.lines]))
    return [spb.SettleBatchRequest(items=[request(c) for c, _ in batch[i:i + BATCH_ITEMS]]).SerializeToString()
            for i in range(0, len(batch), BATCH_ITEMS)]


def wire_path(engine: Engine, requests: list[bytes], audit: AuditLog, stages: dict[str, float]) -> int:
    """Each request's items read, authorized and settled in the core, and audited; CPU seconds added to ``stages``."""
    settled = 0
    for raw in requests:
        start = time.process_time()
        items = convert.batch_items(raw, BATCH_ITEMS)
        read = time.process_time()
        records = settle_outpatients(engine, CALLER, [(w.command, w.digest) for _, w, _ in items], settled + 1, True,
                                     lambda _command: None, Record)
        done = time.process_time()
        audit.write_many(CALLER, [(method, w, "ok", r.key, r.seq) for (method, w, _), r in zip(items, records, strict=True)])
        stages["read"] += read - start
        stages["authorize, settle, record"] += done - read
        stages["audit"] += time.process_time() - done
        settled += len(records)
    return settled


def python_path(engine: Engine, batch) -> int:
    for seq, (command, digest) in enumerate(batch, 1):
        decision, changes = engine.perform(command, seq)
        event = decision.event
        Record(kind=event.kind, caller=CALLER, request_id=command.request_id, digest=digest, key=event.key,
               body=events.encode(event), response=decision.result.data, seq=seq, changes=tuple(changes))
    return len(batch)


def core_loop(engine: Engine, batch) -> int:
    return len(settle_outpatients(engine, CALLER, batch, 1, False, lambda _command: None, Record))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="yidi-settle-loop-")
    names = write_spec_dataset(os.path.join(work, "data"))
    batch = items(names, args.items)
    requests = batch_requests(batch)
    audit = AuditLog(os.path.join(work, "audit.jsonl"))
    timings: dict[str, list[float]] = {"python": [], "core": [], "wire": []}
    stages: dict[str, list[float]] = {"read": [], "authorize, settle, record": [], "audit": []}
    for _ in range(args.rounds):
        spent = dict.fromkeys(stages, 0.0)
        runs = (("python", lambda e: python_path(e, batch)), ("core", lambda e: core_loop(e, batch)),
                ("wire", lambda e, spent=spent: wire_path(e, requests, audit, spent)))
        for name, run in runs:
            index = Index()
            index.load_dir(names["dir"])
            engine = Engine(index, MemoryArchive())
            start = time.process_time()
            settled = run(engine)
            timings[name].append((time.process_time() - start) / settled * 1e6)
            assert settled == len(batch), f"{name} settled {settled} of {len(batch)}"
        for stage, seconds in spent.items():
            stages[stage].append(seconds / len(batch) * 1e6)
    for name, us in list(timings.items()) + [(f"  {stage}", us) for stage, us in stages.items()]:
        print(f"{name:27} µs per settlement (CPU): {', '.join(f'{u:.1f}' for u in us)}  "
              f"median {statistics.median(us):.1f}")
    print(f"core ÷ python, median of the rounds: {statistics.median(timings['core']) / statistics.median(timings['python']):.2f}")


if __name__ == "__main__":
    main()

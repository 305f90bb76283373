"""The core's outpatient settle loop against the engine's Python path, in one process: µs per settlement.

    python bench/settle_loop.py --items 20000 --rounds 3

Plain outpatient settlements (three fee lines, the spec data set's four filed persons, every second one
drawing on the personal account) are decided, applied and recorded (a gateway Record each, as the gateway
makes them) twice on fresh engines: by ``core.settle_outpatients`` in one call, and one by one by
``Engine.perform`` plus the record's encoding, as ``Gateway._perform`` does.  The rounds alternate, so the
ratio is measured under the same machine load; no gRPC, no ledger.
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
from gateway.store.parts import Record  # noqa: E402

CALLER = "460000"


def items(names: dict, n: int) -> list[tuple[cmd.OutpatientSettle, bytes]]:
    persons = [names["psn"][p] for p in ("retired", "assist", "in_service", "acct")]
    codes = (DRUG_A, DRUG_B, TREATMENT_A)
    return [(cmd.OutpatientSettle(
        request_id=f"r{i}", person=cmd.PersonId(psn_no=persons[i % len(persons)]),
        fixmedins_code=names["inst"]["hk_l1"], setl_date=20260320, acct_used_flag=i % 2 == 0,
        lines=tuple(FeeLine(f"{i}-{k}", codes[k], "", 1250 + 100 * k, 2000, 20260320) for k in range(3))),
        b"\0" * 16) for i in range(n)]


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
    names = write_spec_dataset(os.path.join(tempfile.mkdtemp(prefix="yidi-settle-loop-"), "data"))
    batch = items(names, args.items)
    timings: dict[str, list[float]] = {"python": [], "core": []}
    for _ in range(args.rounds):
        for name, run in (("python", python_path), ("core", core_loop)):
            index = Index()
            index.load_dir(names["dir"])
            engine = Engine(index, MemoryArchive())
            start = time.process_time()
            settled = run(engine, batch)
            timings[name].append((time.process_time() - start) / settled * 1e6)
            assert settled == len(batch), f"{name} settled {settled} of {len(batch)}"
    for name, us in timings.items():
        print(f"{name:6} µs per settlement (CPU): {', '.join(f'{u:.1f}' for u in us)}  median {statistics.median(us):.1f}")
    print(f"core ÷ python, median of the rounds: {statistics.median(timings['core']) / statistics.median(timings['python']):.2f}")


if __name__ == "__main__":
    main()

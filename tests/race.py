"""Reversals racing their originals, while Ping is asked throughout: the gateway never stalls.

    python tests/race.py --pairs 10000      (make race PAIRS=10000)

A gateway on the SPEC fixture over mTLS.  Lanes of one caller send
``OutpatientSettle`` and, while it still waits for its group commit, ``Reverse``
of it (冲正 after a timeout, routine at a counter); meanwhile a Ping is sent
every 20 ms with a 2 s deadline.  Each pair must agree: the reversal cancelled
the original's settlement, or the original was refused ``REQUEST_REVERSED``.
Prints one JSON line (pairs, outcomes, violations, Pings answered and their
latency) and exits 0 only if every pair agreed and every Ping was answered.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import grpc  # noqa: E402

from datagen.spec_fixture import write_spec_dataset  # noqa: E402
from gateway._pb.yidi.v1 import diagnostics_pb2 as dpb, diagnostics_pb2_grpc  # noqa: E402
from gateway._pb.yidi.v1 import settlement_pb2 as spb, settlement_pb2_grpc  # noqa: E402
from gateway.transport.status import reason_of  # noqa: E402
from gateway.testing import credentials, start_gateway  # noqa: E402
from tests.gateway_harness import file_person  # noqa: E402
from tests.builders import outpatient  # noqa: E402

HAINAN, LIAONING = "460000", "210000"
PERSONS = 8          # pairs spread over persons, so that no one reaches an annual cap
PING_EVERY_S = 0.02


async def pair(settlement, n: int) -> str:
    """One original and its reversal, sent together; what the pair came to, or a violation."""
    original = outpatient(f"race-{n}", f"PR-{n % PERSONS}", date=20260316, price=1000 + n % 97, qty_milli=1000)
    settled = asyncio.ensure_future(settlement.OutpatientSettle(original, timeout=30))
    reversal = await settlement.Reverse(spb.ReverseRequest(request_id=f"race-{n}-r", original_request_id=original.
                                                           request_id, reverse_date=20260317), timeout=30)
    try:
        answer, reason = await settled, None
    except grpc.aio.AioRpcError as err:
        answer, reason = None, reason_of(err)
    if reversal.outcome == spb.REVERSE_OUTCOME_SETTLEMENT_CANCELLED:
        ok = answer is not None and reversal.settlement.setl_id == answer.settlement.setl_id
        return "cancelled" if ok else "violation: cancelled another settlement"
    if reversal.outcome == spb.REVERSE_OUTCOME_NOT_PERFORMED:
        return "not performed" if reason == "REQUEST_REVERSED" else f"violation: not performed, original {reason}"
    return f"violation: outcome {reversal.outcome}"


async def race(target, certs, pairs: int, lanes: int) -> dict:
    outcomes: dict[str, int] = {}
    pings: list[float] = []
    failed_pings: list[str] = []
    done = asyncio.Event()
    async with grpc.aio.secure_channel(target, credentials(HAINAN, certs)) as channel:
        settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
        ping = diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Ping

        async def pinger() -> None:
            while not done.is_set():
                start = time.perf_counter()
                try:
                    await ping(dpb.PingRequest(), timeout=2)
                    pings.append(time.perf_counter() - start)
                except grpc.aio.AioRpcError as err:
                    failed_pings.append(err.code().name)
                await asyncio.sleep(PING_EVERY_S)

        async def lane(first: int) -> None:
            for n in range(first, pairs, lanes):
                outcome = await pair(settlement, n)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

        pinging = asyncio.ensure_future(pinger())
        await asyncio.gather(*(lane(i) for i in range(lanes)))
        done.set()
        await pinging
    pings.sort()
    return {"outcomes": outcomes, "pings": len(pings), "failed_pings": len(failed_pings),
            "ping_p99_ms": round(pings[int(len(pings) * 0.99)] * 1000, 1) if pings else None,
            "ping_max_ms": round(pings[-1] * 1000, 1) if pings else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=10_000)
    p.add_argument("--lanes", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="yidi-race-") as work:
        names = write_spec_dataset(os.path.join(work, "data"))
        gw = start_gateway(names["dir"], os.path.join(work, "ledger.sqlite"))
        liaoning = gw.client(LIAONING)
        for n in range(PERSONS):
            file_person(liaoning, f"PR-{n}", f"2101021980010{n:04d}")
        started = time.monotonic()
        result = asyncio.run(race(gw.target, gw.certs, args.pairs, args.lanes))
        result = {"pairs": args.pairs, "seconds": round(time.monotonic() - started, 1), **result,
                  "clean_stop": gw.stop() == 0}
    violations = sum(n for outcome, n in result["outcomes"].items() if outcome.startswith("violation"))
    result["violations"] = violations
    print(json.dumps(result, ensure_ascii=False))
    ok = violations == 0 and result["failed_pings"] == 0 and result["pings"] > 0 and result["clean_stop"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The cost of a forwarded call: server CPU per unary settlement sent to the owner directly, and via another node.

    python bench/forwarding.py                                   (a generated data set of --persons persons)
    python bench/forwarding.py --data-dir data/national --seconds 10

Two gateways on loopback over mTLS, each with its own ledger: the owner, and a node that sends every mutating
call to it (``--owner-address``, gateway/transport/forward.py).  In the same run, outpatient settlements
(bench/loadgen.py) go to the owner directly, then to the node, at the same offered rate (``--rate``, open loop: the
owner's ledger groups, and so its CPU per call, depend on the rate; 0: closed loop); each row gives the CPU per call
of the server called and, for the forwarded row, of the owner behind it.  The empty call (Ping) at the node, which is not
forwarded, says where the node's time goes: what any call served costs it, the rest being its call to the owner.
The last line is JSON: the CPU per call of both ways and their ratio (the whole system's CPU per forwarded call
over a direct one's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import loadgen  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="", help="the data set (default: generate one of --persons persons)")
    p.add_argument("--persons", type=int, default=20_000)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=16, help="calls in flight per client process")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rate", type=float, default=300.0, help="calls/s offered in each phase (0: closed loop)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="yidi-forwarding-") as work:
        data_dir = args.data_dir or _generate(os.path.join(work, "data"), args.persons)
        print(json.dumps(measure(data_dir, work, args.processes, args.concurrency, args.seconds, args.rate)))


def _generate(out: str, persons: int) -> str:
    from datagen import generate

    generate(out, persons=persons, seed=2026)
    return out


def measure(data_dir: str, work: str, processes: int, concurrency: int, seconds: float, rate: float) -> dict:
    from gateway.testing import dev_certs

    owner, owner_target = loadgen.start_gateway(data_dir, _dir(work, "owner"))
    node = None
    try:
        paths = dev_certs()
        node, node_target = loadgen.start_gateway(data_dir, _dir(work, "node"), "--owner-address", owner_target,
                                                  "--node-cert", paths.node_cert("node-b"),
                                                  "--node-key", paths.node_key("node-b"))
        # a machine shared with other work may stall a gateway past its queue limit: counted, not fatal
        load = dict(processes=processes, concurrency=concurrency, seconds=seconds, rate=rate, expected=("OVERLOADED",))
        direct = loadgen.run_load(owner_target, "outpatient", data_dir, server_pid=owner.pid, seed=1000, **load)
        forwarded = loadgen.run_load(node_target, "outpatient", data_dir, server_pid=node.pid, other_pids=(owner.pid,),
                                     seed=2000, **load)
        empty = loadgen.run_load(node_target, "ping", data_dir, server_pid=node.pid, **load)
    finally:
        for proc in (node, owner):
            if proc is not None:
                proc.terminate()
                proc.wait(60)
    direct_us = direct["server_cpu_us_per_call"]
    node_us, owner_us = forwarded["server_cpu_us_per_call"], forwarded["other_cpu_us_per_call"]
    print(_table(direct, forwarded, empty), file=sys.stderr)
    return {"direct_cpu_us_per_call": round(direct_us), "forwarding_node_cpu_us_per_call": round(node_us),
            "owner_cpu_us_per_forwarded_call": round(owner_us),
            "node_empty_call_cpu_us": round(empty["server_cpu_us_per_call"]),
            "forwarded_over_direct_cpu": round((node_us + owner_us) / direct_us, 2), "offered_per_s": rate or None,
            "direct_calls_per_s": round(direct["calls_per_s"]), "forwarded_calls_per_s": round(forwarded["calls_per_s"]),
            "direct_p50_ms": round(direct["p50_ms"], 2), "forwarded_p50_ms": round(forwarded["p50_ms"], 2),
            "refusals": {row: r["refusals"] for row, r in (("direct", direct), ("forwarded", forwarded),
                                                           ("empty", empty)) if r["refusals"]}}


def _dir(work: str, name: str) -> str:
    path = os.path.join(work, name)
    os.makedirs(path, exist_ok=True)
    return path


def _table(direct: dict, forwarded: dict, empty: dict) -> str:
    rows = [("OutpatientSettle to the owner", direct, direct["server_cpu_us_per_call"], 0.0),
            ("OutpatientSettle via the other node", forwarded, forwarded["server_cpu_us_per_call"],
             forwarded["other_cpu_us_per_call"]),
            ("Ping at the other node (not forwarded)", empty, empty["server_cpu_us_per_call"], 0.0)]
    out = ["| unary call | calls/s | p50 ms | p99 ms | CPU µs/call, node called | owner behind it | total |",
           "|---|---|---|---|---|---|---|"]
    for name, row, called, behind in rows:
        out.append(f"| {name} | {row['calls_per_s']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {called:.0f} | "
                   f"{behind:.0f} | {called + behind:.0f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()

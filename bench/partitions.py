"""Settlements/s of one gateway node against two, on the same PostgreSQL, under the same load (issue 16 item 7).

    python bench/partitions.py                        (a generated data set of --persons persons)
    python bench/partitions.py --seconds 10 --json build/partitions.json

A throwaway PostgreSQL cluster (gateway/pgcluster.py) on this machine; the same closed-loop load of unary
outpatient settlements, or with ``--rpc batch`` SettleBatch calls of 500 (bench/loadgen.py: ``--processes``
client processes, ``--concurrency`` calls in flight each, persons of every insured province) against, in turn:

* ``one node``: one gateway owning the whole ledger (``--partitions 1``);
* ``two nodes, routed``: two gateways on a ledger of two partitions by insured province (``--partitions 2``), each
  owning one, every call sent to the node of its partition (a client that knows the map: nothing forwarded);
* ``two nodes, any node``: the same two, each client calling one of them whatever the partition, so about
  half the calls are forwarded (docs/postgresql.md, Partitions).

Each row gives settlements/s, latency and the gateways' CPU per settlement (both nodes' for two); the last line
is JSON with the ratios of the two-node rows to the one-node row.  The machine's cores are shared by the
PostgreSQL server, the client processes and the gateways: compare the ratios, not the absolute figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import loadgen  # noqa: E402
from bench.profile import summarise  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="", help="the data set (default: generate one of --persons persons)")
    p.add_argument("--persons", type=int, default=20_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight per client process")
    p.add_argument("--rpc", choices=("outpatient", "batch"), default="outpatient",
                   help="unary OutpatientSettle, or SettleBatch of 500 (a routed batch's items are of one partition)")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--json", default="", help="also write the result here")
    p.add_argument("--profile", action="store_true", help="py-spy each gateway during the one-node and the "
                                                          "any-node rows, and print where its main thread's time goes")
    args = p.parse_args()
    from gateway.pgcluster import Cluster

    with tempfile.TemporaryDirectory(prefix="yidi-partitions-") as work:
        data_dir = args.data_dir or _generate(os.path.join(work, "data"), args.persons)
        cluster = Cluster().start()
        try:
            result = measure(cluster, data_dir, work, args.processes, args.concurrency, args.seconds,
                             args.profile, args.rpc)
        finally:
            cluster.stop()
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


def _generate(out: str, persons: int) -> str:
    from datagen import generate

    generate(out, persons=persons, seed=2026)
    return out


def measure(cluster, data_dir: str, work: str, processes: int, concurrency: int, seconds: float,
            profile: bool = False, rpc: str = "outpatient") -> dict:
    load = dict(processes=processes, concurrency=concurrency, seconds=seconds, expected=("OVERLOADED",))
    rows, profiles = {}, {}
    with _nodes(cluster.create_database("one"), data_dir, work, 1) as nodes:
        [(proc, target)] = nodes
        with _spy(profile, work, {"one node": proc}, seconds, profiles):
            rows["one node"] = loadgen.run_load(target, rpc, data_dir, server_pid=proc.pid, seed=1000,
                                                cpu_groups=_groups(cluster, nodes), **load)
    with _nodes(cluster.create_database("two"), data_dir, work, 2) as nodes:
        (p0, t0), (p1, t1) = nodes
        both = f"{t0},{t1}"
        rows["two nodes, routed"] = loadgen.run_load(both, rpc, data_dir, server_pid=p0.pid,
                                                     other_pids=(p1.pid,), seed=2000, route=2,
                                                     cpu_groups=_groups(cluster, nodes), **load)
        with _spy(profile, work, {"any node, partition 0's": p0, "any node, partition 1's": p1}, seconds, profiles):
            rows["two nodes, any node"] = loadgen.run_load(both, rpc, data_dir, server_pid=p0.pid,
                                                           other_pids=(p1.pid,), seed=3000,
                                                           cpu_groups=_groups(cluster, nodes), **load)
    print(_table(rows), file=sys.stderr)
    for name, raw in profiles.items():
        print(f"\n{name} gateway (py-spy, busy samples):\n{summarise(raw)}", file=sys.stderr)
    one = rows["one node"]["settlements_per_s"]
    return {
        "settlements_per_s": {name: round(row["settlements_per_s"]) for name, row in rows.items()},
        "two_routed_over_one": round(rows["two nodes, routed"]["settlements_per_s"] / one, 2),
        "two_any_over_one": round(rows["two nodes, any node"]["settlements_per_s"] / one, 2),
        "gateway_cpu_us_per_settlement": {name: round(_cpu_us(row)) for name, row in rows.items()},
        "cpu_us_per_settlement_by": {name: row.get("cpu_us_per_settlement_by") for name, row in rows.items()},
        "machine_busy_cores": {name: row.get("machine_busy_cores") for name, row in rows.items()},
        "p50_ms": {name: round(row["p50_ms"], 2) for name, row in rows.items()},
        "refusals": {name: row["refusals"] for name, row in rows.items() if row["refusals"]},
        "rpc": rpc, "processes": processes, "concurrency": concurrency, "seconds": seconds}


def _groups(cluster, nodes: list) -> dict[str, tuple[int, ...]]:
    """The processes whose CPU the load's rows account for: the gateways and the PostgreSQL server (taken once the
    gateways have connected: a backend per connection)."""
    return {"gateways": tuple(proc.pid for proc, _ in nodes), "postgresql": cluster.pids()}


def _cpu_us(row: dict) -> float:
    """The gateways' CPU µs per settlement (a batch's per call shared by its items)."""
    return (row["server_cpu_us_per_call"] + row.get("other_cpu_us_per_call", 0.0)) / row.get("items_per_call", 1)


class _spy:
    """py-spy records each named gateway for the load's length (after its warm-up) when ``on``; raw output files
    into ``out`` by name."""

    def __init__(self, on: bool, work: str, procs: dict, seconds: float, out: dict) -> None:
        self.on, self.work, self.procs, self.seconds, self.out = on, work, procs, seconds, out
        self.spies: list = []

    def __enter__(self) -> None:
        if not self.on:
            return
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        for name, proc in self.procs.items():
            raw = self.out[name] = os.path.join(self.work, f"spy-{len(self.out)}.txt")
            self.spies.append(subprocess.Popen(
                ["sh", "-c", f"sleep 3 && exec py-spy record -p {proc.pid} -d {max(1, int(self.seconds) - 2)} "
                             f"-r 250 -f raw -o {raw} --threads --nonblocking"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def __exit__(self, *exc) -> None:
        for spy in self.spies:
            spy.wait(120)


class _nodes:
    """Gateways on the ledger at ``url`` split into ``n`` partitions, one owning each: [(process, host:port)]."""

    def __init__(self, url: str, data_dir: str, work: str, n: int) -> None:
        self.url, self.data_dir, self.work, self.n = url, data_dir, work, n
        self.started: list = []

    def __enter__(self) -> list:
        from gateway.testing import dev_certs

        paths = dev_certs()
        for part in range(self.n):
            name = f"n{self.n}-p{part}"
            workdir = os.path.join(self.work, name)
            os.makedirs(workdir, exist_ok=True)
            node = "node-a" if part == 0 else "node-b"
            self.started.append(loadgen.start_gateway(
                self.data_dir, workdir, "--store", self.url, "--node-id", name, "--partitions", str(self.n),
                "--partition", str(part), "--node-cert", paths.node_cert(node), "--node-key", paths.node_key(node)))
        return self.started

    def __exit__(self, *exc) -> None:
        for proc, _ in self.started:
            proc.terminate()
        for proc, _ in self.started:
            proc.wait(60)


def _table(rows: dict) -> str:
    out = ["| load | settlements/s | p50 ms | p99 ms | CPU µs/settlement: gateways | PostgreSQL | clients | "
           "whole machine | cores busy |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        by = row.get("cpu_us_per_settlement_by", {})
        out.append(f"| {name} | {row['settlements_per_s']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                   f"{by.get('gateways', 0):.0f} | {by.get('postgresql', 0):.0f} | {by.get('clients', 0):.0f} | "
                   f"{by.get('machine', 0):.0f} | {row.get('machine_busy_cores', 0):.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()

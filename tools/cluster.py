"""A local cluster in one command (make cluster): PostgreSQL by the Patroni recipe and two gateway nodes.

    python tools/cluster.py [--data-dir data/national] [--dir /tmp/yidi-cluster] [--base-port 50061]
                            [--pg-base-port 5451] [--certs certs/dev]

Starts tools/ha.py's recipe (etcd, a PostgreSQL primary, its synchronous standby and a replica, all run by
Patroni), then two gateway nodes on loopback sharing its ledger, split into two partitions by insured province
(core/partition.py).  Each node (a machine, with its node certificate) runs one ``yidi serve`` process per
partition: ``node-a-p0`` takes partition 0's lease (its owner) and ``node-a-p1`` follows partition 1 as its
standby; ``node-b-p1`` owns partition 1 and ``node-b-p0`` stands by for partition 0.  Any process answers any
call: one of another partition is forwarded to that partition's owner.  Prints how to call them, then watches
them: a process that exits (70: it lost its lease; or killed by you) is started again, as a supervisor would,
and its pid written again to <dir>/<name>.pid.  Ctrl-C (SIGINT) or SIGTERM stops the processes, Patroni and
etcd, and removes the run directory.

``--base-port 0`` takes any free ports for the gateways (the tests); else node-a's processes listen on it and
the next port, node-b's on the two after.  The PostgreSQL servers use ``--pg-base-port`` and the two ports
after it (their REST APIs +100, etcd +200).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]

import ha  # noqa: E402

MACHINES = ("node-a", "node-b")   # each with its node certificate (yidi certs: certs/dev/nodes)
PARTITIONS = 2
START_TIMEOUT_S = 300   # loading the 1.8M-person national data set takes a while on a busy machine


class GatewayNode:
    """One ``yidi serve`` process of a machine, for one partition of the cluster's ledger; its log at
    run_dir/<name>.log, its pid in run_dir/<name>.pid."""

    def __init__(self, machine: str, part: int, args, dsn: str, env: dict) -> None:
        self.machine, self.part, self.name, self.dsn, self.env = machine, part, f"{machine}-p{part}", dsn, env
        self.run_dir, self.certs = args.dir, os.path.abspath(args.certs)
        k = MACHINES.index(machine) * PARTITIONS + part
        port = 0 if args.base_port == 0 else args.base_port + k
        metrics = 0 if args.base_port == 0 else args.metrics_base_port + k
        self.listen, self.metrics_listen = f"127.0.0.1:{port}", f"127.0.0.1:{metrics}"
        self.data_dir = os.path.abspath(args.data_dir)
        self.log = os.path.join(self.run_dir, f"{self.name}.log")
        self.pid_file = os.path.join(self.run_dir, f"{self.name}.pid")
        self.proc: subprocess.Popen | None = None
        self.target = self.metrics_url = self.role = ""

    def start(self) -> None:
        """Start it and wait until it says SERVING (the owner) or STANDBY."""
        argv = [sys.executable, "-m", "gateway", "serve", "--certs", self.certs, "--data-dir", self.data_dir,
                "--ledger", os.path.join(self.run_dir, f"{self.name}.sqlite"), "--store", self.dsn,
                "--partitions", str(PARTITIONS), "--partition", str(self.part),
                "--node-id", self.name, "--listen", self.listen, "--metrics-listen", self.metrics_listen,
                "--node-cert", os.path.join(self.certs, "nodes", f"{self.machine}.pem"),
                "--node-key", os.path.join(self.certs, "nodes", f"{self.machine}.key")]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        with open(self.pid_file, "w", encoding="ascii") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            words = line.split()
            if words and words[0] in ("SERVING", "STANDBY"):
                self.role, self.target = words[0], words[1]
                self.metrics_url = words[words.index("metrics") + 1] if "metrics" in words else ""
                # what it prints later is read and dropped, so it never blocks on a full pipe
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{self.name} did not start; the end of {self.log}:\n{tail(self.log)}")

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """SIGTERM (a clean stop gives the lease up), SIGKILL if it is still there after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tail(path: str, chars: int = 3000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-chars:]
    except OSError:
        return ""


class Stop(Exception):
    """SIGINT or SIGTERM: stop everything."""


def _stop(signum, _frame) -> None:
    raise Stop(signal.Signals(signum).name)


def usage(nodes: list[GatewayNode], up: dict, args) -> str:
    pgpass = up["pgpassfile"]
    first = nodes[0]   # node-a-p0: partition 0's owner
    standby = next(n for n in nodes if n.part == first.part and n is not first)
    lines = [
        f"Yidi cluster up (run directory {args.dir}; data {args.data_dir})",
        f"  PostgreSQL via Patroni + etcd: primary {up['leader']}, synchronous standby {up['sync']}, "
        f"members {', '.join(up['nodes'])}",
        f"  ledger  {up['dsn']}",
        f"          (its password is in {pgpass}: export PGPASSFILE={pgpass})",
        f"  {PARTITIONS} partitions by insured province: its two-digit code % {PARTITIONS} (44 广东 → 0, 21 辽宁 → 1)",
    ]
    for node in sorted(nodes, key=lambda n: n.name):
        role = f"owner of partition {node.part}" if node.role == "SERVING" else f"standby for partition {node.part}"
        lines.append(f"  {node.name}  {node.target:<16} {role:<24} metrics {node.metrics_url}  pid {node.proc.pid}"
                     f"  log {node.log}")
    lines += [
        "",
        "Call any process (from the repo root, with .venv/bin on PATH; certificates " + args.certs + "); a call of",
        "another partition's insured is forwarded to that partition's owner and answered byte for byte:",
        f"  yidi --target {first.target} --caller national status      # the process's data, ledger seq and role",
        f"  PGPASSFILE={pgpass} yidi status --store '{up['dsn']}'   # who owns each partition, until when",
        f"  yidi --target {first.target} --caller 460000 health      # SERVING: the owner of its partition "
        "(a standby says NOT_SERVING)",
        "  the README's walkthrough (Try it) works against any process with --target",
        f"  curl -s {first.metrics_url} | grep -E 'yidi_partition_lease_held|yidi_forwarded_calls_total'",
        f"  kill -9 $(cat {first.pid_file})    # partition {first.part}'s owner {first.name}: once its lease runs "
        f"out (2 s) {standby.name} takes it, or {first.name} itself if its restart is quicker; "
        "yidi status --store says which",
        f"  (each process's pid is in {args.dir}/<name>.pid, written again when it is restarted)",
        "Ctrl-C stops all of it.",
    ]
    return "\n".join(lines)


def supervise(nodes: list[GatewayNode]) -> None:
    """Start again every process that exits (as a supervisor would), until a signal stops the cluster."""
    while True:
        for node in nodes:
            code = node.exited()
            if code is not None:
                print(f"{node.name} exited ({code}); starting it again", flush=True)
                try:
                    node.start()
                    print(f"{node.name} is back: {node.role} {node.target} pid {node.proc.pid}", flush=True)
                except RuntimeError as err:
                    print(err, flush=True)
        time.sleep(0.5)


def run(args) -> None:
    os.makedirs(args.dir, exist_ok=True)
    os.chmod(args.dir, 0o755)   # PostgreSQL runs as its own user when this runs as root: it must enter the dir
    pg_dir = os.path.join(args.dir, "pg")
    nodes: list[GatewayNode] = []
    try:
        print(f"starting PostgreSQL (Patroni, etcd) in {pg_dir} ...", flush=True)
        up = ha.up(pg_dir, 3, args.pg_base_port, timeout_s=args.timeout_s)
        env = dict(os.environ, PGPASSFILE=up["pgpassfile"], PYTHONUNBUFFERED="1")
        # the owners first, one after the other (node-a-p0, node-b-p1: each takes its partition's lease), then
        # the standbys at once
        nodes = [GatewayNode(machine, part, args, up["dsn"], env) for k, machine in enumerate(MACHINES)
                 for part in (k, 1 - k)]
        nodes.sort(key=lambda n: n.part != MACHINES.index(n.machine))
        for batch in (nodes[:1], nodes[1:2], nodes[2:]):
            print(f"starting {' and '.join(n.name for n in batch)} (loading {args.data_dir}) ...", flush=True)
            with concurrent.futures.ThreadPoolExecutor() as pool:
                list(pool.map(GatewayNode.start, batch))
        print(usage(nodes, up, args), flush=True)
        supervise(nodes)
    except Stop as why:
        print(f"{why}: stopping the gateway processes, Patroni and etcd", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not leave half of it running
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for batch in (nodes[2:], nodes[:2]):   # the standbys first: an owner giving its lease up is not taken over
            with concurrent.futures.ThreadPoolExecutor() as pool:
                list(pool.map(GatewayNode.stop, batch))
        ha.down(pg_dir)
        shutil.rmtree(args.dir, ignore_errors=True)
        print("stopped; removed " + args.dir, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"),
                        help="the reference data set both nodes load (make data)")
    parser.add_argument("--dir", default="/tmp/yidi-cluster", help="run directory (removed when stopped)")
    parser.add_argument("--base-port", type=int, default=50061,
                        help="node-a-p0's gRPC port, node-a-p1's, node-b-p0's and node-b-p1's the next; 0: any")
    parser.add_argument("--metrics-base-port", type=int, default=9461, help="the same for /metrics")
    parser.add_argument("--pg-base-port", type=int, default=5451)
    parser.add_argument("--certs", default=os.path.join(ROOT, "certs", "dev"), help="yidi certs' directory")
    parser.add_argument("--timeout-s", type=float, default=120, help="for PostgreSQL to come up")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.data_dir, "manifest.json")):
        raise SystemExit(f"no data set at {args.data_dir}: make data (or yidi datagen --out DIR, then --data-dir DIR)")
    why = ha.missing()
    if why:
        raise SystemExit(why)
    if os.path.exists(os.path.join(args.dir, "pg", "cluster.json")):
        raise SystemExit(f"{args.dir} holds a cluster already (running, or left by a killed run): "
                         f"python tools/ha.py down --dir {os.path.join(args.dir, 'pg')}, then remove {args.dir}")
    if os.path.exists(args.dir) and os.listdir(args.dir):
        raise SystemExit(f"{args.dir} is not empty: the run directory is removed when the cluster stops, so name a "
                         "new one (--dir)")
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    run(args)


if __name__ == "__main__":
    main()

"""A local cluster in one command (make cluster): PostgreSQL by the Patroni recipe and two gateway nodes.

    python tools/cluster.py [--data-dir data/national] [--dir /tmp/yidi-cluster] [--base-port 50061]
                            [--pg-base-port 5451] [--certs certs/dev]

Starts tools/ha.py's recipe (etcd, a PostgreSQL primary, its synchronous standby and a replica, all run by
Patroni), then two gateway nodes on loopback sharing its ledger: ``node-a`` takes the partition's lease (the
owner), ``node-b`` follows it as the standby and forwards the mutating calls it gets to the owner.  Prints how
to call them, then watches them: a node that exits (70: it lost its lease; or killed by you) is started again,
as a supervisor would, and comes back as the standby.  Ctrl-C (SIGINT) or SIGTERM stops the nodes, Patroni
and etcd, and removes the run directory.

``--base-port 0`` takes any free ports for the gateways (the tests); the PostgreSQL servers use
``--pg-base-port`` and the three ports after it (their REST APIs +100, etcd +200).
"""
from __future__ import annotations

import argparse
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

NODES = ("node-a", "node-b")
START_TIMEOUT_S = 300   # loading the 1.8M-person national data set takes a while on a busy machine


class GatewayNode:
    """One ``yidi serve`` process on the cluster's ledger; its log at run_dir/<name>.log."""

    def __init__(self, name: str, args, k: int, dsn: str, env: dict) -> None:
        self.name, self.dsn, self.env = name, dsn, env
        self.run_dir, self.certs = args.dir, os.path.abspath(args.certs)
        port = 0 if args.base_port == 0 else args.base_port + k
        metrics = 0 if args.base_port == 0 else args.metrics_base_port + k
        self.listen, self.metrics_listen = f"127.0.0.1:{port}", f"127.0.0.1:{metrics}"
        self.data_dir = os.path.abspath(args.data_dir)
        self.log = os.path.join(self.run_dir, f"{name}.log")
        self.proc: subprocess.Popen | None = None
        self.target = self.metrics_url = self.role = ""

    def start(self) -> None:
        """Start it and wait until it says SERVING (the owner) or STANDBY."""
        argv = [sys.executable, "-m", "gateway", "serve", "--certs", self.certs, "--data-dir", self.data_dir,
                "--ledger", os.path.join(self.run_dir, f"{self.name}.sqlite"), "--store", self.dsn,
                "--node-id", self.name, "--listen", self.listen, "--metrics-listen", self.metrics_listen,
                "--node-cert", os.path.join(self.certs, "nodes", f"{self.name}.pem"),
                "--node-key", os.path.join(self.certs, "nodes", f"{self.name}.key")]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
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
    a, b = nodes
    pgpass = up["pgpassfile"]
    lines = [
        f"Yidi cluster up (run directory {args.dir}; data {args.data_dir})",
        f"  PostgreSQL via Patroni + etcd: primary {up['leader']}, synchronous standby {up['sync']}, "
        f"members {', '.join(up['nodes'])}",
        f"  ledger  {up['dsn']}",
        f"          (its password is in {pgpass}: export PGPASSFILE={pgpass})",
    ]
    for node in nodes:
        role = "owner (holds the lease of partition 0)" if node.role == "SERVING" else "standby (forwards to the owner)"
        lines.append(f"  {node.name}  {node.target:<16} {role:<40} metrics {node.metrics_url}  pid {node.proc.pid}"
                     f"  log {node.log}")
    lines += [
        "",
        "Call either node (from the repo root, with .venv/bin on PATH; certificates " + args.certs + "):",
        f"  yidi --target {a.target} --caller national status      # the node's data, ledger seq and role",
        f"  yidi --target {b.target} --caller national status",
        f"  PGPASSFILE={pgpass} yidi status --store '{up['dsn']}'   # who owns the partition, until when",
        f"  yidi --target {a.target} --caller 460000 health      # SERVING: the owner (the standby says NOT_SERVING)",
        "  the README's walkthrough (Try it) works against either node with --target: a settlement sent to the",
        "  standby is performed by the owner and answered byte for byte",
        f"  curl -s {a.metrics_url} | grep -E 'yidi_partition_lease_held|yidi_forwarded_calls_total'",
        f"  kill -9 {a.proc.pid}    # the owner: {b.name} takes over within seconds; {a.name} is started again "
        "as the standby",
        "Ctrl-C stops all of it.",
    ]
    return "\n".join(lines)


def supervise(nodes: list[GatewayNode]) -> None:
    """Start again every node that exits (as a supervisor would), until a signal stops the cluster."""
    while True:
        for node in nodes:
            code = node.exited()
            if code is not None:
                print(f"{node.name} exited ({code}); starting it again", flush=True)
                try:
                    node.start()
                    print(f"{node.name} is back: {node.role} {node.target}", flush=True)
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
        nodes = [GatewayNode(name, args, k, up["dsn"], env) for k, name in enumerate(NODES)]
        for node in nodes:   # node-a first: it takes the lease
            print(f"starting {node.name} (loading {args.data_dir}) ...", flush=True)
            node.start()
        print(usage(nodes, up, args), flush=True)
        supervise(nodes)
    except Stop as why:
        print(f"{why}: stopping the gateway nodes, Patroni and etcd", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not leave half of it running
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for node in nodes:
            node.stop()
        ha.down(pg_dir)
        shutil.rmtree(args.dir, ignore_errors=True)
        print("stopped; removed " + args.dir, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"),
                        help="the reference data set both nodes load (make data)")
    parser.add_argument("--dir", default="/tmp/yidi-cluster", help="run directory (removed when stopped)")
    parser.add_argument("--base-port", type=int, default=50061, help="node-a's gRPC port, node-b's the next; 0: any")
    parser.add_argument("--metrics-base-port", type=int, default=9461, help="node-a's /metrics port, node-b's the next")
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

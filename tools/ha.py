"""A PostgreSQL cluster run by Patroni with etcd on this machine, as deploy/patroni/ describes for production.

    python tools/ha.py up [--dir D] [--nodes 3] [--base-port 5441]   start (prints one JSON line: the DSN, nodes)
    python tools/ha.py status [--dir D]                                the members as Patroni sees them
    python tools/ha.py kill-primary [--dir D]                          kill -9 the leader's Patroni and PostgreSQL
    python tools/ha.py down [--dir D]                                  stop everything, delete D

One etcd member and ``--nodes`` Patroni nodes on loopback, each with its own PostgreSQL 15 (Debian's
packages ``postgresql``, ``patroni``, ``etcd-server``); synchronous replication in Patroni's strict mode, so a
COMMIT returns only once a standby has the WAL.  The application's role and database are ``yidi``; the
password is in ``D/pgpass`` (mode 0600), which libpq and asyncpg read through ``PGPASSFILE``, so no password is
ever printed.  Run as root, PostgreSQL runs as the ``postgres`` user (it refuses root).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from gateway.pgcluster import binaries, demote, missing_reason, run_as

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "deploy", "patroni", "patroni.yml")
DEFAULT_DIR = "/tmp/yidi-ha"
_STARTED: dict[int, subprocess.Popen] = {}   # children of this process, reaped by down()


class Node:
    def __init__(self, run_dir: str, i: int, base_port: int) -> None:
        self.name = f"pg{i + 1}"
        self.pg_port = base_port + i
        self.api_port = base_port + 100 + i
        self.data_dir = os.path.join(run_dir, self.name, "data")
        self.log = os.path.join(run_dir, f"{self.name}.log")
        self.pid_file = os.path.join(run_dir, f"{self.name}.pid")

    def api(self, path: str = "/cluster", timeout: float = 1.0) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=timeout) as r:
            return json.load(r)


def missing() -> str:
    """Why the recipe cannot run here ("" when it can)."""
    why = missing_reason()
    if why:
        return why
    absent = [tool for tool in ("patroni", "etcd") if shutil.which(tool) is None]
    return f"{' and '.join(absent)} not installed: Debian packages patroni, etcd-server (make setup)" if absent else ""


def _layout(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "cluster.json"), encoding="utf-8") as f:
        return json.load(f)


def _nodes(run_dir: str) -> list[Node]:
    layout = _layout(run_dir)
    return [Node(run_dir, i, layout["base_port"]) for i in range(layout["nodes"])]


def _start(argv: list[str], log: str, pid_file: str, env: dict | None = None, owner=None) -> None:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, preexec_fn=demote(owner))
    _STARTED[proc.pid] = proc
    with open(pid_file, "w") as f:
        f.write(str(proc.pid))


def _alive(pid_file: str) -> int:
    try:
        with open(pid_file) as f:
            pid = int(f.read())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return 0


def members(run_dir: str) -> list[dict]:
    """The cluster's members (name, role, state, lag) from the first node whose REST API answers."""
    for node in _nodes(run_dir):
        try:
            return node.api()["members"]
        except OSError:
            continue
    return []


def wait_ready(run_dir: str, timeout_s: float, leader_not: str = "") -> dict:
    """Once a leader (not ``leader_not``) is running with a synchronous standby streaming: {leader, sync}."""
    deadline = time.monotonic() + timeout_s
    seen: list[dict] = []
    while time.monotonic() < deadline:
        seen = members(run_dir)
        leader = [m for m in seen if m["role"] == "leader" and m["state"] == "running" and m["name"] != leader_not]
        sync = [m for m in seen if m["role"] == "sync_standby" and m["state"] in ("running", "streaming")]
        if leader and sync:
            return {"leader": leader[0]["name"], "sync": sync[0]["name"]}
        time.sleep(0.5)
    raise SystemExit(f"the cluster did not become ready in {timeout_s:.0f} s: {seen}")


def _psql(node: Node, sql: str, owner) -> None:
    subprocess.run([os.path.join(binaries(), "psql"), "-h", "/var/run/postgresql", "-p", str(node.pg_port), "-U", "postgres",
                    "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
                   check=True, preexec_fn=demote(owner), stdout=subprocess.DEVNULL)


def up(run_dir: str, n: int, base_port: int, timeout_s: float) -> dict:
    why = missing()
    if why:
        raise SystemExit(why)
    owner = run_as()
    os.makedirs(run_dir, exist_ok=True)
    os.chmod(run_dir, 0o755)
    with open(os.path.join(run_dir, "cluster.json"), "w", encoding="utf-8") as f:
        json.dump({"nodes": n, "base_port": base_port}, f)
    etcd_client, etcd_peer = base_port + 200, base_port + 201
    _start(["etcd", "--name", "etcd1", "--data-dir", os.path.join(run_dir, "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"etcd1=http://127.0.0.1:{etcd_peer}"],
           os.path.join(run_dir, "etcd.log"), os.path.join(run_dir, "etcd.pid"))
    superuser, replication, app = (secrets.token_hex(16) for _ in range(3))
    for node in _nodes(run_dir):
        os.makedirs(os.path.dirname(node.data_dir), exist_ok=True)
        if owner is not None:
            os.chown(os.path.dirname(node.data_dir), owner.pw_uid, owner.pw_gid)
        env = {**os.environ, "PATRONI_NAME": node.name,
               "PATRONI_RESTAPI_LISTEN": f"127.0.0.1:{node.api_port}",
               "PATRONI_RESTAPI_CONNECT_ADDRESS": f"127.0.0.1:{node.api_port}",
               "PATRONI_POSTGRESQL_LISTEN": f"127.0.0.1:{node.pg_port}",
               "PATRONI_POSTGRESQL_CONNECT_ADDRESS": f"127.0.0.1:{node.pg_port}",
               "PATRONI_POSTGRESQL_DATA_DIR": node.data_dir, "PATRONI_POSTGRESQL_BIN_DIR": binaries(),
               "PATRONI_ETCD3_HOSTS": f"127.0.0.1:{etcd_client}",
               "PATRONI_SUPERUSER_PASSWORD": superuser, "PATRONI_REPLICATION_PASSWORD": replication}
        if owner is not None:
            env["HOME"] = os.path.dirname(node.data_dir)
        env_file = os.path.join(run_dir, f"{node.name}.env.json")   # for restart_node; holds the passwords
        with open(os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(env, f)
        _start(["patroni", CONFIG], node.log, node.pid_file, env, owner)
        if node.name == "pg1":  # the first bootstraps the cluster; the others clone it once it is up
            ready_deadline = time.monotonic() + timeout_s
            while time.monotonic() < ready_deadline:
                if any(m["role"] == "leader" and m["state"] == "running" for m in members(run_dir)):
                    break
                time.sleep(0.5)
    roles = wait_ready(run_dir, timeout_s)
    leader = next(node for node in _nodes(run_dir) if node.name == roles["leader"])
    _psql(leader, f"CREATE ROLE yidi LOGIN PASSWORD '{app}'", owner)
    _psql(leader, "CREATE DATABASE yidi OWNER yidi", owner)
    _psql(leader, "GRANT pg_monitor TO yidi", owner)   # to read its standbys' state and lag for /metrics
    pgpass = os.path.join(run_dir, "pgpass")
    with open(os.open(pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"127.0.0.1:*:yidi:yidi:{app}\n")
    hosts = ",".join(f"127.0.0.1:{node.pg_port}" for node in _nodes(run_dir))
    return {"dsn": f"postgresql://yidi@{hosts}/yidi?target_session_attrs=read-write", "pgpassfile": pgpass,
            **roles, "nodes": [node.name for node in _nodes(run_dir)]}


def kill_primary(run_dir: str) -> str:
    """kill -9 the leader's Patroni and its PostgreSQL (the postmaster and so its backends): a lost machine."""
    leader = next((m["name"] for m in members(run_dir) if m["role"] == "leader"), "")
    node = next(node for node in _nodes(run_dir) if node.name == leader)
    pids = [_alive(node.pid_file)]
    try:
        with open(os.path.join(node.data_dir, "postmaster.pid")) as f:
            pids.append(int(f.readline()))
    except (OSError, ValueError):
        pass
    for pid in pids:
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL) if pid == pids[0] else os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return leader


def restart_node(run_dir: str, name: str) -> None:
    """Start a killed node's Patroni again: it rejoins as a standby (pg_rewind if needed)."""
    node = next(node for node in _nodes(run_dir) if node.name == name)
    with open(os.path.join(run_dir, f"{name}.env.json"), encoding="utf-8") as f:
        env = json.load(f)
    _start(["patroni", CONFIG], node.log, node.pid_file, env, run_as())


def _kill_group(pid: int) -> None:
    """SIGKILL the process group a started process leads; none: it is gone, or died (a zombie) before it
    became a group's leader."""
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def down(run_dir: str) -> None:
    if not os.path.exists(os.path.join(run_dir, "cluster.json")):
        return
    for node in _nodes(run_dir):
        _kill_group(_alive(node.pid_file))
        try:
            with open(os.path.join(node.data_dir, "postmaster.pid")) as f:
                os.kill(int(f.readline()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    _kill_group(_alive(os.path.join(run_dir, "etcd.pid")))
    for proc in _STARTED.values():
        proc.wait()
    _STARTED.clear()
    shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "status", "kill-primary", "down"))
    parser.add_argument("--dir", default=DEFAULT_DIR)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=5441)
    parser.add_argument("--timeout-s", type=float, default=120)
    args = parser.parse_args(argv)
    if args.action == "up":
        print(json.dumps(up(args.dir, args.nodes, args.base_port, args.timeout_s)))
    elif args.action == "status":
        print(json.dumps(members(args.dir)))
    elif args.action == "kill-primary":
        print(json.dumps({"killed": kill_primary(args.dir)}))
    else:
        down(args.dir)


if __name__ == "__main__":
    sys.exit(main())

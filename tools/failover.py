"""Gateway nodes on PostgreSQL losing their owner and their database under retrying load (make failover).

    python tools/failover.py [--node-kills 3] [--pg-failovers 1] [--json FILE]

Two gateway nodes share one ledger partition by a lease (gateway/ownership.py): one owns it, the other is a
standby following it.  Clients settle without pause, each settlement retried with its request id on whichever
node answers until it is acknowledged.  Then, in turn: ``--node-kills`` times the owner is killed with
SIGKILL (the standby must take over; the killed node is started again as the new standby), and
``--pg-failovers`` times the PostgreSQL primary is killed (the Patroni recipe of tools/ha.py promotes its
synchronous standby; the nodes exit 70 and are started again, as a supervisor would).  Ends with one JSON
line:

* ``takeover_s_max`` (and every one in ``takeover_s``): from a kill of the owner to the acknowledgement of the
  first settlement sent after it (so answered by the other node); ``pg_failover_s`` the same for each kill of
  the PostgreSQL primary;
* ``acknowledged``, ``lost`` (acknowledged, but no ``settled`` record with its request id in the ledger, or
  answered differently when asked again), ``duplicated`` (request ids with more than one record);
* ``accumulator_mismatches``: persons whose accumulators differ between the owner and the standby (which
  rebuilt its state from the ledger and follows it);
* ``clearing_ok``: the insured province's position drew exactly the fund payments of the acknowledged
  settlements, and both nodes say the same of every position.

``Settler`` and ``check`` are also what tests/e2e/test_partition_lease.py runs.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import zlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "tools")]

import builders  # noqa: E402
from builders import HK_L1  # noqa: E402
from gateway._pb.yidi.v1 import funds_pb2 as fdpb, settlement_pb2 as spb  # noqa: E402
from gateway.testing import Gateway, start_gateway  # noqa: E402
from gateway_harness import file_person  # noqa: E402

HAINAN, LIAONING, NATIONAL = "460000", "210000", "national"
SETTLE = "/yidi.v1.SettlementService/OutpatientSettle"
PERSONS = tuple(f"FO-{n}" for n in range(1, 5))
RETRY_PAUSE_S = 0.05
CALL_TIMEOUT_S = 5


def settlement(request_id: str) -> spb.OutpatientSettleRequest:
    """The settlement sent under request_id, every time (person and price follow from the id)."""
    h = zlib.crc32(request_id.encode())
    return builders.outpatient(request_id, PERSONS[h % len(PERSONS)], HK_L1, price=1000 + h % 997)


def file_persons(gw: Gateway) -> None:
    liaoning = gw.client(LIAONING)
    for n, psn in enumerate(PERSONS, 1):
        file_person(liaoning, psn, f"210102198001010{60 + n}")


class Node:
    """One gateway node on the shared ledger (its own files under work_dir/name), as its supervisor sees it."""

    def __init__(self, name: str, data_dir: str, work_dir: str, url: str, *extra: str) -> None:
        self.name, self.data_dir, self.url, self.extra = name, data_dir, url, extra
        self.ledger = os.path.join(work_dir, name)
        self.gw: Gateway | None = None
        self._health: tuple[Gateway, object] | None = None   # the gateway asked and its health stub

    def start(self, role: str = "SERVING", timeout: float = 120) -> Gateway:
        self.gw = start_gateway(self.data_dir, self.ledger, "--store", self.url, "--node-id", self.name,
                                *self.extra, wait_for=role, timeout=timeout)
        return self.gw

    def alive(self) -> bool:
        return self.gw is not None and self.gw.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.gw.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.gw.proc.wait()

    def serving(self) -> bool:
        """The node's health (over its mTLS port) says SERVING: it owns the partition."""
        if not self.alive():
            return False
        if self._health is None or self._health[0] is not self.gw:
            self._health = self.gw, health_pb2_grpc.HealthStub(self.gw.channel(HAINAN))
        try:
            answer = self._health[1].Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING


class Settler:
    """Client threads settling without pause, each settlement retried with its request id until acknowledged,
    on whichever node answers (one refusing, unreachable or dead: the next)."""

    def __init__(self, nodes: list[Node], threads: int = 4, prefix: str = "fo", make=None) -> None:
        self.nodes = nodes
        self.make = make or settlement   # request id -> the settlement sent under it, every time
        self.threads = threads
        self.prefix = prefix
        self.acked: dict[str, bytes] = {}
        self.acked_by: dict[str, tuple[str, float, float]] = {}   # request id → (node, answered, sent): monotonic
        self.retries = 0
        self.refusals: collections.Counter[str] = collections.Counter()
        self._clients: dict[str, object] = {}   # by host:port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._inflight: dict[int, str] = {}   # worker → the request id it is sending

    def _client(self, gw: Gateway):
        with self._lock:
            client = self._clients.get(gw.target)
            if client is None:
                client = self._clients[gw.target] = gw.client(HAINAN)
            return client

    def settle(self, request_id: str, first: int = 0, until=None) -> bool:
        """Send until acknowledged (True) or ``until()`` says stop (False)."""
        at = first
        while until is None or not until():
            node = self.nodes[at % len(self.nodes)]
            gw = node.gw
            try:
                if gw is None or gw.proc.poll() is not None:
                    raise ConnectionError(node.name)
                rpc = self._client(gw).channel.unary_unary(SETTLE, request_serializer=lambda m: m.SerializeToString(),
                                                          response_deserializer=lambda b: b)
                sent = time.monotonic()
                answer = rpc(self.make(request_id), timeout=CALL_TIMEOUT_S)
            except (grpc.RpcError, ConnectionError, ValueError) as err:
                reason = refusal_reason(err)
                with self._lock:
                    self.retries += 1
                    self.refusals[reason] += 1
                at += 1
                time.sleep(RETRY_PAUSE_S)
                continue
            with self._lock:
                self.acked[request_id] = answer
                self.acked_by[request_id] = (node.name, time.monotonic(), sent)
            return True
        return False

    def _work(self, k: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            self._inflight[k] = f"{self.prefix}-{k}-{n}"
            self.settle(self._inflight[k], until=self._stop.is_set)

    def start(self) -> None:
        for k in range(self.threads):
            worker = threading.Thread(target=self._work, args=(k,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> list[str]:
        """Stop sending new settlements; the ones unanswered at that moment are settled to the end."""
        self._stop.set()
        for worker in self._workers:
            worker.join()
        pending = [rid for rid in self._inflight.values() if rid not in self.acked]
        for request_id in pending:
            self.settle(request_id)
        return pending

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def first_ack_sent_after(self, t: float) -> float | None:
        """When the first settlement sent after ``t`` was acknowledged (None: none yet)."""
        with self._lock:
            times = [at for _, at, sent in self.acked_by.values() if sent > t]
        return min(times) if times else None


def refusal_reason(err: BaseException) -> str:
    if isinstance(err, grpc.RpcError):
        from gateway.transport.status import reason_of

        return reason_of(err) or err.code().name
    return type(err).__name__


def settled_ids(url: str) -> collections.Counter[str]:
    import psycopg

    from gateway.store.postgresql import scan_every_partition

    with psycopg.connect(url) as conn:
        return collections.Counter(r.request_id for r in scan_every_partition(conn, url) if r.kind == "settled")


def owner_and_standby(nodes: list[Node]) -> tuple[Node, Node | None]:
    """The node that serves settlements (health SERVING) and another one alive."""
    for node in nodes:
        if node.serving():
            return node, next((n for n in nodes if n is not node and n.alive()), None)
    raise AssertionError("no node serves")


def check(url: str, settler: Settler, nodes: list[Node]) -> dict:
    """What was lost, doubled, or differs between the nodes (every answer asked again of the owner)."""
    owner, standby = owner_and_standby(nodes)
    counts = settled_ids(url)
    hainan = owner.gw.client(HAINAN)
    lost = [rid for rid, answer in settler.acked.items() if counts[rid] != 1 or hainan.raw(SETTLE, settlement(rid))
            != answer]
    duplicated = [rid for rid, n in counts.items() if n > 1]
    mismatches = 0
    if standby is not None:
        time.sleep(1)   # a poll or more: the standby has applied every record
        for psn in PERSONS:
            mismatches += _accumulators(owner, psn) != _accumulators(standby, psn)
    drawn = sum(spb.SettlementResponse.FromString(a).settlement.breakdown.fund_pay_sumamt
                for a in settler.acked.values())
    positions = [_positions(node) for node in (owner, standby) if node is not None]
    liaoning = [p for p in positions[0] if p.province == LIAONING]
    clearing_ok = bool(liaoning) and liaoning[0].drawn_fen == drawn and all(p == positions[0] for p in positions)
    return {"acknowledged": len(settler.acked), "lost": len(lost), "duplicated": len(duplicated),
            "accumulator_mismatches": mismatches, "clearing_ok": clearing_ok, "retries": settler.retries}


def _accumulators(node: Node, psn: str) -> bytes:
    client = node.gw.client(LIAONING)
    return client(client.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no=psn, year=2026)) \
        .SerializeToString(deterministic=True)


def _positions(node: Node) -> list:
    client = node.gw.client(NATIONAL)
    return list(client(client.funds.GetPositions, fdpb.GetPositionsRequest()).positions)


def kill_owner(nodes: list[Node], settler: Settler, timeout_s: float = 60) -> float:
    """kill -9 the owner; the seconds until the other node acknowledged a settlement; the killed node is started
    again as the new standby."""
    owner, standby = owner_and_standby(nodes)
    before = settler.count()
    while settler.count() < before + 10:   # under load
        time.sleep(0.02)
    owner.kill()
    killed_at = time.monotonic()
    while (first := settler.first_ack_sent_after(killed_at)) is None:
        if time.monotonic() - killed_at > timeout_s:
            raise AssertionError(f"{standby.name} did not take over:\n{standby.gw.log()[-3000:]}")
        time.sleep(0.02)
    owner.gw.stop()
    owner.start("STANDBY")
    return first - killed_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-kills", type=int, default=int(os.environ.get("NODE_KILLS", 3)))
    parser.add_argument("--pg-failovers", type=int, default=int(os.environ.get("PG_FAILOVERS", 1)))
    parser.add_argument("--json", default="", help="also write the result here")
    args = parser.parse_args()
    result = run(args.node_kills, args.pg_failovers)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f)
    print(json.dumps(result), flush=True)


def run(node_kills: int, pg_failovers: int) -> dict:
    from datagen.spec_fixture import write_spec_dataset

    work = tempfile.mkdtemp(prefix="yidi-failover-")
    data_dir = write_spec_dataset(os.path.join(work, "data"))["dir"]
    with _database(work, pg_failovers) as (url, kill_primary):
        nodes = [Node(name, data_dir, work, url) for name in ("n1", "n2")]
        try:
            nodes[0].start("SERVING")
            file_persons(nodes[0].gw)
            nodes[1].start("STANDBY")
            settler = Settler(nodes)
            settler.start()
            takeovers = [kill_owner(nodes, settler) for _ in range(node_kills)]
            pg_s = [_pg_failover(nodes, settler, kill_primary) for _ in range(pg_failovers)]
            settler.stop()
            result = {"node_kills": node_kills, "pg_failovers": pg_failovers,
                      "takeover_s_max": round(max(takeovers, default=0), 2),
                      "takeover_s": [round(t, 2) for t in takeovers],
                      "pg_failover_s": [round(t, 1) for t in pg_s], **check(url, settler, nodes)}
        finally:
            for node in nodes:
                if node.gw is not None:
                    node.gw.stop(signal.SIGKILL)
    shutil.rmtree(work, ignore_errors=True)   # kept, with the nodes' logs, when the run failed
    return result


def _pg_failover(nodes: list[Node], settler: Settler, kill_primary) -> float:
    """Kill the PostgreSQL primary under load; every node that exits (70) is started again until one serves.  The
    seconds until the first settlement sent after the kill was acknowledged."""
    before = settler.count()
    while settler.count() < before + 10:
        time.sleep(0.02)
    recover = kill_primary()
    killed_at = time.monotonic()
    deadline = killed_at + 120
    while time.monotonic() < deadline:
        for node in nodes:
            if not node.alive():
                assert node.gw.proc.returncode == 70, node.gw.log()[-3000:]
                node.gw.stop()
                try:
                    node.start("LISTENING", timeout=60)
                except RuntimeError:
                    time.sleep(1)
        first = settler.first_ack_sent_after(killed_at)
        if first is not None and settler.count() > before + 20 and any(n.serving() for n in nodes):
            recover()   # the lost server back as a standby, so that the next primary has a synchronous one
            return first - killed_at
        time.sleep(0.2)
    raise AssertionError("no node served after the PostgreSQL failover")


class _database:
    """A throwaway PostgreSQL: a plain cluster, or the Patroni recipe when primaries are to be killed."""

    def __init__(self, work: str, pg_failovers: int) -> None:
        self.work, self.patroni = work, pg_failovers > 0

    def __enter__(self):
        if self.patroni:
            import ha

            self.ha_dir = tempfile.mkdtemp(prefix="yidi-ha-")   # not under work: PostgreSQL's user must enter it
            up = ha.up(self.ha_dir, 3, 16541, timeout_s=120)
            os.environ["PGPASSFILE"] = up["pgpassfile"]   # the nodes' libpq reads the password there
            return up["dsn"], self.kill_primary
        from gateway.pgcluster import Cluster

        self.cluster = Cluster().start()
        return self.cluster.create_database("failover"), None

    def kill_primary(self):
        """kill -9 the primary's Patroni and PostgreSQL; a function that starts it again and waits until every
        server streams."""
        import ha

        name = ha.kill_primary(self.ha_dir)

        def recover() -> None:
            ha.restart_node(self.ha_dir, name)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                members = ha.members(self.ha_dir)
                if len(members) == 3 and all(m["state"] in ("running", "streaming") for m in members):
                    return
                time.sleep(0.5)
            raise AssertionError(f"{name} did not rejoin: {ha.members(self.ha_dir)}")

        return recover

    def __exit__(self, *exc) -> None:
        if self.patroni:
            import ha

            ha.down(self.ha_dir)
            shutil.rmtree(self.ha_dir, ignore_errors=True)
        else:
            self.cluster.stop()


if __name__ == "__main__":
    main()

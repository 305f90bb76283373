"""Gateway nodes on PostgreSQL losing partition owners and their database under retrying load (make failover).

    python tools/failover.py [--node-kills 3] [--pg-failovers 1] [--partitions 2] [--seed 1] [--json FILE]

The ledger is split into ``--partitions`` partitions by insured province (core/partition.py): Guangdong's
insured are partition 0, Liaoning's partition 1.  Two node machines, ``a`` and ``b``, each run one gateway
process per partition (gateway/ownership.py): ``a`` starts as partition 0's owner and partition 1's standby,
``b`` the other way round.  Client threads settle both provinces' insured without pause through all the
processes (each thread starting at another), each settlement retried with its request id on whichever process
answers until it is acknowledged (a process forwards a call of another partition to that partition's owner).
Then, in turn: ``--node-kills`` times the owner of a partition picked at random is killed with SIGKILL (that
partition's standby on the other machine must take over; the killed process is started again as the new
standby), and ``--pg-failovers`` times the PostgreSQL primary is killed (the Patroni recipe of tools/ha.py
promotes its synchronous standby; every process that exits 70 is started again, as a supervisor would).  Ends
with one JSON line:

* ``takeover_s_max`` (and every one in ``takeover_s``, and by partition in ``takeover_s_by_partition``): from
  a kill of a partition's owner to the acknowledgement of the first settlement of that partition sent after
  it (so performed by its new owner); ``pg_failover_s`` the same for each kill of the PostgreSQL primary (the
  slower partition's), ``pg_failover_s_by_partition`` each partition's, ``pg_owners_after`` which process
  owned each partition then, ``pg_restarts`` each start of a process that had exited (70), with the seconds
  since the kill (while no server takes writes a start is refused and tried again);
* ``acknowledged``, ``lost`` (acknowledged, but no ``settled`` record with its request id in the ledger, or
  answered differently when asked again), ``duplicated`` (request ids with more than one record);
* ``accumulator_mismatches``: persons whose accumulators differ between their partition's owner and its
  standby (which rebuilt its state from the ledger and follows it);
* ``clearing_ok``: each insured province's position drew exactly the fund payments of its insured's
  acknowledged settlements, and every process says the same of every position.

``Settler``, ``kill_owner`` and ``check`` are also what tests/e2e/test_partition_lease.py,
test_exact_across_nodes.py and test_partitions.py run; test_partitions.py's short form runs this layout
(``machine_nodes``, ``start_machines``) with a stalled owner and a killed one.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import glob
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import zlib

# gRPC's fork handlers can abort a child forked while other threads are inside gRPC, before it execs ("Check
# failed: next_worker->state == KICKED"): this process forks to start a killed PostgreSQL node's Patroni again
# (ha.restart_node, becoming the postgres user) under load, and the node must come back.  Read when gRPC is first
# imported (the tests import it earlier, and restart no Patroni).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "tools")]

import builders  # noqa: E402
from builders import HK_L1  # noqa: E402
from core.partition import PartitionMap  # noqa: E402
from datagen.spec_fixture import make_certno, write_spec_dataset  # noqa: E402
from gateway._pb.yidi.v1 import funds_pb2 as fdpb, settlement_pb2 as spb  # noqa: E402
from gateway.testing import Gateway, start_gateway  # noqa: E402
from gateway_harness import file_person  # noqa: E402

HAINAN, LIAONING, GUANGDONG, NATIONAL = "460000", "210000", "440000", "national"
SETTLE = "/yidi.v1.SettlementService/OutpatientSettle"
PERSONS = tuple(f"FO-{n}" for n in range(1, 5))   # Liaoning's insured filed by file_persons (one partition)
# Liaoning's insured of the spec data set filed to Hainan (partition 1 of 2), and Guangdong's two_province_dataset
# adds (partition 0 of 2).
LIAONING_PERSONS = ("P210102000001", "P210102000003")
GUANGDONG_PERSONS = ("P440100000001", "P440100000002")
MACHINES = ("a", "b")
# The Patroni recipe's ports (base…base+2, REST APIs +100, etcd +200) apart from the tests' recipes (15441, 16441,
# 17441 and theirs), so that make failover can run beside make test.
PG_BASE_PORT = 18541
RETRY_PAUSE_S = 0.05
CALL_TIMEOUT_S = 5


def settlement(request_id: str) -> spb.OutpatientSettleRequest:
    """The settlement sent under request_id, every time (person and price follow from the id)."""
    h = zlib.crc32(request_id.encode())
    return builders.outpatient(request_id, PERSONS[h % len(PERSONS)], HK_L1, price=1000 + h % 997)


def either_province(request_id: str) -> spb.OutpatientSettleRequest:
    """The settlement sent under request_id, every time: a person of either province (and a price) by the id."""
    h = zlib.crc32(request_id.encode())
    persons = LIAONING_PERSONS + GUANGDONG_PERSONS
    return builders.outpatient(request_id, persons[h % len(persons)], HK_L1, price=20000 + h % 997)


def two_province_persons() -> dict[str, str]:
    """The persons either_province settles, with their insured province."""
    return {**dict.fromkeys(LIAONING_PERSONS, LIAONING), **dict.fromkeys(GUANGDONG_PERSONS, GUANGDONG)}


def request_partition(partitions: int):
    """request id -> the partition that performs either_province's settlement under it."""
    pmap, persons = PartitionMap(partitions), two_province_persons()
    return lambda request_id: pmap.of_province(persons[either_province(request_id).psn_no])


def two_province_dataset(path) -> str:
    """The spec data set, with Guangdong's insured (and Guangzhou's policies, as Shenyang's) filed to Hainan."""
    data_dir = write_spec_dataset(path)["dir"]
    with open(os.path.join(data_dir, "policies.jsonl"), encoding="utf-8") as f:
        policies = [json.loads(line) for line in f]
    persons, filings = [], []
    for n, psn_no in enumerate(GUANGDONG_PERSONS, 1):
        persons.append({"psn_no": psn_no, "certno": make_certno(f"44010019800101{n:03d}"), "name": "广东测试",
                        "insuplc_admdvs": "440100", "insutype": "310", "person_type": "in_service",
                        "status": "active", "assistance": False, "card_no": f"G{n:07d}", "card_version": "3.0"})
        filings.append({"filing_id": f"G{n:04d}", "psn_no": psn_no, "kind": "long_term_residence",
                        "dest_admdvs": "460000", "fixmedins_codes": [], "valid_from": 20260101, "valid_to": 0,
                        "status": "active"})
    for name, rows in (("policies", [dict(p, admdvs="440100") for p in policies]), ("persons", persons),
                       ("filings", filings)):
        with open(os.path.join(data_dir, f"{name}.jsonl"), "a", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return data_dir


def file_persons(gw: Gateway) -> None:
    liaoning = gw.client(LIAONING)
    for n, psn in enumerate(PERSONS, 1):
        file_person(liaoning, psn, f"210102198001010{60 + n}")


class Node:
    """One gateway node on the shared ledger (its own files under work_dir/name), as its supervisor sees it."""

    def __init__(self, name: str, data_dir: str, work_dir: str, url: str, *extra: str) -> None:
        self.name, self.data_dir, self.url, self.extra = name, data_dir, url, extra
        self.part = int(extra[extra.index("--partition") + 1]) if "--partition" in extra else 0
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
        """The node's health (over its mTLS port) says SERVING: it owns its partition."""
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
    on whichever node answers (one refusing, unreachable or dead: the next).  Every thread starts at the first
    node, or with ``spread`` thread k at the k-th."""

    def __init__(self, nodes: list[Node], threads: int = 4, prefix: str = "fo", make=None, spread: bool = False,
                 part_of=None) -> None:
        self.nodes = nodes
        self.make = make or settlement   # request id -> the settlement sent under it, every time
        self.part_of = part_of or (lambda _request_id: 0)   # request id -> the partition that performs it
        self.spread = spread
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
            self.settle(self._inflight[k], first=k if self.spread else 0, until=self._stop.is_set)

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

    def wait_for_more(self, n: int) -> None:
        """Until ``n`` more settlements than now are acknowledged."""
        target = self.count() + n
        while self.count() < target:
            time.sleep(0.02)

    def first_ack_sent_after(self, t: float, part: int | None = None) -> float | None:
        """When the first settlement (of partition ``part``, or any) sent after ``t`` was acknowledged (None: none
        yet)."""
        with self._lock:
            sent_after = [(rid, at) for rid, (_, at, sent) in self.acked_by.items() if sent > t]
        times = [at for rid, at in sent_after if part is None or self.part_of(rid) == part]
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


def owner_and_standby(nodes: list[Node], part: int | None = None, timeout_s: float = 10) -> tuple[Node, Node | None]:
    """The node that serves settlements of partition ``part`` (health SERVING) and another one of it alive
    (``part`` None: every node is the one partition's); waits for one while none says so (a health answer slow
    on a loaded machine, a takeover under way)."""
    group = [n for n in nodes if part is None or n.part == part]
    deadline = time.monotonic() + timeout_s
    while True:
        for node in group:
            if node.serving():
                return node, next((n for n in group if n is not node and n.alive()), None)
        if time.monotonic() > deadline:
            raise AssertionError(f"no node serves partition {part}: "
                                 f"{[(n.name, n.alive(), n.gw.log()[-600:]) for n in group]}")
        time.sleep(0.1)


def check(url: str, settler: Settler, nodes: list[Node], persons: dict[str, str] | None = None) -> dict:
    """What was lost, doubled, or differs between the nodes (every answer asked again of an owner).  ``persons``:
    the persons settled, with their insured province (Liaoning's PERSONS when not given)."""
    persons = persons or dict.fromkeys(PERSONS, LIAONING)
    pmap = PartitionMap(max(n.part for n in nodes) + 1)
    pairs = {part: owner_and_standby(nodes, part) for part in sorted({n.part for n in nodes})}
    counts = settled_ids(url)
    hainan = pairs[0][0].gw.client(HAINAN)
    lost = [rid for rid, answer in settler.acked.items()
            if counts[rid] != 1 or hainan.raw(SETTLE, settler.make(rid)) != answer]
    duplicated = [rid for rid, n in counts.items() if n > 1]
    mismatches = 0
    for psn, insured in persons.items():
        owner, standby = pairs[pmap.of_province(insured)]
        if standby is not None:
            mismatches += _accumulators(owner, psn, insured) != _accumulators(standby, psn, insured)
    drawn: dict[str, int] = collections.Counter()
    for answer in settler.acked.values():
        settled = spb.SettlementResponse.FromString(answer).settlement
        drawn[settled.insuplc_admdvs[:2] + "0000"] += settled.breakdown.fund_pay_sumamt
    positions = [_positions(node) for node in nodes if node.alive()]
    by_province = {p.province: p.drawn_fen for p in positions[0]}
    clearing_ok = bool(drawn) and all(by_province.get(province) == fen for province, fen in drawn.items()) \
        and all(p == positions[0] for p in positions)
    return {"acknowledged": len(settler.acked), "lost": len(lost), "duplicated": len(duplicated),
            "accumulator_mismatches": mismatches, "clearing_ok": clearing_ok, "retries": settler.retries}


def _accumulators(node: Node, psn: str, insured: str) -> bytes:
    client = node.gw.client(insured)
    return client(client.settlement.GetAccumulators, spb.GetAccumulatorsRequest(psn_no=psn, year=2026)) \
        .SerializeToString(deterministic=True)


def _positions(node: Node) -> list:
    client = node.gw.client(NATIONAL)
    return list(client(client.funds.GetPositions, fdpb.GetPositionsRequest()).positions)


def kill_owner(nodes: list[Node], settler: Settler, part: int | None = None, timeout_s: float = 60) -> float:
    """kill -9 the owner of partition ``part`` (None: of the one partition); the seconds until a settlement of it
    sent after the kill was acknowledged (by its standby, now the owner); the killed node is started again as
    the new standby."""
    owner, standby = owner_and_standby(nodes, part)
    settler.wait_for_more(10)   # under load
    owner.kill()
    killed_at = time.monotonic()
    while (first := settler.first_ack_sent_after(killed_at, part)) is None:
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
    parser.add_argument("--partitions", type=int, default=2, choices=(1, 2),
                        help="1: one partition, owned by one machine's process, the other's its standby")
    parser.add_argument("--seed", type=int, default=1, help="which partition's owner each kill picks")
    parser.add_argument("--pg-base-port", type=int, default=PG_BASE_PORT,
                        help="the Patroni recipe's first PostgreSQL port (tools/ha.py: +100 REST APIs, +200 etcd)")
    parser.add_argument("--json", default="", help="also write the result here")
    args = parser.parse_args()
    result = run(args.node_kills, args.pg_failovers, args.partitions, args.seed, args.pg_base_port)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f)
    print(json.dumps(result), flush=True)


def machine_nodes(data_dir: str, work: str, url: str, partitions: int) -> list[Node]:
    """Each machine's process of each partition (named machine-p<part>), the owners started first: machine k
    owns partition k and stands by for the others."""
    if partitions == 1:
        return [Node(f"{machine}-p0", data_dir, work, url) for machine in MACHINES]
    nodes = [Node(f"{machine}-p{part}", data_dir, work, url, "--partitions", str(partitions), "--partition",
                  str(part)) for machine in MACHINES for part in range(partitions)]
    return sorted(nodes, key=lambda n: not _owner_at_start(n))


def start_machines(nodes: list[Node]) -> None:
    """The owners one after the other (each takes its partition's lease), then the standbys at once."""
    for node in nodes:
        if _owner_at_start(node):
            node.start("SERVING")
    with concurrent.futures.ThreadPoolExecutor() as pool:
        list(pool.map(lambda node: node.start("STANDBY"), [n for n in nodes if not _owner_at_start(n)]))


def _owner_at_start(node: Node) -> bool:
    return MACHINES.index(node.name[0]) == node.part


def run(node_kills: int, pg_failovers: int, partitions: int = 2, seed: int = 1,
        pg_base_port: int = PG_BASE_PORT) -> dict:
    work = tempfile.mkdtemp(prefix="yidi-failover-")
    data_dir = two_province_dataset(os.path.join(work, "data"))
    persons = two_province_persons()
    rng = random.Random(seed)
    with _database(work, pg_failovers, pg_base_port) as (url, kill_primary):
        nodes = machine_nodes(data_dir, work, url, partitions)
        try:
            start_machines(nodes)
            settler = Settler(nodes, prefix="fo", make=either_province, spread=True,
                              part_of=request_partition(partitions))
            settler.start()
            by_part: dict[int, list[float]] = {part: [] for part in range(partitions)}
            takeovers = []
            for _ in range(node_kills):
                part = rng.randrange(partitions)
                takeovers.append(kill_owner(nodes, settler, part))
                by_part[part].append(round(takeovers[-1], 2))
            pg = [_pg_failover(nodes, settler, kill_primary, partitions) for _ in range(pg_failovers)]
            settler.stop()
            result = {"node_kills": node_kills, "pg_failovers": pg_failovers, "partitions": partitions,
                      "takeover_s_max": round(max(takeovers, default=0), 2),
                      "takeover_s": [round(t, 2) for t in takeovers],
                      "takeover_s_by_partition": {str(p): ts for p, ts in by_part.items()},
                      "pg_failover_s": [round(max(f["s"]), 1) for f in pg],
                      "pg_failover_s_by_partition": {str(p): [round(f["s"][p], 1) for f in pg]
                                                     for p in range(partitions)},
                      "pg_owners_after": [f["owners"] for f in pg], "pg_restarts": [f["restarts"] for f in pg],
                      **check(url, settler, nodes, persons)}
        finally:
            for node in nodes:
                if node.gw is not None:
                    node.gw.stop(signal.SIGKILL)
    shutil.rmtree(work, ignore_errors=True)   # kept, with the nodes' logs, when the run failed
    return result


def _pg_failover(nodes: list[Node], settler: Settler, kill_primary, partitions: int) -> dict:
    """Kill the PostgreSQL primary under load; every node that exits (70) is started again.  For each partition
    the seconds until the first settlement of it sent after the kill was acknowledged (``s``) and the node that
    owns it then (``owners``), and each start of a node that had exited (``restarts``: the node and the seconds
    after the kill)."""
    before = settler.count()
    settler.wait_for_more(10)
    recover = kill_primary()
    killed_at = time.monotonic()
    deadline = killed_at + 120
    restarts: list[str] = []
    while time.monotonic() < deadline:
        for node in nodes:
            if not node.alive():
                assert node.gw.proc.returncode == 70, node.gw.log()[-3000:]
                restarts.append(f"{node.name}@{time.monotonic() - killed_at:.1f}")
                node.gw.stop()
                try:
                    node.start("LISTENING", timeout=60)
                except RuntimeError:
                    time.sleep(1)
        firsts = [settler.first_ack_sent_after(killed_at, part) for part in range(partitions)]
        if None not in firsts and settler.count() > before + 20 and \
                all(any(n.serving() for n in nodes if n.part == part) for part in range(partitions)):
            owners = [next(n.name for n in nodes if n.part == part and n.serving()) for part in range(partitions)]
            recover()   # the lost server back as a standby, so that the next primary has a synchronous one
            return {"s": [first - killed_at for first in firsts], "restarts": restarts, "owners": owners}
        time.sleep(0.2)
    raise AssertionError("a partition was not served after the PostgreSQL failover")


class _database:
    """A throwaway PostgreSQL: a plain cluster, or the Patroni recipe when primaries are to be killed."""

    def __init__(self, work: str, pg_failovers: int, pg_base_port: int) -> None:
        self.work, self.patroni, self.pg_base_port = work, pg_failovers > 0, pg_base_port

    def __enter__(self):
        if self.patroni:
            import ha

            self.ha_dir = tempfile.mkdtemp(prefix="yidi-ha-")   # not under work: PostgreSQL's user must enter it
            try:
                up = ha.up(self.ha_dir, 3, self.pg_base_port, timeout_s=120)
            except BaseException:   # what did start (etcd, a Patroni) is stopped
                self.__exit__()
                raise
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

            if exc and exc[0] is not None:   # the run failed: the servers' logs kept beside the nodes'
                for log in glob.glob(os.path.join(self.ha_dir, "*.log")):
                    shutil.copy(log, os.path.join(self.work, "patroni-" + os.path.basename(log)))
            ha.down(self.ha_dir)
            shutil.rmtree(self.ha_dir, ignore_errors=True)
        else:
            self.cluster.stop()


if __name__ == "__main__":
    main()

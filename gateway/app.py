"""The gateway's state and the one path every mutating request takes.

``Gateway.execute_many(caller, [(command, digest), ...])`` — one loop, one
ledger group (one transaction), for one command or a batch:

1. idempotency (``keys.Keys``): a key seen before answers with its first
   answer, byte for byte; the same key with another request is refused;
2. perform (``Engine.perform``): decide the event and the result, or a
   refusal that changes nothing (a refused item does not affect its
   neighbours), and apply the event to memory;
3. make the record: the event's body and the reply (``encode_reply``, given
   by the transport);
4. submit every record of the batch as one group, and answer only once it
   is durable.

Between the first decision and the submit nothing awaits, so records are
numbered and committed in exactly the order they were applied.  app.py
builds no protobuf message and imports nothing of the transport: results are
encoded by the function the server hands it (``convert.encode_reply``).
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Callable, NoReturn, Sequence

from core import Index, events, plain_outpatient, settle_outpatients
from core.archive import ArchivedProblem, ArchivedSettlement, ArchivedVisit, Change, MemoryArchive, Overlay
from core.access import NATIONAL, authorize
from core.commands import Command, Decision, LoadReferenceData, ReferenceResult, ReportProblem, Reverse
from core.engine import ApplyFailed, Engine, EngineState
from core.errors import YidiError
from core.events import REVERSED_KIND, ReferenceLoaded
from core.limits import check_id
from core.partition import PartitionMap, part_of_seq
from core.problems import GATEWAY
from core.settlement import check_reversal, reversal

from .store import chain, snapshot
from .operations import metrics
from .config import Config
from .partitions import every_partition, partition_of
from .reads import Reads
from .store.idempotency import ELSEWHERE, ELSEWHERE_RETRY_MS, REVERSED, Keys, Looked, Prior, key_hash, reused
from .store import (GroupCommitLedger, LedgerClosed, LedgerCorrupt, LedgerFatal, Record, SnapshotStore, StorageDown, Store,
                    is_postgresql)

log = logging.getLogger("yidi.gateway")

Item = tuple[Command, bytes]   # a command and the digest of the request it came from
Outcome = bytes | YidiError

# The caller's deadline for this call (event-loop time), set by transport/services/base.py; None: no deadline.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("yidi_deadline", default=None)
# Where execute() notes the last record a call made (event key, seq), for the audit log; set per call by base.py.
NOTED: contextvars.ContextVar[list | None] = contextvars.ContextVar("yidi_noted", default=None)


def storage_unavailable() -> YidiError:
    return YidiError("STORAGE_UNAVAILABLE")


def ledger_damaged() -> YidiError:
    return YidiError("LEDGER_DAMAGED")


def check_deadline() -> None:
    """DEADLINE_EXCEEDED if the caller's deadline has passed: a request it no longer waits for is not performed."""
    deadline = DEADLINE.get()
    if deadline is not None and asyncio.get_running_loop().time() >= deadline:
        raise YidiError("DEADLINE_EXCEEDED")


@dataclass(slots=True)
class LoadedState:
    """What a (re)build produces: swapped in whole, never half."""

    engine: Engine
    data_dir: str
    loaded_at_unix_ms: int
    applied_seq: int = 0        # the last ledger record applied (start-up)
    applied_chain: bytes = b""  # and its chain value


class StoreArchive:
    """The durable archive: the store's tables (changes reach them with the ledger records)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def visit(self, mdtrt_id: str) -> ArchivedVisit | None:
        return self.store.visit(mdtrt_id)

    def settlement(self, setl_id: str) -> ArchivedSettlement | None:
        return self.store.settlement(setl_id)

    def problem(self, problem_id: str) -> ArchivedProblem | None:
        return self.store.problem(problem_id)

    def reply(self, seq: int) -> bytes | None:
        record = self.store.read(seq)
        return None if record is None else record.response

    def record(self, changes: list[Change], seq: int) -> None:
        """Already durable (replay at start-up): nothing to keep."""


def data_dir_of(store: Store, default: str) -> str:
    """The data set to load: the last one the national operator loaded, else the default."""
    record = store.last_reference_load()
    return events.decode(record.body).data_dir if record is not None else default


IMAGE_NAME = ".yidi-index.img"
# At most about this long of start-up spent moving the index into huge pages (Index.use_huge_pages): ~0.1-1 s
# for the 1.8M-person set on the project's machines; what is left the kernel moves in the background.
HUGE_PAGE_BUDGET_S = 1.0
# The background verification's nice value: it runs on the other core, after the settlements.
VERIFY_NICE = 10
DATA_FILES = ("manifest.json", "regions.jsonl", "institutions.jsonl", "catalog.jsonl", "policies.jsonl",
              "persons.jsonl", "filings.jsonl", "voucher_keys.jsonl")


def data_fingerprint(data_dir: str) -> str:
    """Names, sizes and modification times of a data set's files: any change makes a new fingerprint."""
    parts = []
    for name in DATA_FILES:
        try:
            st = os.stat(os.path.join(data_dir, name))
        except FileNotFoundError:
            continue
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def load_index(config: Config, data_dir: str, progress: Callable[[str, int], None] | None = None) -> Index:
    """The reference data set: from its binary image when one was written for exactly these files, else
    parsed from the JSON Lines (and the image written beside them for the next start); its tables in huge
    pages."""
    index = _index_from_files(config, data_dir, progress)
    begin = time.monotonic()
    moved = index.use_huge_pages(HUGE_PAGE_BUDGET_S)
    log.info("reference data: %.0f MiB moved to huge pages in %.2f s", moved / 2**20, time.monotonic() - begin)
    return index


def _index_from_files(config: Config, data_dir: str, progress: Callable[[str, int], None] | None) -> Index:
    image = os.path.join(data_dir, IMAGE_NAME)
    fingerprint = data_fingerprint(data_dir)
    index = Index(accepted_card_versions=config.accepted_card_versions)
    if os.path.exists(image):
        try:
            index.load_image(image, fingerprint)
            log.info("reference data from its image %s", image)
            return index
        except (ValueError, OSError) as err:
            log.info("reference data image %s not used (%s); parsing the JSON Lines", image, err)
            index = Index(accepted_card_versions=config.accepted_card_versions)
    index.load_dir(data_dir, progress)
    try:
        index.save_image(image, fingerprint)
    except OSError as err:  # a read-only data set: start from the JSON Lines every time
        log.info("reference data image not written (%s)", err)
    return index


def build_state(config: Config, store: Store, keys: Keys, data_dir: str,
                snapshots: SnapshotStore,
                progress: Callable[[str, int], None] | None = None) -> tuple[LoadedState, int]:
    """Reference data + the newest valid snapshot + the ledger's tail (blocking).

    Returns the state and the seq of the snapshot used (0: none, full replay).
    """
    index = load_index(config, data_dir, progress)
    durable = StoreArchive(store)
    if not store.archive_complete():
        # A ledger written before the archive existed: replay it all, keeping the archive in memory, then store it.
        memory = MemoryArchive()
        engine, after = Engine(index, memory), 0
        replayed, last_chain = _replay(engine, store, keys, 0, progress)
        store.write_archive(memory.visits.values(), memory.settlements.values())
        log.info("archive of %d visits and %d settlements built from the ledger",
                 len(memory.visits), len(memory.settlements))
    else:
        snap = snapshots.newest(store.last_seq(), store.key)
        if snap is not None and snap.chain:
            chain.check_head(store.path, chain.Head(snap.seq, snap.chain), store.last_seq(), store.chain_at,
                             f"snapshot {snapshots.path(snap.seq)}")
        engine = Engine.restore(index, snap.engine, durable) if snap is not None else Engine(index, durable)
        after = snap.seq if snap is not None else store.base_seq
        replayed, last_chain = _replay(engine, store, keys, after, progress)
    engine.archive = Overlay(durable)
    log.info("state rebuilt: snapshot at seq %d, %d ledger records replayed after it", after, replayed)
    return LoadedState(engine, os.path.abspath(data_dir), int(time.time() * 1000), after + replayed,
                       last_chain), after


def apply_replayed(engine: Engine, keys: Keys, store: Store, record: Record, last_seq: int, previous: bytes) -> bytes:
    """Apply the durable record that follows ``last_seq`` (whose chain value is ``previous``) to memory, after
    proving it comes next and links to it (its checksum and chain value), and remember its keys; its chain value.
    Start-up's replay and a standby following its owner (gateway/ownership.py) read the ledger through it."""
    if record.seq != last_seq + 1:
        raise chain.LedgerCorrupt(store.path, last_seq + 1, f"is missing (the next is {record.seq})")
    linked = chain.check_record(store.path, record, previous, store.key)
    engine.apply(events.decode(record.body), record.seq)
    if record.request_id:
        keys.remember(record.caller, record.request_id, record.digest, record.seq)
    if record.kind == REVERSED_KIND:
        keys.remember(record.caller, record.key, REVERSED, record.seq)
    return linked


def _replay(engine: Engine, store: Store, keys: Keys, after: int,
            progress: Callable[[str, int], None] | None) -> tuple[int, bytes]:
    """Apply the records after seq ``after``, verifying each one's checksum and chain link first; how many, and
    the chain value of the last."""
    replayed = 0
    previous = store.chain_at(after)
    if previous is None:
        raise chain.LedgerCorrupt(store.path, after, "is missing (a snapshot was taken there)")
    for record in store.scan(after):
        previous = apply_replayed(engine, keys, store, record, after + replayed, previous)
        replayed += 1
        if progress is not None and replayed % 100_000 == 0:
            progress("ledger", replayed)
    if progress is not None:
        progress("ledger", replayed)
    return replayed, previous


def build_reloaded(config: Config, store: Store, data_dir: str,
                   state: EngineState) -> tuple[LoadedState, ReferenceLoaded]:
    """A new reference data set with the current mutable state restored onto it, and the event recording it
    (blocking)."""
    data_dir = os.path.abspath(data_dir)
    engine, event = Engine.reloaded(state, load_index(config, data_dir), data_dir, Overlay(StoreArchive(store)))
    return LoadedState(engine, data_dir, int(time.time() * 1000)), event


def _spawn_niced(argv: list[str], nice: int, env: dict | None = None) -> tuple[int, bytes, bytes]:
    """Run argv at a lower priority; (exit status, stdout, stderr).

    Started with posix_spawn (``close_fds=False``; every descriptor of Python and gRPC is close-on-exec, so
    nothing leaks), never fork(): a fork while gRPC's threads are busy can deadlock them (seen as TLS
    handshakes that never finish while the certificate fetcher of gateway/security/tls.py is being asked), and the
    event loop's own subprocess support (uvloop, libuv) forks.
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            close_fds=False, env=env)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, proc.pid, nice)   # the settlements come first
    out, err = proc.communicate()
    return proc.returncode, out, err



class _ItemLoop:
    """One execute_many's items, decided and applied in order: each item's outcome, the records made, and the
    request ids met so far (a twin in the same batch answers as its first)."""

    def __init__(self, gw: Gateway, caller: str, items: Sequence[Item], looked: Looked | None,
                 methods: Sequence[str] | None, hashes: Sequence[bytes]) -> None:
        self.gw, self.caller, self.items, self.looked, self.methods = gw, caller, items, looked, methods
        self.hashes = hashes   # each item's key_hash
        self.engine = gw.state.engine
        self.outcomes: list[Outcome | Prior | int | None] = [None] * len(items)
        self.records: list[Record] = []
        self.record_hashes: list[bytes] = []   # each record's key_hash
        self.seen: dict[str, tuple[bytes, int]] = {}  # request_id -> (digest, item) within this batch
        self.base = gw.ledger.next_seq
        self.stashed: tuple[int, Prior | int | YidiError] | None = None   # an item's earlier answer, found ahead

    def run(self) -> None:
        i = 0
        while i < len(self.items):
            new = self._new_plain_outpatients(i)
            if new:
                i = self._settle_in_core(i, new)
            else:
                self._one(i)
                i += 1

    def _new_plain_outpatients(self, i: int) -> int:
        """How many items from i on are plain outpatient settlements new to the ledger (the core settles them);
        the earlier answer of the item that ends the run, if it has one, is kept for its turn."""
        n, self.stashed = 0, None
        for j in range(i, len(self.items)):
            command, digest = self.items[j]
            if not plain_outpatient(command):
                break
            try:
                earlier = self.gw._earlier(self.caller, command, digest, self.seen, self.looked, self.hashes[j])
            except YidiError as err:
                earlier = err
            if earlier is not None:
                self.stashed = (j, earlier)
                break
            self.seen[command.request_id] = (digest, j)
            n += 1
        return n

    def _settle_in_core(self, i: int, n: int) -> int:
        """Items i .. i+n-1 through the core's settle loop, and an item it hands back on the Python path; the
        index of the next item to take (the items after the one handed back are met again at their turn)."""
        try:
            records = settle_outpatients(self.engine, self.caller, list(self.items[i:i + n]),
                                         self.base + len(self.records), self.methods is not None,
                                         self._admit_outpatient, Record)
        except ApplyFailed as exc:
            self.gw._diverged(exc.event, exc.__cause__ or exc)
        for j, record in enumerate(records, i):
            self.outcomes[j] = record.response
        self.records.extend(records)
        self.record_hashes.extend(self.hashes[i:i + len(records)])
        if len(records) == n:
            return i + n
        back = i + len(records)
        for j in range(back + 1, i + n):
            self._forget(j)
        self._one(back, checked=True)
        return back + 1

    def _admit_outpatient(self, command: Command) -> None:
        """After the core authorized the item (OutpatientSettle's rule, when it comes with its method)."""
        self.gw._check_partition(self.engine, command)
        check_deadline()

    def _one(self, i: int, checked: bool = False) -> None:
        """Item i on the Python path (``checked``: it is known to be new, and noted in ``seen``)."""
        command, digest = self.items[i]
        try:
            if self.methods is not None:
                authorize(self.methods[i], self.caller, command, self.engine.owners)
        except YidiError as err:
            self.outcomes[i] = err
            if checked:
                self._forget(i)
            return
        try:
            if not checked:
                self.outcomes[i] = self._earlier(i)
                if self.outcomes[i] is not None:
                    return
                self.seen[command.request_id] = (digest, i)
            self.gw._check_partition(self.engine, command)
            check_deadline()  # the last moment before this item changes anything
            self.records.append(self.gw._perform(self.engine, self.caller, command, digest,
                                                 self.base + len(self.records)))
            self.record_hashes.append(self.hashes[i])
        except YidiError as err:
            self.outcomes[i] = err
            return
        except StorageDown as err:   # a read the decision needed failed (a database server lost): nothing changed
            log.error("%s", err)
            self.outcomes[i] = storage_unavailable()
            return
        self.outcomes[i] = self.records[-1].response

    def _earlier(self, i: int) -> Prior | int | None:
        if self.stashed is not None and self.stashed[0] == i:
            earlier = self.stashed[1]
            self.stashed = None
            if isinstance(earlier, YidiError):
                raise earlier
            return earlier
        command, digest = self.items[i]
        return self.gw._earlier(self.caller, command, digest, self.seen, self.looked, self.hashes[i])

    def _forget(self, i: int) -> None:
        rid = self.items[i][0].request_id
        if self.seen.get(rid, (b"", -1))[1] == i:
            del self.seen[rid]


class Gateway:
    def __init__(self, config: Config, store: Store, on_fatal: Callable[[BaseException], None],
                 encode_reply: Callable[[object], bytes], audit=None, snapshots: SnapshotStore | None = None) -> None:
        self.config = config
        self.encode_reply = encode_reply   # a command's result → the reply's bytes (the transport's)
        self.audit = audit
        self.admission = None   # gateway.security.admission.Admission, set by the server
        self.watchdog = None    # gateway.operations.watchdog.LoopWatchdog, set by the server
        self.health = None      # gateway.operations.health.Health, set by the server
        self.ownership = None   # gateway.ownership.Ownership on PostgreSQL (set by the server); None: the only node
        self.partitions = PartitionMap(config.partitions)   # the ledger's split by insured province (core/partition.py)
        self._storage_down: str | None = None  # why the ledger cannot be written now (a failed test write)
        self._probed = False   # the first test write after start has been tried: until then, NOT_READY
        self._damaged: str | None = None       # why the ledger failed a proof after start: serve nothing from it
        self.on_damaged: Callable[[], None] | None = None   # set by the server: health NOT_SERVING
        self.verified = ""   # what the background verification said, once it has
        self.store = store
        self.on_fatal = on_fatal
        self.ledger = GroupCommitLedger(store, max_batch=config.ledger_max_batch, on_fatal=on_fatal)
        if self.partitions.n > 1:   # persons filed by RPC routed for the other partitions' nodes (PostgreSQL)
            store.split = True
        # several partitions: one key decided in one partition at a time, claimed in the ledger first
        self.keys = Keys(store, config.idempotency_cache_keys, claiming=self.partitions.n > 1)
        self.reads = Reads(self, store)   # what the services read of the projections
        self.snapshots = snapshots if snapshots is not None else snapshot.Snapshots(config.snapshot_dir())
        self.state: LoadedState | None = None
        self.snapshot_seq = 0
        self._paused = False  # while reference data is being swapped
        self._records_since_snapshot = 0
        self._snapshot_task: asyncio.Task | None = None
        self._snapshot_lock = asyncio.Lock()   # one snapshot written at a time
        self._last_snapshot: tuple[int, str, int] | None = None   # (seq, path, bytes) of the newest written
        self._background: set[asyncio.Task] = set()   # strong references until done

    @property
    def engine(self) -> Engine:
        self.require_ready()
        return self.state.engine

    @property
    def storage_writable(self) -> bool:
        """False while the ledger cannot be written (a failed test write or commit): STORAGE_UNAVAILABLE."""
        return self._storage_down is None and self.ledger.failed is None

    def require_ready(self) -> None:
        if self._damaged is not None:
            raise ledger_damaged()
        if self._storage_down is not None or self.ledger.failed is not None:
            raise storage_unavailable()
        if self.state is None or self._paused or not (self._probed or self.standby):
            raise YidiError("NOT_READY", why="结算网关正在加载数据")

    @property
    def standby(self) -> bool:
        """A node following the partition's owner (it answers reads, refuses mutations)."""
        return self.ownership is not None and not self.ownership.owner

    def role(self) -> tuple[str, list[int]]:
        """This node's role ("single", "owner" or "standby") and the ledger partitions it owns now."""
        if self.ownership is None:
            return "single", []
        if self.ownership.owns():
            return "owner", [self.store.part]
        return "standby", []

    def require_owner(self) -> None:
        """NOT_PARTITION_OWNER unless this node owns the ledger partition now (always, when it is the only node)."""
        if self.ownership is not None and not self.ownership.owns():
            raise YidiError("NOT_PARTITION_OWNER", part=self.store.part, owner=self.ownership.holder_address() or "未知")

    async def wait_writable(self) -> None:
        """Until a test write succeeds (a full disk, a failing fsync): STORAGE_UNAVAILABLE, probing meanwhile."""
        while True:
            try:
                await asyncio.to_thread(self.store.probe)
            except OSError as err:   # Log.probe: StorageDown
                self._probed = True
                if self._storage_down is None:
                    log.error("ledger %s cannot be written (%s): NOT_SERVING, answering STORAGE_UNAVAILABLE, "
                              "probing every %.1f s", self.store.path, err, self.config.storage_probe_interval_s)
                self._storage_down = str(err)
                await asyncio.sleep(self.config.storage_probe_interval_s)
                continue
            if self._storage_down is not None:
                log.info("ledger %s can be written again", self.store.path)
            self._storage_down = None
            self._probed = True
            return

    async def rebuild(self, progress: Callable[[str, int], None] | None = None) -> None:
        """Start-up: rebuild the state from reference data, the newest snapshot and the ledger's tail."""
        data_dir = data_dir_of(self.store, self.config.data_dir)
        self.state, self.snapshot_seq = await asyncio.to_thread(
            build_state, self.config, self.store, self.keys, data_dir, self.snapshots, progress)
        if self.ownership is None:   # else once this node owns the partition (gateway/ownership.py)
            self.start_ledger()

    def start_ledger(self) -> None:
        self.ledger.start()
        self._records_since_snapshot = self.ledger.next_seq - 1 - self.snapshot_seq

    async def report_start_up(self) -> None:
        """Once the ledger takes writes after start: problem reports of what start-up found (the note a fatal exit
        left, snapshots that failed their proof)."""
        await self._report_fatal_note()
        for path, why in self.snapshots.rejected:
            await self.report_internal("snapshot", GATEWAY, uuid.uuid4().hex[:16],
                                       f"快照文件 {path} 未通过校验（{why}），未被使用，状态已按账本重建。"
                                       "请运维核查该文件为何被改动。")
        self.snapshots.rejected.clear()

    # ------------------------------------------------- the ledger's proofs after start
    async def damaged(self, err: LedgerCorrupt, where: str) -> None:
        """A proof failed once serving: one problem report, then nothing more is served from this ledger."""
        if self._damaged is not None:
            return
        correlation_id = uuid.uuid4().hex[:16]
        log.critical("ledger damaged (%s): %s; NOT_SERVING, answering LEDGER_DAMAGED until the ledger is restored",
                     where, err)
        await self.report_internal(where, GATEWAY, correlation_id,
                                   f"账本校验未通过（{where}）：{str(err)[:400]}。网关已停止办理业务（NOT_SERVING），"
                                   f"请运维核查并恢复账本。差错编号 {correlation_id}。")
        self._damaged = str(err)
        if self.on_damaged is not None:
            self.on_damaged()

    def verify_after_start(self) -> None:
        """Prove what start-up did not read, in a process of its own (gateway/store/*/verify.py), in the background."""
        task = asyncio.get_running_loop().create_task(self._verify())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _verify(self) -> None:
        argv = [sys.executable, "-m", "gateway", "verify-ledger", self.store.path, "--live",
                "--key", self.config.seal_key, "--snapshots", self.config.snapshot_dir()]
        env = None
        if is_postgresql(self.config.store_url()):   # a URL's password goes by environment, never in argv
            password = urllib.parse.urlsplit(self.config.store_url()).password
            env = dict(os.environ, PGPASSWORD=urllib.parse.unquote(password)) if password else None
        started = time.perf_counter()
        returncode, out, err = await asyncio.to_thread(_spawn_niced, argv, VERIFY_NICE, env)
        said = (out or err).decode("utf-8", "replace").strip().splitlines()
        line = said[-1] if said else f"exit {returncode}"
        if returncode == 0:
            self.verified = line
            log.info("ledger verified in %.1f s in the background: %s", time.perf_counter() - started, line)
        elif line.startswith("NOT OK: "):
            await self.damaged(LedgerCorrupt(self.store.path, 0, line[len("NOT OK: "):]), "background verification")
        else:
            log.error("the background verification of %s could not run: %s", self.store.path, line)

    # --------------------------------------------------------- mutation
    async def execute(self, caller: str, command: Command, digest: bytes) -> bytes:
        """Run one mutating request exactly once (SPEC §6); its answer once it is durable."""
        if self.store.part and every_partition(command):
            # every partition records its copy of a clearing calendar's change (or a reference data load) under
            # the same request id: keyed apart, since the idempotency index is shared (caller, request_id) and
            # partition 0's keeps the key
            caller = f"{caller}#p{self.store.part}"
        if type(command) is LoadReferenceData:
            return await self._reload(caller, command, digest)
        if type(command) is Reverse:
            looked, held = await self._claim_reversal(caller, command, digest)
            try:
                # decided from what memory and the ledger hold now: no await may come between (read_index=False)
                command = await self._reverse_target(caller, command, looked)
                outcome = (await self.execute_many(caller, [(command, digest)], read_index=False, looked=looked))[0]
            finally:
                self.keys.unhold(held)
        else:
            outcome = (await self.execute_many(caller, [(command, digest)]))[0]
        if isinstance(outcome, YidiError):
            raise outcome
        return outcome

    async def execute_many(self, caller: str, items: Sequence[Item], read_index: bool = True,
                           methods: Sequence[str] | None = None, looked: Looked | None = None) -> list[Outcome]:
        """A batch: one loop, one ledger group.  Each item gets its answer or its own refusal.

        Items are decided and applied in order (an item sees the ones before it: fees uploaded by
        one item are settled by the next); their records are submitted together and every answer
        waits until the whole group is durable.  ``read_index``: ask the ledger for the keys memory does not
        hold off the loop first (else on the loop, with no await before the decisions).  ``methods``: each
        item's unary RPC, whose rule (SPEC §9) authorizes it at its turn, once the items before it are applied
        (an item may name the stay an earlier one opened); None: the caller authorized them already.
        Runs of plain outpatient settlements are settled by the core in one call each (core/settle.pxi).
        """
        self.require_ready()
        self.require_owner()
        # ``looked``: what the ledger said of the keys when not asked here (a reversal's, see _claim_reversal).
        # The ledger is asked for keys memory does not hold on the look-up thread; from here to the submit
        # nothing awaits, so the seqs and the engine's state read below hold for the whole loop.
        hashes = [key_hash(caller, command.request_id) for command, _ in items]
        looked, held = (await self.keys.read_index(caller, [command.request_id for command, _ in items], hashes,
                                                   [digest for _, digest in items])
                        if read_index else (looked, []))
        try:
            self.require_ready()
            self.require_owner()
            loop = _ItemLoop(self, caller, items, looked, methods, hashes)
            loop.run()
            if loop.records:
                await self._submit(caller, loop.records, loop.record_hashes, held)
        finally:
            self.keys.unhold(held)
        return [await self._resolve(outcome, loop.outcomes) for outcome in loop.outcomes]

    def _check_partition(self, engine: Engine, command: Command) -> None:
        """WRONG_PARTITION for a command of another partition than this node's (an item of a batch or stream: a
        single call is forwarded to its partition's owner before it gets here)."""
        if self.partitions.n == 1 or every_partition(command):
            return
        part = partition_of(engine.index, self.partitions, command)
        if part is not None and part != self.store.part:
            raise YidiError("WRONG_PARTITION", part=part, mine=self.store.part)

    def _earlier(self, caller: str, command: Command, digest: bytes, seen: dict[str, tuple[bytes, int]],
                 looked: Looked | None, h: bytes) -> Prior | int | None:
        """An earlier answer to this request (or the index of its twin in this batch), None if it is new."""
        check_id(command.request_id, "请求ID request_id", "INVALID_REQUEST_ID", "request_id")
        twin = seen.get(command.request_id)
        if twin is not None:
            if twin[0] != digest:
                raise reused(command.request_id)  # worded as when the first is durable: a replay reads the same
            return twin[1]
        return self.keys.lookup(caller, command.request_id, digest, looked, h)

    async def _submit(self, caller: str, records: list[Record], hashes: list[bytes] | None = None,
                      held: list | None = None) -> None:
        """Submit applied records as one group and wait until it is durable; ``hashes``: each record's key_hash,
        if the caller has them; ``held``: the claimed keys the call holds, left (and emptied) once the records
        are begun, so that only the keys that got none are released (the others are reaped once recorded)."""
        try:
            durable = self.ledger.submit(records)
        except (LedgerFatal, LedgerClosed):
            raise storage_unavailable() from None
        for i, record in enumerate(records):
            self.keys.begin(caller, record.request_id, record.digest, record.response, durable, record.seq,
                            hashes[i] if hashes is not None else None)
            if record.kind == REVERSED_KIND:
                self.keys.begin(caller, record.key, REVERSED, record.response, durable, record.seq)
        durable.add_done_callback(lambda fut: self._durable(fut, caller, records))
        if held:
            self.keys.unhold(held)
            held.clear()
        noted = NOTED.get()
        if noted is not None:
            noted.append((records[-1].key, records[-1].seq))   # the audit line names the last (a batch's: one line)
        try:
            await asyncio.shield(durable)
        except LedgerFatal:
            raise storage_unavailable() from None

    def _perform(self, engine: Engine, caller: str, command: Command, digest: bytes, seq: int) -> Record:
        """Decide and apply a command and make its record.  A refusal (YidiError) changes nothing; a failure
        once the event is being applied is a bug: memory may now differ from the ledger."""
        try:
            decision, changes = engine.perform(command, seq)
        except ApplyFailed as exc:
            self._diverged(exc.event, exc.__cause__ or exc)
        return self._record(caller, command, digest, decision, changes, seq)

    def _record(self, caller: str, command: Command, digest: bytes, decision: Decision, changes: list,
                seq: int) -> Record:
        """The record of an applied decision: the event's body, the reply's bytes and the archive changes."""
        event = decision.event
        try:
            return Record(kind=event.kind, caller=caller, request_id=command.request_id, digest=digest,
                          key=event.key, body=events.encode(event), response=self.encode_reply(decision.result),
                          seq=seq, changes=tuple(changes))
        except Exception as exc:
            self._diverged(event, exc)

    def _diverged(self, event: events.Event, exc: BaseException) -> NoReturn:
        log.critical("apply failed for a %s event; restarting to rebuild from the ledger", event.kind)
        self._leave_fatal_note(event, exc)
        self.on_fatal(exc)
        raise exc

    # ------------------------------------------------- internal failures → problem reports
    async def report_internal(self, method: str, caller: str, correlation_id: str, text: str = "") -> bool:
        """Open a problem report (报错处理) for an internal failure; True once it is recorded.

        A failure here is logged and goes no further: it never opens a report of its own.
        """
        try:
            province = caller if caller and caller not in (NATIONAL, GATEWAY) else ""
            command = ReportProblem(
                request_id=f"internal-{correlation_id}", reporter=GATEWAY, category="internal_error",
                text=text or f"{method} 内部错误，差错编号 {correlation_id}（调用方 {caller or '未知'}）。",
                province=province, at_ms=int(time.time() * 1000))
            digest = hashlib.blake2b(correlation_id.encode(), digest_size=16).digest()
            await self.execute(GATEWAY, command, digest)
            return True
        except YidiError as err:   # refused as any call would be now (the ledger closing or down): no bug
            log.error("could not open a problem report for internal error %s: %s", correlation_id, err.reason)
            return False
        except Exception:
            log.exception("could not open a problem report for internal error %s", correlation_id)
            return False

    def fatal_note_path(self) -> str:
        return self.config.ledger_path() + ".fatal.json"

    def leave_fatal_note(self, what: str) -> None:
        """Before the process ends on purpose: a note from which the restarted gateway opens a problem report.

        ``what`` says what failed, for the operator (no request data: it may be called from any thread)."""
        note = {"correlation_id": uuid.uuid4().hex[:16], "what": what[:500], "at_ms": int(time.time() * 1000)}
        try:
            tmp = self.fatal_note_path() + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(note, f, ensure_ascii=False)
            os.replace(tmp, self.fatal_note_path())
        except OSError:
            log.exception("could not leave a note of the failure")

    def _leave_fatal_note(self, event: events.Event, exc: BaseException) -> None:
        self.leave_fatal_note(f"账本记录应用失败（{event.kind} {event.key}：{exc!r}）")

    async def _report_fatal_note(self) -> None:
        try:
            with open(self.fatal_note_path(), encoding="utf-8") as f:
                note = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            log.exception("unreadable note of a failure at %s", self.fatal_note_path())
            return
        text = f"{note.get('what')}，网关已重启并按账本重建状态。差错编号 {note.get('correlation_id')}。"
        if await self.report_internal("restart", GATEWAY, str(note.get("correlation_id")), text):
            os.remove(self.fatal_note_path())

    def report_stall(self, seconds: float, where: str) -> None:
        """The event loop answered again after a stall (gateway/operations/watchdog.py): a problem report, in the background."""
        correlation_id = uuid.uuid4().hex[:16]
        text = (f"结算网关事件循环停顿 {seconds:.1f} 秒，期间所有请求无应答（健康检查端口显示 NOT_SERVING）。"
                f"停顿位置：{where[:300]}。差错编号 {correlation_id}。")
        task = asyncio.get_running_loop().create_task(self.report_internal("event_loop", GATEWAY, correlation_id, text))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _durable(self, fut: asyncio.Future, caller: str, records: list[Record]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the ledger is fatal: the process restarts
        for record in records:
            self.keys.durable(caller, record.request_id, record.seq)
            if record.kind == REVERSED_KIND:
                self.keys.durable(caller, record.key, record.seq)
        metrics.count_records(records)
        self.state.engine.archive.trim(records[-1].seq)
        self._records_since_snapshot += len(records)
        if (self._records_since_snapshot >= self.config.snapshot_every_records
                and (self._snapshot_task is None or self._snapshot_task.done())):
            self._snapshot_task = asyncio.get_running_loop().create_task(self.take_snapshot())

    async def _resolve(self, outcome, outcomes: list) -> Outcome:
        if isinstance(outcome, int):  # the twin of an earlier item in this batch
            outcome = outcomes[outcome]
        if isinstance(outcome, Prior):
            try:
                return await self.keys.answer(outcome)
            except YidiError as err:
                return err
            except LedgerFatal:
                return storage_unavailable()
        return outcome

    # ------------------------------------------------------------- 冲正
    async def _claim_reversal(self, caller: str, command: Reverse, digest: bytes) -> tuple[Looked | None, list]:
        """A ledger of several partitions: a reversal's own key and its original's claimed (the original's as
        reversed) and looked up before it is decided, as execute_many does for any call: an original performed in
        another partition at the same moment is found there, or refused there, never recorded twice."""
        if self.partitions.n == 1:
            return None, []
        ids = [command.request_id, command.original_request_id]
        return await self.keys.read_index(caller, ids, [key_hash(caller, r) for r in ids], [digest, REVERSED])

    async def _reverse_target(self, caller: str, command: Reverse, looked: Looked | None = None) -> Reverse:
        """What the original request did (its settlement or admission), or nothing: the command to decide.

        An original still in flight is waited for once: its record is already
        numbered, and a key once recorded never changes, so after the wait the
        same record answers.  An original not seen at all is decided at once
        (no await between the look-up and the decision, so it cannot slip in).
        """
        self.require_ready()
        self.require_owner()
        check_reversal(command)
        if self.keys.find(caller, command.request_id, looked) is not None:
            return command  # this reversal, retried: execute_many answers it as it was first answered
        found = self.keys.find(caller, command.original_request_id, looked)
        if found is None:
            return command
        seen, prior = found
        if prior is ELSEWHERE or part_of_seq(prior.seq) != self.store.part:
            # the original is being performed in another partition, or was just now (this call was routed before
            # it was recorded): a retry goes to that partition
            raise YidiError("REQUEST_IN_PROGRESS", request_id=command.original_request_id,
                            retry_after_ms=ELSEWHERE_RETRY_MS)
        if seen == REVERSED:
            raise YidiError("REQUEST_REVERSED", request_id=command.original_request_id)
        if prior.durable is not None:
            try:
                await asyncio.shield(prior.durable)
            except LedgerFatal:
                raise storage_unavailable() from None
            self.require_ready()
        record = self.store.read(prior.seq)
        return reversal(command, events.decode(record.body) if record is not None else None)

    # ------------------------------------------------- reference reload
    async def _reload(self, caller: str, command: LoadReferenceData, digest: bytes) -> bytes:
        """Load a new data set with the current state restored onto it; on a rejected load keep the old one."""
        self.require_ready()
        self.require_owner()
        check_id(command.request_id, "请求ID request_id", "INVALID_REQUEST_ID", "request_id")
        prior = self.keys.lookup(caller, command.request_id, digest)
        if prior is not None:
            return await self.keys.answer(prior)
        # Build from everything durable so far: pause every Yidi RPC (NOT_READY) and drain the ledger.
        self._paused = True
        try:
            await self.ledger.flush()
            current = self.state.engine.export_state()
            state, event = await asyncio.to_thread(build_reloaded, self.config, self.store, command.data_dir,
                                                   current)
        finally:
            self._paused = False
        old, self.state = self.state, state
        try:
            seq = self.ledger.next_seq
            try:
                changes = state.engine.apply(event, seq)
            except Exception as exc:
                self._diverged(event, exc)
            record = self._record(caller, command, digest, Decision(event, self.status(seq)), changes, seq)
            await self._submit(caller, [record])
            return record.response
        except BaseException:
            self.state = old
            raise

    def status(self, ledger_seq: int | None = None) -> ReferenceResult:
        state = self.state
        meta = state.engine.index.meta
        return ReferenceResult(
            data_dir=state.data_dir, counts=state.engine.index.counts(), seed=int(meta.get("seed", 0) or 0),
            version=str(meta.get("version", "")),
            ledger_seq=self.store.last_seq() if ledger_seq is None else ledger_seq,
            loaded_at_unix_ms=state.loaded_at_unix_ms, snapshot_seq=self.snapshot_seq,
            ledger_commits=self.ledger.commits, ledger_commit_records=self.ledger.records,
        )

    # -------------------------------------------------------- snapshots
    async def take_snapshot(self) -> tuple[int, str, int]:
        """Write a snapshot of the state as of the last applied record; (seq, path, bytes) once durable.

        One at a time: a call that waited for another's snapshot answers with that one when no record was
        applied since (it covers the same records), and writes a new one otherwise.
        """
        self.require_ready()
        self.require_owner()
        async with self._snapshot_lock:
            seq = self.ledger.next_seq - 1
            if self._last_snapshot is not None and self._last_snapshot[0] == seq:
                return self._last_snapshot
            # Encoded on the loop, so the state is exactly that of records 1..seq.
            body = snapshot.encode(seq, self.state.data_dir, self.state.engine.export_state())
            self._records_since_snapshot = 0
            await self.ledger.flush()  # never a snapshot of records that are not durable
            blob = snapshot.seal(seq, body, self.store.chain_at(seq), self.store.key)
            path = await asyncio.to_thread(self.snapshots.write, blob, seq)
            self.snapshot_seq = seq
            log.info("snapshot at ledger seq %d written: %s (%d bytes)", seq, path, len(blob))
            self._last_snapshot = (seq, path, len(blob))
            return self._last_snapshot

    async def close(self) -> None:
        if self._snapshot_task is not None and not self._snapshot_task.done():
            await asyncio.wait([self._snapshot_task])
        await self.ledger.close()
        if self.ownership is not None:   # the lease is given up only after the last commit
            await asyncio.to_thread(self.ownership.close)
        self.store.close()
        if self.audit is not None:
            self.audit.close()

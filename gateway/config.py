"""Gateway settings: every operating limit in one place (TigerBeetle style)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_DATA_DIR = os.path.join("data", "national")
DEFAULT_LISTEN = "127.0.0.1:50051"


@dataclass(slots=True)
class Config:
    data_dir: str = DEFAULT_DATA_DIR
    ledger: str = ""                 # default: <data_dir>/../yidi-ledger.sqlite, beside the data set
    # The ledger's store: a SQLite file (empty: ``ledger``) or postgresql://user@host:port/database
    # (gateway/store/postgresql/; ``ledger`` then names only this node's own files: audit log, failure note).
    store: str = ""
    listen: str = DEFAULT_LISTEN
    # PostgreSQL only (docs/operations.md, Gateway nodes): the partition is owned by one node at a time, by a
    # lease in the database that lasts lease_ttl_s (the server's clock) and is renewed every lease_renew_s; a
    # node that does not own it is a standby that reads new records every follow_interval_s.  node_id names the
    # node in the lease (empty: host name and pid), advertise is where other nodes and clients reach it (empty:
    # the listen address).
    node_id: str = ""
    advertise: str = ""
    lease_ttl_s: float = 2.0
    lease_renew_s: float = 0.5
    follow_interval_s: float = 0.2
    # PostgreSQL only (docs/postgresql.md, Partitions): the ledger is split by insured province into
    # ``partitions`` (core/partition.py: the province's two-digit code modulo it, the same on every node) and
    # this process serves ``partition`` (owns it, or stands by for it); calls of another partition are forwarded
    # to its owner.  One partition (the default) is the whole ledger.
    partitions: int = 1
    partition: int = 0
    # A request larger than this is refused with MESSAGE_TOO_LARGE; gRPC itself refuses anything over
    # twice this from its length prefix, unbuffered (plain RESOURCE_EXHAUSTED: docs/design.md, Message size).
    max_message_bytes: int = 4 * 1024 * 1024
    # Admission control (gateway/security/admission.py); beyond a limit RESOURCE_EXHAUSTED/OVERLOADED with retry
    # advice (retry_after_ms).  As each call is taken from gRPC core, before its request is read: Yidi RPCs in
    # flight in their handlers, and how long the call queued in front of the handler, measured by a probe the
    # gateway sends itself every overload_probe_ms while calls queue (0: no limit, for either).  Then, in the
    # handler: each caller's calls in flight and its rate (a token bucket).
    max_concurrent_rpcs: int = 2000
    max_queue_wait_ms: float = 500.0
    overload_probe_ms: float = 10.0
    max_inflight_per_caller: int = 1000
    rate_per_caller_per_s: float = 20_000.0
    rate_burst_per_caller: int = 20_000
    overload_retry_after_ms: int = 200
    # HTTP/2 keepalive enforcement: a client may ping at most this often (more often is
    # answered with GOAWAY), and a connection whose pings go unanswered this long is closed.
    keepalive_min_ping_interval_ms: int = 10_000
    keepalive_time_ms: int = 60_000
    keepalive_timeout_ms: int = 20_000
    max_connection_idle_ms: int = 30 * 60_000
    # Seconds in-flight RPCs get to finish on SIGTERM.
    shutdown_grace_s: float = 10.0
    # SettleBatch: items per call at most (BATCH_TOO_LARGE beyond).
    batch_max_items: int = 1000
    # SettleStream: items read but not yet answered, per stream (the server stops reading beyond).
    stream_max_in_flight: int = 2000
    # SettleStream: items read within this window go to the ledger as one group.
    stream_group_window_s: float = 0.001
    # Ledger: records per transaction at most (a batch RPC's group is never split).
    ledger_max_batch: int = 4096
    # A cap on the ledger database's size (0: none; SQLite max_page_count): past it commits fail as on
    # a full disk (STORAGE_UNAVAILABLE), so a ledger cannot fill a disk it shares with others.
    ledger_max_bytes: int = 0
    # Idempotency keys kept in memory (the most recent ones); older keys are
    # answered from the ledger's unique index.
    idempotency_cache_keys: int = 100_000
    # A snapshot of the mutable state is written after this many ledger records
    # (and on demand: AdminService.TakeSnapshot, `yidi snapshot`).
    snapshot_every_records: int = 1_000_000
    snapshots: str = ""              # default: <ledger>.snapshots/
    accepted_card_versions: tuple[str, ...] = ("2.0", "3.0")
    # mTLS (SPEC §9): the server's certificate and key, and the platform CA that signs client
    # certificates (gateway/security/certs.py; `yidi certs` makes development ones).  insecure: a plaintext
    # listener instead, loopback only, on which every Yidi RPC is UNAUTHENTICATED.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    insecure: bool = False
    # Gateway nodes (gateway/transport/forward.py): send mutating calls to the node listening at this host:port,
    # the owner of their partition (empty: this node performs them), presenting this node's certificate
    # (yidi://node/<name>, `yidi certs` makes them) signed by tls_ca.
    owner_address: str = ""
    node_cert: str = ""
    node_key: str = ""
    # The seal key (gateway/store/seal.py): a file outside the ledger's directory (`yidi keys` makes one).
    seal_key: str = ""
    # A directory on another volume that receives the sealed chain head after every commit (fsynced,
    # before the reply): a ledger restored from an older copy is refused at start.  Empty: none.
    witness: str = ""
    # With insecure, for benchmarks only (h2load cannot present a certificate): the one caller every call
    # on the plaintext loopback listener is taken to be. Never a header.
    insecure_caller: str = ""
    # Audit log (JSON lines): default <ledger>.audit.jsonl.
    audit_log: str = ""
    # The ledger's writes failed (disk full, fsync error): probe with a test write this often
    # until one succeeds, and only then answer SERVING again.
    storage_probe_interval_s: float = 1.0
    # Prometheus /metrics on this host:port (gateway/operations/metrics.py); empty: none.
    metrics_listen: str = ""
    # The application log (gateway/operations/logs.py): "text" or "json" lines, and the least level written.
    log_format: str = "text"
    log_level: str = "info"
    # Plaintext gRPC health on this loopback host:port for an orchestrator's probe (gateway/operations/health.py),
    # answered by threads of its own; empty: none.
    health_listen: str = ""
    # The event-loop watchdog (gateway/operations/watchdog.py): silent this long is a stall (NOT_SERVING on the health
    # port, a problem report); this long, the gateway exits to be restarted (0: never).
    loop_stall_s: float = 2.0
    loop_stall_exit_s: float = 30.0
    extra: dict = field(default_factory=dict)

    def audit_path(self) -> str:
        return self.audit_log or self.ledger_path() + ".audit.jsonl"

    def snapshot_dir(self) -> str:
        return self.snapshots or self.ledger_path() + ".snapshots"

    def store_url(self) -> str:
        return self.store or self.ledger_path()

    def ledger_path(self) -> str:
        if self.ledger:
            return self.ledger
        parent = os.path.dirname(os.path.abspath(self.data_dir))
        return os.path.join(parent, "yidi-ledger.sqlite")

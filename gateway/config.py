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
    listen: str = DEFAULT_LISTEN
    # A request larger than this is refused with MESSAGE_TOO_LARGE; gRPC itself
    # drops anything over twice this before it reaches us (plain RESOURCE_EXHAUSTED).
    max_message_bytes: int = 4 * 1024 * 1024
    # Concurrent RPCs in flight; beyond it gRPC answers RESOURCE_EXHAUSTED at once.
    max_concurrent_rpcs: int = 2000
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
    # Idempotency keys kept in memory (the most recent ones); older keys are
    # answered from the ledger's unique index.
    idempotency_cache_keys: int = 100_000
    # A snapshot of the mutable state is written after this many ledger records
    # (and on demand: AdminService.TakeSnapshot, `yidi snapshot`).
    snapshot_every_records: int = 1_000_000
    snapshots: str = ""              # default: <ledger>.snapshots/
    accepted_card_versions: tuple[str, ...] = ("2.0", "3.0")
    # Prometheus /metrics on this host:port (gateway/metrics.py); empty: none.
    metrics_listen: str = ""
    # Caller identity header (SPEC §9 identity comes from TLS in a later issue).
    caller_header: str = "x-yidi-caller"
    extra: dict = field(default_factory=dict)

    def snapshot_dir(self) -> str:
        return self.snapshots or self.ledger_path() + ".snapshots"

    def ledger_path(self) -> str:
        if self.ledger:
            return self.ledger
        parent = os.path.dirname(os.path.abspath(self.data_dir))
        return os.path.join(parent, "yidi-ledger.sqlite")

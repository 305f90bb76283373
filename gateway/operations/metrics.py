"""Prometheus metrics on a side port: what an operator watches in production.

``--metrics-listen 127.0.0.1:9464`` serves ``/metrics`` (prometheus-client's
own HTTP server, on a thread of its own; nothing of it runs on the event
loop).  The figures are the ones the benchmark report gives, so a dashboard
and ``make bench`` speak of the same things:

* ``yidi_rpc_duration_seconds{method, code}`` — every Yidi RPC by method and
  gRPC status (its ``_count`` is the call count);
* ``yidi_ledger_records_total{kind}`` — records made, by event kind
  (``settled``, ``settlement_cancelled``, ``admitted`` ...): settlements by kind;
* ``yidi_queue_wait_seconds`` — how long calls queued in front of the
  handler, in gRPC core (gateway/security/admission.py): the first sign of overload;
* ``yidi_batch_items{rpc}`` — items per SettleBatch call / per stream group;
* ``yidi_ledger_commit_records`` and ``yidi_ledger_commit_seconds`` — the
  size and latency (fsync included) of each ledger transaction;
* ``yidi_refusals_total{method, reason}`` — refused calls by reason code
  (``OVERLOADED``, ``PERSON_NOT_FILED`` ...);
* ``yidi_forwarded_calls_total{method, outcome}`` — mutating calls a node sent
  on to the owner of their partition (gateway/transport/forward.py), by
  outcome (``OK``, the owner's reason code, ``OWNER_UNAVAILABLE``);
* ``yidi_index_entries{table}``, ``yidi_ledger_seq``, ``yidi_gc_pause_seconds``
  (histogram since start) and ``yidi_gc_pause_max_seconds``, the same by
  generation (``yidi_gc_generation_pause_seconds{generation}``,
  ``yidi_gc_generation_pause_max_seconds{generation}``, and in CPU time
  ``yidi_gc_generation_pause_cpu_max_seconds{generation}`` and
  ``yidi_gc_generation_pause_cpu_seconds_total{generation}``; of the wall time, the
  wait for a core, ``yidi_gc_generation_pause_waited_seconds_total{generation}``, and
  the longest pause less it, ``yidi_gc_generation_pause_unwaited_max_seconds{generation}``)
  with the objects each generation's collections freed (``yidi_gc_collected_objects{generation}``,
  ``yidi_gc_uncollectable_objects{generation}``) and the objects tracked now
  (``yidi_gc_tracked_objects{generation}``, ``permanent`` the frozen ones),
  ``yidi_internal_errors_total{method}``, ``yidi_event_loop_lag_seconds`` and
  ``yidi_event_loop_stalls_total`` (gateway/operations/watchdog.py), ``yidi_rpcs_in_flight``,
  ``yidi_serving``, ``yidi_storage_writable``, ``yidi_prepaid_usage_ratio{province}``
  and ``yidi_prepaid_level{province}`` (0 normal, 1 yellow, 2 red, 3 exhausted) —
  read when scraped, costing the request path nothing;
* on a PostgreSQL ledger, what its primary sees of its standbys:
  ``yidi_pg_standbys{sync_state}``, ``yidi_pg_replication_lag_bytes{standby, sync_state}`` and
  ``yidi_pg_replication_replay_lag_seconds{standby, sync_state}`` (read when scraped, over one connection
  kept for it; no sync standby on a strict synchronous cluster means commits wait);
* ``yidi_build_info{version, python, grpcio, protobuf}``, and the standard
  ``process_*`` (CPU, memory, open files) and ``python_info`` metrics.

The alerting rules over these are in ``deploy/prometheus/yidi-alerts.yml``
(docs/operations.md).

Hot-path cost: one histogram ``observe`` per RPC through a child cached per
(method, code), about a microsecond (bench figures in docs/performance.md).
"""
from __future__ import annotations

import collections
import gc
import logging
from typing import Callable

import platform
from importlib import metadata

from prometheus_client import (CollectorRegistry, Counter, Histogram, Info, PlatformCollector, ProcessCollector,
                               start_http_server)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .gcwatch import PAUSE_BUCKETS_MS, WATCH

log = logging.getLogger("yidi.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RPC_SECONDS = Histogram("yidi_rpc_duration_seconds", "Yidi RPCs by method and gRPC status code, server side",
                        ["method", "code"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
LEDGER_RECORDS = Counter("yidi_ledger_records", "Ledger records made, by event kind", ["kind"], registry=REGISTRY)
BATCH_ITEMS = Histogram("yidi_batch_items", "Items per SettleBatch call or SettleStream group", ["rpc"],
                        buckets=(1, 10, 50, 100, 250, 500, 1000, 2000), registry=REGISTRY)
QUEUE_WAIT_SECONDS = Histogram("yidi_queue_wait_seconds", "How long Yidi calls queued in front of the handler "
                               "(in gRPC core, before the event loop took them): a lower bound, to within the probe interval",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=REGISTRY)
COMMIT_RECORDS = Histogram("yidi_ledger_commit_records", "Records per ledger transaction",
                           buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 4096), registry=REGISTRY)
REFUSALS = Counter("yidi_refusals", "Refused Yidi RPCs by method and reason code", ["method", "reason"],
                   registry=REGISTRY)
LEVEL_NUMBERS = {"normal": 0, "yellow": 1, "red": 2, "exhausted": 3}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


Info("yidi_build", "The gateway's version and what it runs on", registry=REGISTRY).info({
    "version": _version("yidi"), "python": platform.python_version(), "grpcio": _version("grpcio"),
    "protobuf": _version("protobuf")})
COMMIT_SECONDS = Histogram("yidi_ledger_commit_seconds", "Ledger transaction time (insert, commit, fsync)",
                           buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
                           registry=REGISTRY)


class RpcTimer:
    """The latency histogram children of one method, one per status code, made on first use."""

    __slots__ = ("method", "_children", "_refusals")

    def __init__(self, method: str) -> None:
        self.method = method
        self._children: dict[str, object] = {}
        self._refusals: dict[str, object] = {}

    def observe(self, code: str, seconds: float, reason: str = "") -> None:
        child = self._children.get(code)
        if child is None:
            child = self._children[code] = RPC_SECONDS.labels(self.method, code)
        child.observe(seconds)
        if reason:
            refusal = self._refusals.get(reason)
            if refusal is None:
                refusal = self._refusals[reason] = REFUSALS.labels(self.method, reason)
            refusal.inc()


_RECORD_KINDS: dict[str, object] = {}


def count_records(records) -> None:
    """One ledger group's records, by kind (on the event loop, after submit): one increment per kind, not per
    record (each takes the counter's lock)."""
    for kind, n in collections.Counter([record.kind for record in records]).items():
        child = _RECORD_KINDS.get(kind)
        if child is None:
            child = _RECORD_KINDS[kind] = LEDGER_RECORDS.labels(kind)
        child.inc(n)


def _buckets(counts: list[int]) -> list[tuple[str, int]]:
    """Cumulative (le, count) pairs of a pause histogram kept as one count per bucket."""
    out, total = [], 0
    for bound, n in zip(PAUSE_BUCKETS_MS, counts[:-1], strict=True):
        total += n
        out.append((repr(bound / 1000), total))
    return out + [("+Inf", total + counts[-1])]


def _gc_generations():
    """The collector by generation (0 young, 2 the oldest): pauses, the longest, and the objects freed."""
    pauses = HistogramMetricFamily("yidi_gc_generation_pause_seconds", "Garbage-collector pauses since start, by "
                                   "the generation collected", labels=["generation"])
    longest = GaugeMetricFamily("yidi_gc_generation_pause_max_seconds", "The longest collector pause since start, "
                                "by the generation collected", labels=["generation"])
    longest_cpu = GaugeMetricFamily("yidi_gc_generation_pause_cpu_max_seconds", "The longest collector pause since "
                                    "start in the collecting thread's CPU time (without the time the OS gave the "
                                    "cores to others), by the generation collected", labels=["generation"])
    cpu = CounterMetricFamily("yidi_gc_generation_pause_cpu_seconds", "Collector pauses since start in the "
                              "collecting thread's CPU time, summed, by the generation collected", labels=["generation"])
    waited = CounterMetricFamily("yidi_gc_generation_pause_waited_seconds", "Of the collector pauses since start, "
                                 "the time the collecting thread waited for a core (Linux run-queue delay), summed, "
                                 "by the generation collected", labels=["generation"])
    unwaited = GaugeMetricFamily("yidi_gc_generation_pause_unwaited_max_seconds", "The longest collector pause since "
                                 "start less the time the collecting thread waited for a core meanwhile, by the "
                                 "generation collected", labels=["generation"])
    tracked = GaugeMetricFamily("yidi_gc_tracked_objects", "Objects the collector tracks now, by generation "
                                "(permanent: frozen after start-up, never walked)", labels=["generation"])
    collected = CounterMetricFamily("yidi_gc_collected_objects", "Objects the collector freed, by the generation "
                                    "collected", labels=["generation"])
    uncollectable = CounterMetricFamily("yidi_gc_uncollectable_objects", "Objects the collector found "
                                        "uncollectable, by the generation collected", labels=["generation"])
    for g in range(3):
        label = [str(g)]
        pauses.add_metric(label, _buckets(WATCH.pause_buckets_by_generation[g]),
                          sum_value=WATCH.pause_total_ms_by_generation[g] / 1000)
        longest.add_metric(label, WATCH.max_pause_ms_by_generation[g] / 1000)
        longest_cpu.add_metric(label, WATCH.max_pause_cpu_ms_by_generation[g] / 1000)
        cpu.add_metric(label, WATCH.pause_cpu_total_ms_by_generation[g] / 1000)
        waited.add_metric(label, WATCH.pause_waited_total_ms_by_generation[g] / 1000)
        unwaited.add_metric(label, WATCH.max_pause_unwaited_ms_by_generation[g] / 1000)
        tracked.add_metric(label, len(gc.get_objects(g)))
        collected.add_metric(label, WATCH.collected[g])
        uncollectable.add_metric(label, WATCH.uncollectable[g])
    tracked.add_metric(["permanent"], gc.get_freeze_count())
    yield from (pauses, longest, longest_cpu, cpu, waited, unwaited, tracked, collected, uncollectable)


class _StateCollector:
    """Figures read from the gateway when scraped: index sizes, ledger position, GC pauses, internal errors."""

    def __init__(self) -> None:
        self.gateway = None                                  # set by serve_metrics
        self.internal_errors: Callable[[], dict] = dict

    def collect(self):
        gw = self.gateway
        entries = GaugeMetricFamily("yidi_index_entries", "Reference data in memory, by table", labels=["table"])
        seq = GaugeMetricFamily("yidi_ledger_seq", "The last ledger record's seq")
        if gw is not None and gw.state is not None:
            for table, n in gw.state.engine.index.counts().items():
                entries.add_metric([table], n)
            ownership = getattr(gw, "ownership", None)
            seq.add_metric([], gw.ledger.next_seq - 1 if ownership is None or ownership.owner else ownership.seq)
        yield entries
        yield seq
        yield from _leases(gw)
        pauses = HistogramMetricFamily("yidi_gc_pause_seconds", "Garbage-collector pauses since start")
        pauses.add_metric([], _buckets(WATCH.pause_buckets), sum_value=WATCH.pause_total_ms / 1000)
        yield pauses
        yield GaugeMetricFamily("yidi_gc_pause_max_seconds", "The longest collector pause since start",
                                value=WATCH.max_pause_ms / 1000)
        yield from _gc_generations()
        errors = CounterMetricFamily("yidi_internal_errors", "Bugs answered INTERNAL, by method", labels=["method"])
        for method, n in sorted(self.internal_errors().items()):
            errors.add_metric([method], n)
        yield errors
        watchdog = getattr(gw, "watchdog", None)
        if watchdog is not None:
            yield GaugeMetricFamily("yidi_event_loop_lag_seconds", "Seconds since the event loop's last heartbeat "
                                    "(about 0.1 when it is well)", value=watchdog.lag_s())
            yield CounterMetricFamily("yidi_event_loop_stalls", "Event-loop stalls seen by the watchdog",
                                      value=watchdog.stalls)
        yield from self._gateway_state(gw)
        yield from _replication(getattr(gw, "store", None))

    @staticmethod
    def _gateway_state(gw):
        """In flight, storage, prepaid positions (read from the event loop's objects without a lock: a scrape
        may see a position a settlement later; every figure is a plain int)."""
        admission, health = getattr(gw, "admission", None), getattr(gw, "health", None)
        yield GaugeMetricFamily("yidi_rpcs_in_flight", "Yidi RPCs admitted and not yet answered",
                                value=getattr(admission, "total", 0))
        yield GaugeMetricFamily("yidi_serving", "1 while health says SERVING; 0 while loading, stopping, unable to "
                                "write the ledger or with the event loop stalled", value=int(bool(health and health.serving)))
        writable = GaugeMetricFamily("yidi_storage_writable", "1 while the ledger can be written, else 0 "
                                     "(STORAGE_UNAVAILABLE)")
        usage = GaugeMetricFamily("yidi_prepaid_usage_ratio", "Prepaid position used / prepaid (1 = 100%)",
                                  labels=["province"])
        level = GaugeMetricFamily("yidi_prepaid_level", "Prepaid warning level: 0 normal, 1 yellow, 2 red, 3 exhausted",
                                  labels=["province"])
        if gw is not None and gw.state is not None:
            writable.add_metric([], 1 if gw.storage_writable else 0)
            for position in (r.position for r in gw.state.engine.clearing.positions()):
                usage.add_metric([position.province], position.usage_bp / 10000)
                level.add_metric([position.province], LEVEL_NUMBERS[position.level])
        yield writable
        yield usage
        yield level


def _leases(gw):
    """PostgreSQL nodes: the partitions whose lease this node holds (1) or follows as a standby (0)."""
    ownership = getattr(gw, "ownership", None)
    if ownership is None:
        return
    held = GaugeMetricFamily("yidi_partition_lease_held", "1 while this node holds the partition's lease and "
                             "serves it, 0 while it is a standby", labels=["partition"])
    held.add_metric([str(ownership.keeper.part)], int(ownership.owns()))
    yield held


def _replication(store):
    """What the PostgreSQL primary sees of its standbys (a SQLite ledger has none: no samples)."""
    standbys = GaugeMetricFamily("yidi_pg_standbys", "Standbys streaming from the ledger's PostgreSQL server, by "
                                 "sync state (sync, potential, quorum, async)", labels=["sync_state"])
    lag_bytes = GaugeMetricFamily("yidi_pg_replication_lag_bytes", "WAL bytes the primary has sent a standby and it "
                                  "has not yet replayed", labels=["standby", "sync_state"])
    lag_s = GaugeMetricFamily("yidi_pg_replication_replay_lag_seconds", "Seconds a standby's replay lags the "
                              "primary's commits (PostgreSQL's replay_lag)", labels=["standby", "sync_state"])
    if getattr(store, "replication", None) is not None:
        counts = {"sync": 0}   # always there, so "no synchronous standby" is a sample an alert can see
        try:
            rows = store.replication()
        except OSError as err:   # the server cannot be reached now: say so in the log, leave the figures out
            log.warning("replication figures not read: %s", err)
            rows = []
        for name, sync, behind_bytes, behind_s in rows:
            counts[sync] = counts.get(sync, 0) + 1
            if behind_bytes is not None:
                lag_bytes.add_metric([name, sync], behind_bytes)
            lag_s.add_metric([name, sync], behind_s or 0.0)
        for sync, n in sorted(counts.items()):
            standbys.add_metric([sync], n)
    yield from (standbys, lag_bytes, lag_s)


_STATE = _StateCollector()
REGISTRY.register(_STATE)


def serve_metrics(listen: str, gateway, internal_errors: Callable[[], dict]) -> int:
    """Start the /metrics endpoint on host:port (port 0: any free one); the port it listens on."""
    _STATE.gateway, _STATE.internal_errors = gateway, internal_errors
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        server, _thread = start_http_server(int(port), addr=host, registry=REGISTRY)
    except OSError as err:
        raise SystemExit(f"cannot serve metrics on {listen}: {err.strerror}; choose another with --metrics-listen") \
            from None
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server.server_port

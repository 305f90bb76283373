"""The gRPC server: options and limits, health, reflection, graceful stop.

Start-up order: listen first with health NOT_SERVING (so an orchestrator can
see the gateway is alive but not ready), rebuild the state from reference
data and the ledger (verifying its hash chain), make sure the ledger can be
written (a test write: on a full disk the gateway stays NOT_SERVING and
answers STORAGE_UNAVAILABLE, probing until a write succeeds), then report
SERVING.  On PostgreSQL a node serves only while it owns the ledger
partition by its lease; until then it is a standby following the owner
(gateway/ownership.py), NOT_SERVING.  SIGHUP: reload the TLS certificates (gateway/security/tls.py) and the
node certificate calls are forwarded with (gateway/transport/forward.py).  SIGTERM: report
NOT_SERVING, let in-flight RPCs finish (grace),
drain the ledger, exit.

The listener is TLS with required client certificates (SPEC §9); a plaintext
one only with ``Config.insecure`` and only on a loopback address.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from typing import Callable

import grpc
from google.protobuf.internal import api_implementation
from grpc_health.v1 import health_pb2

from core.errors import LoadError, YidiError
from core.partition import PartitionMap

from ..security import auth, certs
from . import convert, forward, reflection
from ..security.admission import Admission, Intake
from ..app import Gateway
from ..ownership import Ownership, PartitionLost
from ..security.audit import AuditLog
from ..config import Config
from ..operations.gcwatch import WATCH
from ..operations.health import Health, is_loopback
from ..store import LedgerCorrupt, LedgerUnavailable, is_postgresql, open_snapshots, open_store
from ..operations.logs import CoreLogRelay, configure as configure_log
from ..operations.metrics import QUEUE_WAIT_SECONDS, serve_metrics
from ..store.seal import SealKey, SealKeyError, check_outside
from ..store.snapshot import LedgerBehindSnapshot
from ..security.tls import CertificateError, ServerCertificates
from .services.admin import AdminService
from .services.base import INTERNAL_ERRORS, Router, service_handlers
from .services.diagnostics import DiagnosticsService
from .services.filing import FilingService
from .services.funds import FundsService
from .services.problems import ProblemService
from .services.settlement import SettlementService
from ..operations.watchdog import LoopWatchdog
from .._pb.yidi.v1 import admin_pb2, diagnostics_pb2, filing_pb2, funds_pb2, problems_pb2, settlement_pb2

log = logging.getLogger("yidi.server")

SERVICES = (
    (filing_pb2.DESCRIPTOR.services_by_name["FilingService"], FilingService),
    (settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"], SettlementService),
    (admin_pb2.DESCRIPTOR.services_by_name["AdminService"], AdminService),
    (funds_pb2.DESCRIPTOR.services_by_name["FundsService"], FundsService),
    (problems_pb2.DESCRIPTOR.services_by_name["ProblemService"], ProblemService),
    (diagnostics_pb2.DESCRIPTOR.services_by_name["DiagnosticsService"], DiagnosticsService),
)


EXIT_FATAL = 70
# After a failed commit, the callers waiting for it get STORAGE_UNAVAILABLE before the process exits.
FATAL_ANSWER_GRACE_S = 0.5


_RELAY = CoreLogRelay()   # gRPC core's own lines, re-logged as grpc.core (gateway/operations/logs.py); started by run()


def fatal_exit(exc: BaseException) -> None:
    """A failed ledger commit or a broken invariant: never guess, restart and rebuild."""
    log.critical("fatal: %s; exiting so the gateway restarts and rebuilds from the ledger", _one_line(exc))
    _RELAY.close()
    logging.shutdown()
    os._exit(EXIT_FATAL)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    return text + (f" (caused by {type(cause).__name__}: {cause})" if cause is not None else "")


def fatal_soon(loop: asyncio.AbstractEventLoop, health_down: Callable[[], None]):
    """on_fatal for the ledger's writer thread: NOT_SERVING now, answer the waiting callers, then exit."""

    def on_fatal(exc: BaseException) -> None:
        log.critical("ledger write failed: %s; answering STORAGE_UNAVAILABLE, exiting in %.1f s",
                     _one_line(exc), FATAL_ANSWER_GRACE_S)
        try:
            loop.call_soon_threadsafe(health_down)
            loop.call_soon_threadsafe(loop.call_later, FATAL_ANSWER_GRACE_S, fatal_exit, exc)
        except RuntimeError:  # the loop is gone
            fatal_exit(exc)

    return on_fatal


def restart_soon(loop: asyncio.AbstractEventLoop, health_down: Callable[[], None]) -> Callable[[str], None]:
    """Ownership's restart (on the loop): this node no longer owns its partition (or must reload as a standby):
    NOT_SERVING now, exit 70 shortly, to be started again as a standby."""

    def restart(why: str) -> None:
        log.critical("%s: NOT_SERVING, exiting in %.1f s to be started again as a standby", why, FATAL_ANSWER_GRACE_S)
        health_down()
        loop.call_later(FATAL_ANSWER_GRACE_S, fatal_exit, PartitionLost(why))

    return restart


def ownership(config: Config, gw: Gateway, port: int, restart: Callable[[str], None]) -> Ownership:
    """A PostgreSQL node's lease keeper and role (it owns nothing yet)."""
    from ..store.postgresql.lease import LeaseKeeper

    node_id = config.node_id or f"{socket.gethostname()}-{os.getpid()}"
    address = config.advertise or f"{config.listen.rsplit(':', 1)[0]}:{port}"
    keeper = LeaseKeeper(gw.store.connect_lease, gw.store.part, node_id, address, config.lease_ttl_s,
                         config.lease_renew_s)
    return Ownership(gw, keeper, config.follow_interval_s, restart)


def check_lease(config: Config) -> None:
    if is_postgresql(config.store_url()) and not 0 < 2 * config.lease_renew_s <= config.lease_ttl_s:
        raise SystemExit(f"--lease-renew-s {config.lease_renew_s} must be more than 0 and at most half of "
                         f"--lease-ttl-s {config.lease_ttl_s}: a lease must survive one failed renewal")


def check_partitions(config: Config) -> None:
    try:
        PartitionMap(config.partitions)
    except ValueError as err:
        raise SystemExit(f"--partitions: {err}") from None
    if not 0 <= config.partition < config.partitions:
        raise SystemExit(f"--partition {config.partition} must be one of 0..{config.partitions - 1} (--partitions)")
    if config.partitions > 1 and not is_postgresql(config.store_url()):
        raise SystemExit("--partitions needs a postgresql:// store: a SQLite ledger is one partition")


def check_listen(config: Config) -> None:
    """A plaintext listener only when asked for, and only on a loopback address."""
    if config.insecure_caller and not config.insecure:
        raise SystemExit("--insecure-caller names the caller of a plaintext listener: it needs --insecure")
    if config.insecure_caller and auth.caller_of_uri(auth.PROVINCE_URI + config.insecure_caller) is None \
            and config.insecure_caller != auth.NATIONAL:
        raise SystemExit(f"--insecure-caller {config.insecure_caller[:20]!r} is neither a province code nor national")
    if not config.insecure:
        return
    if not is_loopback(config.listen):
        raise SystemExit(f"refusing a plaintext listener on {config.listen}: --insecure is for loopback "
                         "addresses only (127.0.0.1, ::1, localhost); use TLS (--cert/--key/--ca)")


def add_port(server: grpc.aio.Server, config: Config) -> tuple[int, ServerCertificates | None]:
    """Listen on config.listen: mTLS with certificates reloaded on SIGHUP, or plaintext on loopback (--insecure)."""
    check_listen(config)
    if config.insecure:
        if config.insecure_caller:
            auth.INSECURE_CALLER = config.insecure_caller
            log.warning("plaintext listener on %s (--insecure --insecure-caller): every call there is taken to be "
                        "%s — for benchmarks only", config.listen, config.insecure_caller)
        else:
            log.warning("plaintext listener on %s (--insecure): every Yidi RPC is UNAUTHENTICATED there", config.listen)
        return _bind(server.add_insecure_port, config.listen), None
    paths = certs.Paths(certs.DEFAULT_DIR)
    tls = ServerCertificates(config.tls_cert or paths.server_cert, config.tls_key or paths.server_key,
                             config.tls_ca or paths.ca)
    return _bind(server.add_secure_port, config.listen, tls.credentials), tls


def _bind(add_port, listen: str, *credentials) -> int:
    """The port bound; one sentence instead of gRPC's RuntimeError when the address is taken or not ours."""
    try:
        port = add_port(listen, *credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise SystemExit(f"cannot listen on {listen}: the address is in use (another gateway?) or not an address "
                         "of this machine; choose another with --listen or YIDI_SERVE_LISTEN")
    return port


def server_options(config: Config) -> list[tuple[str, int]]:
    limit = config.max_message_bytes
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", 2 * limit),
        ("grpc.max_send_message_length", 2 * limit),
        # Keepalive enforcement: pings more often than this are a GOAWAY; dead peers are dropped.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", config.keepalive_min_ping_interval_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", config.keepalive_min_ping_interval_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_time_ms", config.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_ms),
        ("grpc.max_connection_idle_ms", config.max_connection_idle_ms),
        # gRPC core cancels calls that wait for the Python server to take them once more than 1,000 are
        # pending (a bare CANCELLED, no reason: grpc/grpc#34782). Admission control (gateway/security/admission.py)
        # answers the excess with OVERLOADED instead, so the core's queue must not be the first limit.
        ("grpc.server.max_pending_requests", 100_000),
        ("grpc.server.max_pending_requests_hard_limit", 200_000),
    ]


def make_server(config: Config, admission: Admission) -> tuple[grpc.aio.Server, Router, Intake, str]:
    """The gRPC server, the router every call goes through first, its intake, and the intake's probe listener
    (an abstract Unix socket of this process: "" when queue waits are not limited)."""
    server = grpc.aio.server(options=server_options(config))
    intake = Intake(admission, config.max_queue_wait_ms, config.overload_probe_ms, QUEUE_WAIT_SECONDS.observe)
    probes = ""
    if config.max_queue_wait_ms:
        probes = f"unix-abstract:yidi-queue-probe-{os.getpid()}-{secrets.token_hex(6)}"
        if server.add_insecure_port(probes) == 0:
            raise SystemExit(f"cannot listen on {probes} (the queue probes' listener)")
    return server, Router(intake, config.overload_retry_after_ms), intake, probes


def read_seal_key(config: Config) -> SealKey:
    if not config.seal_key:
        raise SealKeyError("no seal key: give --seal-key FILE (`yidi keys --out FILE` makes one)")
    # a SQLite ledger named by --store is the one whose directory must not hold the key
    check_outside(config.seal_key, config.ledger_path() if is_postgresql(config.store_url()) else config.store_url())
    return SealKey.read(config.seal_key)


def check_protobuf_backend() -> None:
    if api_implementation.Type() != "upb":
        log.warning("protobuf runs on the %r backend, not upb: expect ~20x slower messages",
                    api_implementation.Type())


async def serve(config: Config, *, ready: Callable[[int, int, int], None] | None = None,
                progress: Callable[[str, int], None] | None = None,
                stop: asyncio.Event | None = None, listening: Callable[[int], None] | None = None,
                standby: Callable[[int, int, int, object], None] | None = None,
                owner: forward.Owner | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT (or ``stop`` is set); its mutating calls go to ``owner``'s node
    (default: ``config.owner_address``'s) when it is another (gateway/transport/forward.py).
    ``standby(port, metrics_port, health_port, holder)``: a PostgreSQL node found the partition owned by another
    node (``holder``) and follows it."""
    check_protobuf_backend()
    check_listen(config)
    check_lease(config)
    check_partitions(config)
    WATCH.install()
    store = open_store(config.store_url(), read_seal_key(config), max_bytes=config.ledger_max_bytes,
                       witness_dir=config.witness, take=False, lease_ttl_s=config.lease_ttl_s, part=config.partition)
    names = [descriptor.full_name for descriptor, _ in SERVICES]
    health = Health(names)
    loop = asyncio.get_running_loop()

    def health_down() -> None:
        loop.create_task(health.set_serving(False))

    gw = Gateway(config, store, on_fatal=fatal_soon(loop, health_down), encode_reply=convert.encode_reply,
                 audit=AuditLog(config.audit_path()), snapshots=open_snapshots(store, config.snapshot_dir()))
    gw.on_damaged = health_down
    gw.admission = Admission(config.max_concurrent_rpcs, config.max_inflight_per_caller, config.rate_per_caller_per_s,
                             config.rate_burst_per_caller, config.overload_retry_after_ms)
    server, router, intake, probes = make_server(config, gw.admission)
    forwarder = forward.forwarder(config, gw, owner)
    for descriptor, service_cls in SERVICES:
        handlers = service_handlers(descriptor, service_cls(gw).methods(), gw, config.max_message_bytes)
        if forwarder is not None:
            forwarder.wrap(descriptor, handlers)
        router.add(handlers)
    health.add_to(router)
    reflection.enable(router, names + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    server.add_generic_rpc_handlers((router,))
    await health.set_serving(False)
    gw.health = health

    port, tls = add_port(server, config)
    health_port = health.listen_plain(config.health_listen) if config.health_listen else 0
    await server.start()
    if probes:
        intake.start(probes)
    log.info("listening on %s (port %d), rebuilding state", config.listen, port)
    if listening is not None:
        listening(port)
    if is_postgresql(config.store_url()):
        gw.ownership = ownership(config, gw, port, restart_soon(loop, health_down))
    metrics_port = serve_metrics(config.metrics_listen, gw, lambda: INTERNAL_ERRORS) if config.metrics_listen else 0
    watchdog = LoopWatchdog(loop, config.loop_stall_s, config.loop_stall_exit_s, on_stall=health.set_loop_stalled,
                            on_recover=gw.report_stall, on_stuck=_stuck_exit(gw))
    gw.watchdog = watchdog
    watchdog.start()

    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads = [certificates.reload for certificates in (tls, forwarder) if certificates is not None]
    if reloads:
        loop.add_signal_handler(signal.SIGHUP, lambda: [reload() for reload in reloads])

    def on_standby(holder) -> None:
        if standby is not None:
            standby(port, metrics_port, health_port, holder)

    rebuild = asyncio.create_task(_start(gw, progress, on_standby))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({rebuild, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if rebuild.done():
        if rebuild.exception() is not None:  # a load failure ends start-up with its reason
            stopping.cancel()
            watchdog.stop()
            health.stop()
            await server.stop(0)
            store.close()
            rebuild.result()
        WATCH.freeze()
        await health.set_serving(True)
        counts = ", ".join(f"{table} {n:,}" for table, n in gw.state.engine.index.counts().items())
        log.info("SERVING on port %d: %s; ledger seq %d", port, counts, gw.ledger.next_seq - 1)
        if ready is not None:
            ready(port, metrics_port, health_port)
        gw.verify_after_start()
        await stopping
    log.info("stopping: NOT_SERVING, %.0f s grace for in-flight calls", config.shutdown_grace_s)
    await health.enter_graceful_shutdown()
    await intake.close()
    await server.stop(config.shutdown_grace_s)
    if forwarder is not None:
        await forwarder.close()
    if not rebuild.done():
        rebuild.cancel()
    watchdog.stop()
    health.stop()
    await gw.close()
    log.info("stopped")


def _stuck_exit(gw: Gateway) -> Callable[[float, str], None]:
    """The watchdog's last resort (its thread): the loop has not answered for loop_stall_exit_s."""

    def on_stuck(seconds: float, where: str) -> None:
        gw.leave_fatal_note(f"结算网关事件循环停顿超过 {seconds:.0f} 秒，网关自行退出以便重启（停顿位置：{where[:300]}）")
        fatal_exit(RuntimeError(f"event loop stalled for {seconds:.0f} s in {where}"))

    return on_stuck


async def _start(gw: Gateway, progress, on_standby: Callable[[object], None]) -> None:
    """Rebuild the state, own the partition (PostgreSQL: a standby until then), wait until the ledger takes a
    test write (a full disk: NOT_SERVING meanwhile), then report what start-up found."""
    await gw.rebuild(progress)
    if gw.ownership is not None:
        await gw.ownership.run(on_standby)
    await gw.wait_writable()
    await gw.report_start_up()


def run(config: Config, **kwargs) -> None:
    import uvloop

    try:
        configure_log(config.log_format, config.log_level, _RELAY.start())
        uvloop.run(serve(config, **kwargs))
    except YidiError as err:
        raise SystemExit(err.clerk_message()) from None
    except LoadError as err:
        raise SystemExit(f"reference data rejected: {err}") from None
    except OSError as err:
        raise SystemExit(f"reference data cannot be read: {err.filename}: {err.strerror}") from None
    except (LedgerBehindSnapshot, LedgerCorrupt, LedgerUnavailable, SealKeyError) as err:
        raise SystemExit(f"refusing to start: {err}") from None
    except CertificateError as err:
        raise SystemExit(f"TLS certificates: {err}") from None
    finally:
        _RELAY.close()

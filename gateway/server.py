"""The gRPC server: options and limits, health, reflection, graceful stop.

Start-up order: listen first with health NOT_SERVING (so an orchestrator can
see the gateway is alive but not ready), rebuild the state from reference
data and the ledger, then report SERVING.  SIGTERM: report NOT_SERVING, let
in-flight RPCs finish (grace), drain the ledger, exit.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Callable

import grpc
from google.protobuf.internal import api_implementation
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.errors import LoadError, YidiError

from .app import Gateway
from .auth import CallerInterceptor
from .config import Config
from .gcwatch import WATCH
from .ledger import open_store
from .metrics import serve_metrics
from .snapshot import LedgerBehindSnapshot
from .services.admin import AdminService
from .services.base import INTERNAL_ERRORS, abort, service_handler
from .services.diagnostics import DiagnosticsService
from .services.filing import FilingService
from .services.funds import FundsService
from .services.problems import ProblemService
from .services.settlement import SettlementService
from ._pb.yidi.v1 import admin_pb2, diagnostics_pb2, filing_pb2, funds_pb2, problems_pb2, settlement_pb2

log = logging.getLogger("yidi.server")

SERVICES = (
    (filing_pb2.DESCRIPTOR.services_by_name["FilingService"], FilingService),
    (settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"], SettlementService),
    (admin_pb2.DESCRIPTOR.services_by_name["AdminService"], AdminService),
    (funds_pb2.DESCRIPTOR.services_by_name["FundsService"], FundsService),
    (problems_pb2.DESCRIPTOR.services_by_name["ProblemService"], ProblemService),
    (diagnostics_pb2.DESCRIPTOR.services_by_name["DiagnosticsService"], DiagnosticsService),
)


def fatal_exit(exc: BaseException) -> None:
    """A failed ledger commit or a broken invariant: never guess, restart and rebuild."""
    log.critical("fatal: %r; exiting so the gateway restarts and rebuilds from the ledger", exc)
    logging.shutdown()
    os._exit(70)


def check_protobuf_backend() -> None:
    if api_implementation.Type() != "upb":
        log.warning("protobuf runs on the %r backend, not upb: expect ~20x slower messages",
                    api_implementation.Type())


async def serve(config: Config, *, ready: Callable[[int, int], None] | None = None,
                progress: Callable[[str, int], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT (or ``stop`` is set)."""
    check_protobuf_backend()
    WATCH.install()
    store = open_store(config.ledger_path())
    gw = Gateway(config, store, on_fatal=fatal_exit)
    limit = config.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 2 * limit),
            ("grpc.max_send_message_length", 2 * limit),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        interceptors=[CallerInterceptor(config.caller_header, abort)],
    )
    names = []
    for descriptor, service_cls in SERVICES:
        server.add_generic_rpc_handlers((service_handler(descriptor, service_cls(gw).methods(), gw, limit),))
        names.append(descriptor.full_name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        names + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise SystemExit(f"cannot listen on {config.listen}")
    await server.start()
    log.info("listening on %s (port %d), rebuilding state", config.listen, port)
    metrics_port = serve_metrics(config.metrics_listen, gw, lambda: INTERNAL_ERRORS) if config.metrics_listen else 0

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    rebuild = asyncio.create_task(gw.rebuild(progress))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({rebuild, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if rebuild.done():
        rebuild.result()  # a load failure ends start-up with its reason
        WATCH.freeze()
        for name in ["", *names]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("SERVING on port %d: %s, ledger seq %d", port, gw.state.engine.index.counts(),
                 gw.ledger.next_seq - 1)
        if ready is not None:
            ready(port, metrics_port)
        await stopping
    log.info("stopping: NOT_SERVING, %.0f s grace for in-flight calls", config.shutdown_grace_s)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(config.shutdown_grace_s)
    if not rebuild.done():
        rebuild.cancel()
    await gw.close()
    log.info("stopped")


def run(config: Config, **kwargs) -> None:
    import uvloop

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        uvloop.run(serve(config, **kwargs))
    except YidiError as err:
        raise SystemExit(err.clerk_message()) from None
    except LoadError as err:
        raise SystemExit(f"reference data rejected: {err}") from None
    except LedgerBehindSnapshot as err:
        raise SystemExit(f"refusing to start: {err}") from None

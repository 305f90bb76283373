"""Health, told from one truth in two places.

* On the mTLS port: the standard ``grpc.health.v1`` service (grpc.aio, on the
  event loop), for provincial platforms.
* With ``--health-listen host:port`` (loopback only): the same service in
  plaintext on a gRPC server of its own, served by its own threads, for an
  orchestrator's probe, which has no client certificate.  Because it does
  not run on the event loop, it can still answer when the loop is stalled,
  and it then says ``NOT_SERVING`` (``gateway.operations.watchdog`` tells it).

The gateway says what it is (``set_serving``); the watchdog says whether the
loop answers (``set_loop_stalled``).  The plaintext port reports SERVING only
when both are well.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger("yidi.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Threads answering the plaintext health port (a probe is one short call).
PROBE_THREADS = 2


def is_loopback(listen: str) -> bool:
    """host:port names a loopback address (127.0.0.0/8, ::1, localhost)."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Health:
    def __init__(self, names: list[str]) -> None:
        self.names = ["", *names]
        self.aio = health.aio.HealthServicer()
        self._plain = health.HealthServicer()   # thread-safe; answered by the probe server's threads
        self._server: grpc.Server | None = None
        self._lock = threading.Lock()
        self._serving = False
        self._loop_stalled = False

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.aio, server)

    def listen_plain(self, listen: str) -> int:
        """Serve the plaintext probe port (loopback only); the port it listens on."""
        if not is_loopback(listen):
            raise SystemExit(f"refusing a plaintext health port on {listen}: --health-listen is for loopback "
                             "addresses only (127.0.0.1, ::1, localhost)")
        server = grpc.server(futures.ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="yidi-health"),
                             options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self._plain, server)
        port = server.add_insecure_port(listen)
        if port == 0:
            raise SystemExit(f"cannot listen on {listen} (--health-listen): the port is taken or not allowed")
        self._publish()
        server.start()
        self._server = server
        log.info("plaintext health on %s (port %d)", listen, port)
        return port

    async def set_serving(self, serving: bool) -> None:
        """The gateway's own state (on the event loop)."""
        with self._lock:
            self._serving = serving
        status = SERVING if serving else NOT_SERVING
        for name in self.names:
            await self.aio.set(name, status)
        self._publish()

    def set_loop_stalled(self, stalled: bool) -> None:
        """The watchdog's view (any thread): a stalled loop is NOT_SERVING on the plaintext port at once."""
        with self._lock:
            self._loop_stalled = stalled
        self._publish()

    @property
    def serving(self) -> bool:
        with self._lock:
            return self._serving and not self._loop_stalled

    def _publish(self) -> None:
        status = SERVING if self.serving else NOT_SERVING
        for name in self.names:
            self._plain.set(name, status)

    async def enter_graceful_shutdown(self) -> None:
        with self._lock:
            self._serving = False
        self._publish()
        await self.aio.enter_graceful_shutdown()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0)
            self._server = None

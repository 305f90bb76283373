"""A real gateway in a subprocess, and a client for it: for tests, benchmarks and load runs.

``start_gateway`` runs ``python -m gateway serve`` on 127.0.0.1 port 0 with
mTLS and waits for its ``SERVING host:port`` line; callers then talk to it
over real gRPC and TLS on loopback, as a provincial platform would:
``gw.client("460000")`` presents 海南's client certificate (development
certificates made once per process by ``dev_certs``).  It lives in the package
(as aiohttp.test_utils does) so that bench/ and tests/ share one copy
without reaching into each other.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import grpc

from gateway.security import certs
from gateway._pb.yidi.v1 import (admin_pb2_grpc, diagnostics_pb2_grpc, filing_pb2_grpc, funds_pb2_grpc,
                                   problems_pb2_grpc, settlement_pb2_grpc)
from gateway.store.seal import LedgerKey, SealKey
from gateway.transport.status import reason_of

# The directory that holds the gateway package (the repository root in a
# checkout): the server subprocess imports this same copy.
HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_CERTS: certs.Paths | None = None


def dev_certs() -> certs.Paths:
    """Development certificates for tests and benchmarks, made once per process (a few ms)."""
    global _CERTS
    if _CERTS is None:
        _CERTS = certs.write_dev_certs(tempfile.mkdtemp(prefix="yidi-test-certs-"))
    return _CERTS


def seal_key() -> SealKey:
    """The development seal key of ``dev_certs`` (for stores opened in the test's own process)."""
    return SealKey.read(dev_certs().seal_key)


def ledger_key(ledger_path: str) -> LedgerKey:
    """The key of a ledger sealed with ``seal_key`` (read from its head row, without opening the store)."""
    import sqlite3

    from gateway.store.chain import decode_head_row as _HEAD_DECODE

    conn = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    try:
        (body,) = conn.execute("SELECT body FROM head WHERE id = 1").fetchone()
    finally:
        conn.close()
    return seal_key().for_ledger(_HEAD_DECODE(body).ledger_id)


def credentials(caller: str | None, paths: certs.Paths | None = None) -> grpc.ChannelCredentials:
    """TLS credentials presenting caller's client certificate (none for caller None)."""
    paths = paths or dev_certs()
    with open(paths.ca, "rb") as f:
        ca = f.read()
    if caller is None:
        return grpc.ssl_channel_credentials(ca)
    with open(paths.client_key(caller), "rb") as k, open(paths.client_cert(caller), "rb") as c:
        return grpc.ssl_channel_credentials(ca, k.read(), c.read())


@dataclass
class Gateway:
    """A gateway subprocess: where it listens, its log, and the channels opened to it (closed by stop)."""

    proc: subprocess.Popen
    target: str
    log_path: str
    channels: list = field(default_factory=list)
    certs: certs.Paths | None = None
    insecure: bool = False

    def channel(self, caller: str | None, options=()) -> grpc.Channel:
        """A channel presenting caller's certificate (None: no client certificate; plaintext if insecure)."""
        if self.insecure:
            channel = grpc.insecure_channel(self.target, options=list(options))
        else:
            channel = grpc.secure_channel(self.target, credentials(caller, self.certs), options=list(options))
        self.channels.append(channel)
        return channel
    metrics_url: str = ""   # with --metrics-listen: where /metrics is served
    health_target: str = ""  # with --health-listen: host:port of the plaintext health service

    def plain_health(self, timeout: float = 2) -> str:
        """The plaintext health port's answer: "SERVING", "NOT_SERVING" or the gRPC code of a failed probe."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.health_target) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError as err:
                return err.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def client(self, caller: str | None) -> "Client":
        return Client(self.channel(caller), caller)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        for channel in self.channels:
            channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.stdout.close()

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


def start_gateway(data_dir: str, ledger: str, *extra: str, timeout: float = 120, wait_for: str = "SERVING",
                  listen: str = "127.0.0.1:0") -> Gateway:
    """Serve data_dir with the ledger file ledger (its log beside it, ledger + ".log"); extra: more serve options.

    Returns once the gateway prints ``SERVING host:port`` (``wait_for="LISTENING"``: as soon as it
    listens, before its state is rebuilt or its ledger found writable).  TLS with the development
    certificates of ``dev_certs`` unless extra has ``--insecure`` (node-a's, unless extra names another).
    """
    # The server runs in HOME, so relative paths are made absolute from the caller's directory first.
    data_dir, ledger = os.path.abspath(data_dir), os.path.abspath(ledger)
    log_path = ledger + ".log"
    log = open(log_path, "ab")
    env = dict(os.environ, PYTHONPATH=HOME, PYTHONUNBUFFERED="1")
    insecure = "--insecure" in extra
    paths = None if insecure else dev_certs()
    options = [] if insecure else ["--cert", paths.server_cert, "--key", paths.server_key, "--ca", paths.ca]
    if not insecure and "--node-cert" not in extra:   # what it presents if it forwards calls (--owner-address)
        options += ["--node-cert", paths.node_cert("node-a"), "--node-key", paths.node_key("node-a")]
    if "--seal-key" not in extra:
        options += ["--seal-key", dev_certs().seal_key]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--data-dir", data_dir, "--ledger", ledger,
         "--listen", listen, *options, *extra],
        cwd=HOME, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith(wait_for + " "):
            words = line.split()
            metrics = words[words.index("metrics") + 1] if "metrics" in words else ""
            health = words[words.index("health") + 1] if "health" in words else ""
            return Gateway(proc, words[1], log_path, certs=paths, insecure=insecure, metrics_url=metrics,
                           health_target=health)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    with open(log_path, encoding="utf-8", errors="replace") as f:
        raise RuntimeError(f"gateway did not start:\n{f.read()[-4000:]}")


class Client:
    """Stubs for the Yidi services, calling as one caller (the client certificate of its channel)."""

    def __init__(self, channel: grpc.Channel, caller: str | None) -> None:
        self.channel = channel
        self.caller = caller
        self.metadata = ()
        self.filing = filing_pb2_grpc.FilingServiceStub(channel)
        self.settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.funds = funds_pb2_grpc.FundsServiceStub(channel)
        self.problems = problems_pb2_grpc.ProblemServiceStub(channel)
        self.diagnostics = diagnostics_pb2_grpc.DiagnosticsServiceStub(channel)

    def __call__(self, method, request, **kwargs):
        return method(request, metadata=self.metadata, timeout=30, **kwargs)

    def raw(self, method, request):
        """The call's response bytes exactly as the server sent them."""
        rpc = self.channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=lambda b: b)
        return rpc(request, metadata=self.metadata, timeout=30)

    def refused(self, method, request, metadata=(), timeout: float = 30) -> tuple[grpc.StatusCode, str, str]:
        """(status code, reason, message) of a call that must fail."""
        try:
            method(request, metadata=tuple(metadata) or self.metadata, timeout=timeout)
        except grpc.RpcError as err:
            return err.code(), reason_of(err), err.details()
        raise AssertionError("the call was expected to be refused but succeeded")

"""A real gateway in a subprocess, for contract, durability and CLI tests.

The server listens on 127.0.0.1 port 0 and prints ``SERVING host:port``;
tests talk to it over real gRPC on loopback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import grpc

from datagen.spec_fixture import make_certno
from gateway._pb.yidi.v1 import admin_pb2_grpc, common_pb2 as pb, filing_pb2 as fpb, filing_pb2_grpc, settlement_pb2_grpc
from gateway.status import reason_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Gateway:
    proc: subprocess.Popen
    target: str
    log_path: str
    channels: list = field(default_factory=list)

    def client(self, caller: str | None) -> "Client":
        channel = grpc.insecure_channel(self.target)
        self.channels.append(channel)
        return Client(channel, caller)

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


def start_gateway(data_dir: str, ledger: str, *extra: str, timeout: float = 120) -> Gateway:
    log_path = ledger + ".log"
    log = open(log_path, "ab")
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--data-dir", data_dir, "--ledger", ledger,
         "--listen", "127.0.0.1:0", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("SERVING "):
            return Gateway(proc, line.split()[1], log_path)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    with open(log_path, encoding="utf-8", errors="replace") as f:
        raise RuntimeError(f"gateway did not start:\n{f.read()[-4000:]}")


class Client:
    """Stubs for the three services, calling as one caller (x-yidi-caller)."""

    def __init__(self, channel: grpc.Channel, caller: str | None) -> None:
        self.channel = channel
        self.metadata = (("x-yidi-caller", caller),) if caller else ()
        self.filing = filing_pb2_grpc.FilingServiceStub(channel)
        self.settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    def __call__(self, method, request, **kwargs):
        return method(request, metadata=self.metadata, timeout=30, **kwargs)

    def raw(self, method, request):
        """The call's response bytes exactly as the server sent them."""
        rpc = self.channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=lambda b: b)
        return rpc(request, metadata=self.metadata, timeout=30)

    def refused(self, method, request) -> tuple[grpc.StatusCode, str, str]:
        """(status code, reason, message) of a call that must fail."""
        try:
            method(request, metadata=self.metadata, timeout=30)
        except grpc.RpcError as err:
            return err.code(), reason_of(err), err.details()
        raise AssertionError("the call was expected to be refused but succeeded")


def file_person(client: Client, psn_no: str, certno17: str, *, filing_id: str = "", kind: str = "long_term_residence",
                dest: str = "460000", codes=(), valid_to: int = 0, **person_fields) -> fpb.FilingResponse:
    """File a test person insured in 沈阳市和平区 (210102), as 辽宁 (the caller) would.

    The filing starts 20260101; its id defaults to "F-" + psn_no, the request id is "file-" + psn_no.
    ``person_fields`` override the Person message's fields (person_type, assistance, status ...).
    """
    person = dict(psn_no=psn_no, certno=make_certno(certno17), name="测试人", insuplc_admdvs="210102",
                  insutype=pb.INSUTYPE_EMPLOYEE, person_type=pb.PERSON_TYPE_IN_SERVICE,
                  status=pb.PERSON_STATUS_ACTIVE, card_no="K" + psn_no[-8:], card_version="3.0")
    person.update(person_fields)
    filing = pb.Filing(filing_id=filing_id or "F-" + psn_no, psn_no=psn_no,
                       kind=getattr(pb, "FILING_KIND_" + kind.upper()), dest_admdvs=dest, fixmedins_codes=list(codes),
                       valid_from=20260101, valid_to=valid_to, status=pb.FILING_STATUS_ACTIVE)
    return client(client.filing.File, fpb.FileRequest(request_id="file-" + psn_no, person=pb.Person(**person),
                                                       filing=filing))

"""Certificates reloaded on SIGHUP (gateway/security/tls.py): a stream opened before the reload goes on over its
connection, new connections get the new certificates, and files that cannot serve are refused while the
ones in use stay."""
from __future__ import annotations

import queue
import shutil
import signal
import time

import grpc
import pytest

from datagen.spec_fixture import write_spec_dataset
from gateway.security import certs
from gateway._pb.yidi.v1 import diagnostics_pb2 as dpb, settlement_pb2 as spb
from gateway._pb.yidi.v1 import diagnostics_pb2_grpc, settlement_pb2_grpc
from gateway.testing import credentials, dev_certs
from gateway.security.tls import CertificateError, check
from builders import outpatient

HAINAN = "460000"


def install(source: certs.Paths, live) -> None:
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copy(f"{source.directory}/{name}", live / name)


def ping(target: str, paths: certs.Paths) -> grpc.StatusCode:
    with grpc.secure_channel(target, credentials(HAINAN, paths)) as channel:
        try:
            diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Ping(dpb.PingRequest(), timeout=5)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()


def item(n: int) -> spb.SettleItem:
    return spb.SettleItem(outpatient=outpatient(f"tls-{n}", "P-NOBODY", price=100, qty_milli=1000))


def wait_for(gw, text: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while gw.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} never logged {count} times:\n{gw.log()[-2000:]}"
        time.sleep(0.05)


def test_sighup_rotates_the_certificates_without_dropping_a_connection(tmp_path, gateways):
    old, new = dev_certs(), certs.write_dev_certs(str(tmp_path / "new"))
    live = tmp_path / "live"
    live.mkdir()
    install(old, live)
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--cert", str(live / "server.pem"),
                  "--key", str(live / "server.key"), "--ca", str(live / "ca.pem"))
    try:
        # A stream opened with the old certificates, before the rotation.
        channel = grpc.secure_channel(gw.target, credentials(HAINAN, old))
        requests: queue.Queue = queue.Queue()
        outcomes = settlement_pb2_grpc.SettlementServiceStub(channel).SettleStream(iter(requests.get, None), timeout=60)
        requests.put(item(1))
        assert next(outcomes).refused.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]

        install(new, live)
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(gw, "TLS certificates loaded", 2)
        requests.put(item(2))           # the same stream, over the connection made before the reload
        assert next(outcomes).refused.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert ping(gw.target, new) == grpc.StatusCode.OK
        assert ping(gw.target, old) == grpc.StatusCode.UNAVAILABLE      # the old CA signs no accepted client now

        (live / "server.key").write_text("not a key")
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(gw, "TLS certificates not reloaded", 1)
        assert ping(gw.target, new) == grpc.StatusCode.OK
        requests.put(None)
        assert list(outcomes) == []
        channel.close()
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]


def test_check_names_what_is_wrong(tmp_path):
    a, b = dev_certs(), certs.write_dev_certs(str(tmp_path / "b"))

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    assert "CN=yidi-gateway" in check(read(a.server_cert), read(a.server_key), read(a.ca))
    with pytest.raises(CertificateError, match="does not belong"):
        check(read(a.server_cert), read(b.server_key), read(a.ca))
    with pytest.raises(CertificateError, match="cannot parse"):
        check(b"junk", read(a.server_key), read(a.ca))

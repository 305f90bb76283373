"""Start-up: the gateway listens at once but reports SERVING only after the state is rebuilt.

A data set large enough that loading takes a moment (~1 s) lets the test
talk to the gateway while it loads: health says NOT_SERVING and a Yidi RPC is
refused UNAVAILABLE/NOT_READY; then health turns SERVING.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._pb.yidi.v1 import admin_pb2, admin_pb2_grpc
from datagen import generate
from gateway.status import reason_of
from gateway_harness import ROOT


def test_not_serving_until_rebuilt(tmp_path):
    generate(str(tmp_path / "data"), persons=300_000, seed=1)
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp_path / "data"),
             "--ledger", str(tmp_path / "ledger.sqlite"), "--listen", "127.0.0.1:0"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL, stderr=log,
            stdin=subprocess.DEVNULL)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            found = re.search(r"listening on \S+ \(port (\d+)\)", log_path.read_text(errors="replace"))
            port = found and int(found.group(1))
            time.sleep(0.01)
        assert port, log_path.read_text(errors="replace")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            first = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert first == health_pb2.HealthCheckResponse.NOT_SERVING, "loading finished before the first check"
            try:
                admin.GetReferenceDataStatus(admin_pb2.GetReferenceDataStatusRequest(),
                                             metadata=(("x-yidi-caller", "national"),), timeout=10)
                raise AssertionError("a Yidi RPC was answered while the state was loading")
            except grpc.RpcError as err:
                assert (err.code(), reason_of(err)) == (grpc.StatusCode.UNAVAILABLE, "NOT_READY")
            while health.Check(health_pb2.HealthCheckRequest(), timeout=10).status != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            status = admin.GetReferenceDataStatus(admin_pb2.GetReferenceDataStatusRequest(),
                                                  metadata=(("x-yidi-caller", "national"),), timeout=10)
            assert status.counts["persons"] == 300_000
    finally:
        proc.terminate()
        assert proc.wait(30) == 0

"""Start-up: the gateway listens at once but reports SERVING only after the state is rebuilt.

A data set large enough that loading takes a moment (~1 s) lets the test
talk to the gateway while it loads: health says NOT_SERVING and a Yidi RPC is
refused UNAVAILABLE/NOT_READY; then health turns SERVING.
"""
from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datagen import generate
from gateway._pb.yidi.v1 import admin_pb2
from gateway.transport.status import reason_of


def test_not_serving_until_rebuilt(tmp_path, gateways):
    generate(str(tmp_path / "data"), persons=300_000, seed=1)
    gw = gateways(str(tmp_path / "data"), str(tmp_path / "ledger.sqlite"), wait_for="LISTENING")
    try:
        national = gw.client("national")
        health = health_pb2_grpc.HealthStub(national.channel)
        first = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert first == health_pb2.HealthCheckResponse.NOT_SERVING, "loading finished before the first check"
        try:
            national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
            raise AssertionError("a Yidi RPC was answered while the state was loading")
        except grpc.RpcError as err:
            assert (err.code(), reason_of(err)) == (grpc.StatusCode.UNAVAILABLE, "NOT_READY")
        deadline = time.monotonic() + 60
        while health.Check(health_pb2.HealthCheckRequest(), timeout=10).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline and gw.proc.poll() is None
            time.sleep(0.05)
        status = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
        assert status.counts["persons"] == 300_000
    finally:
        assert gw.stop() == 0

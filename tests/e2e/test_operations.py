"""docs/operations.md as an operator follows it: the OpenSSL recipe for real certificates makes files a
gateway serves with and a province's platform settles with, and the probe command reads the plaintext health
port's answer in its exit status."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import grpc
import pytest

from datagen.spec_fixture import write_spec_dataset
from external_tools import need
from gateway._pb.yidi.v1 import diagnostics_pb2 as dpb, diagnostics_pb2_grpc
from gateway.security.auth import FORWARDED_FOR
from gateway.transport.status import reason_of
from gateway_harness import ROOT


def block(name: str) -> str:
    with open(os.path.join(ROOT, "docs", "operations.md"), encoding="utf-8") as f:
        found = re.search(rf"<!-- {name}:start -->\n```sh\n(.*?)```\n<!-- {name}:end -->", f.read(), re.S)
    assert found, f"docs/operations.md lost its {name} block"
    return found.group(1)


def test_the_openssl_recipe_makes_certificates_a_gateway_and_a_platform_use(tmp_path, gateways):
    need("openssl", "Debian package openssl")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", block("ca")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "server.pem: OK" in run.stdout and "460000.pem: OK" in run.stdout and "node-a.pem: OK" in run.stdout
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--cert", str(tmp_path / "server.pem"),
                  "--key", str(tmp_path / "server.key"), "--ca", str(tmp_path / "ca.pem"))
    try:
        read = lambda name: (tmp_path / name).read_bytes()  # noqa: E731
        credentials = grpc.ssl_channel_credentials(read("ca.pem"), read("460000.key"), read("460000.pem"))
        with grpc.secure_channel(gw.target, credentials) as channel:
            diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Ping(dpb.PingRequest(), timeout=10)
        # The node certificate is a node's: no caller of its own, the caller it forwards for with the entry.
        node = grpc.ssl_channel_credentials(read("ca.pem"), read("node-a.key"), read("node-a.pem"))
        with grpc.secure_channel(gw.target, node) as channel:
            ping = diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Ping
            with pytest.raises(grpc.RpcError) as refused:
                ping(dpb.PingRequest(), timeout=10)
            assert reason_of(refused.value) == "FORWARDING_REFUSED"
            ping(dpb.PingRequest(), timeout=10, metadata=((FORWARDED_FOR, "460000"),))
        # The same files through the CLI, as the docs show: 海南 reads its own prepaid position.
        yidi = [sys.executable, "-m", "gateway", "--target", gw.target, "--caller", "460000", "--cert",
                str(tmp_path / "460000.pem"), "--key", str(tmp_path / "460000.key"), "--ca", str(tmp_path / "ca.pem")]
        shown = subprocess.run([*yidi, "positions", "--province", "460000"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
        assert shown.returncode == 0 and "province" in shown.stdout, shown.stderr
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]


def test_the_probe_command_exits_by_the_plaintext_health_answer(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--health-listen", "127.0.0.1:0")
    probe = [sys.executable, "-m", "gateway", "--insecure", "--target", gw.target, "health"]
    try:
        assert gw.health_target
        probe[probe.index(gw.target)] = gw.health_target
        serving = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert serving.returncode == 0 and "SERVING" in serving.stdout, serving.stderr
    finally:
        assert gw.stop() == 0
    stopped = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 1 and "cannot reach the gateway" in stopped.stderr


def test_a_port_in_use_ends_start_up_with_one_sentence(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"))
    try:
        second = subprocess.run([sys.executable, "-m", "gateway", "serve", "--data-dir", names["dir"], "--ledger",
                                 str(tmp_path / "other.sqlite"), "--listen", gw.target, "--certs",
                                 gw.certs.directory], cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        assert gw.stop() == 0
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cannot listen on {gw.target}: the address is in use") and "Traceback" not in second.stderr

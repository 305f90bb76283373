"""The plaintext benchmark listener (`--insecure --insecure-caller`) settles, stays on loopback, and TLS keeps
its identities: a plaintext connection reports a transport security type too ("insecure", grpcio 1.85), so
only the type "ssl" counts as TLS.  Real gRPC over loopback throughout."""
from __future__ import annotations

import asyncio

import grpc
import pytest

import builders
from builders import GZ_L3, HK_L1
from core.errors import YidiError
from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.config import Config
from gateway.security import auth
from gateway.testing import dev_certs
from gateway.transport.server import check_listen

HAINAN, GUANGDONG = "460000", "440000"


def plain_settlement(names, request_id: str, inst: str = HK_L1) -> spb.OutpatientSettleRequest:
    return builders.outpatient(request_id, names["psn"]["in_service"], inst, date=20260315, qty_milli=1000)


def test_a_settlement_succeeds_on_the_plaintext_benchmark_listener(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--insecure", "--insecure-caller", HAINAN)
    hainan = gw.client(None)   # plaintext: no certificate; the server names the caller
    answer = hainan(hainan.settlement.OutpatientSettle, plain_settlement(names, "plain-1"))
    assert answer.settlement.setl_id and answer.settlement.breakdown.medfee_sumamt == 1250
    assert hainan.raw("/yidi.v1.SettlementService/OutpatientSettle", plain_settlement(names, "plain-1")) \
        == answer.SerializeToString()   # a replay, from the same key
    # The caller is 海南 and no one else: 海南 may not settle at an institution of 广东.
    code, reason, _ = hainan.refused(hainan.settlement.OutpatientSettle, plain_settlement(names, "plain-2", GZ_L3))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


def test_without_a_named_caller_the_plaintext_listener_refuses_yidi_calls(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--insecure")
    client = gw.client(None)
    code, reason, message = client.refused(client.settlement.OutpatientSettle, plain_settlement(names, "plain-x"))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED") and "TLS" in message


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051", "example.org:50051"])
def test_the_plaintext_listener_binds_loopback_only(listen):
    with pytest.raises(SystemExit, match="loopback"):
        check_listen(Config(insecure=True, insecure_caller=HAINAN, listen=listen))
    check_listen(Config(insecure=True, insecure_caller=HAINAN, listen="127.0.0.1:0"))


@pytest.mark.parametrize("peer, loopback", [
    ("ipv4:127.0.0.1:5000", True), ("ipv6:[::1]:5000", True), ("ipv6:%5B::1%5D:5000", True),
    ("ipv4:10.0.0.7:5000", False), ("ipv6:[2001:db8::1]:5000", False), ("unix:/tmp/x", False), ("", False)])
def test_only_a_loopback_peer_is_taken_for_the_named_caller(peer, loopback):
    assert auth.loopback_peer(peer) is loopback


def test_one_server_tells_tls_from_plaintext_by_the_security_type(monkeypatch):
    """Both kinds of listener on one grpc.aio server, the benchmark caller named: a plaintext call is that
    caller, a TLS call is the caller of its certificate (never the benchmark's), whatever else is set."""
    monkeypatch.setattr(auth, "INSECURE_CALLER", HAINAN)
    paths = dev_certs()

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    async def who(_request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return auth.resolve_caller(context).encode()
        except YidiError as err:
            return err.reason.encode()

    async def main() -> tuple[bytes, bytes, str]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "t.Who", {"Am": grpc.unary_unary_rpc_method_handler(who)}),))
        plain = server.add_insecure_port("127.0.0.1:0")
        tls = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
            [(read(paths.server_key), read(paths.server_cert))], read(paths.ca), require_client_auth=True))
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{plain}") as channel:
                over_plain = await channel.unary_unary("/t.Who/Am")(b"", timeout=10)
            credentials = grpc.ssl_channel_credentials(read(paths.ca), read(paths.client_key(GUANGDONG)),
                                                       read(paths.client_cert(GUANGDONG)))
            async with grpc.aio.secure_channel(f"localhost:{tls}", credentials) as channel:
                over_tls = await channel.unary_unary("/t.Who/Am")(b"", timeout=10)
            async with grpc.aio.secure_channel(f"localhost:{tls}", grpc.ssl_channel_credentials(read(paths.ca))) as ch:
                try:   # no client certificate: the handshake itself refuses it
                    await ch.unary_unary("/t.Who/Am")(b"", timeout=10)
                    without = "OK"
                except grpc.aio.AioRpcError as err:
                    without = err.code().name
        finally:
            await server.stop(0)
        return over_plain, over_tls, without

    over_plain, over_tls, without = asyncio.run(main())
    assert (over_plain, over_tls) == (HAINAN.encode(), GUANGDONG.encode())
    assert without == "UNAVAILABLE"

"""Two gateway nodes over real gRPC and mTLS: a mutating call sent to the node that does not own it is performed
by the owner and answered byte for byte (gateway/transport/forward.py).

The owner is static here (``--owner-address``); each node has its own SQLite ledger, so the other node's ledger
staying where it was shows that the owner, not it, performed what it forwarded.  The ``yidi-forwarded-for``
entry that names a forwarded call's caller is trusted from a node's certificate only.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.rpc import error_details_pb2, status_pb2

from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.security import certs
from gateway.security.auth import FORWARDED_FOR
from gateway.testing import dev_certs
from gateway.transport.forward import forwarded
from gateway.transport.server import SERVICES
from gateway.transport.status import detail_of, reason_of
from builders import GZ_L3, ledger_seq, outpatient
from gateway_harness import ROOT, file_person

HAINAN, LIAONING = "460000", "210000"
OUTPATIENT = "/yidi.v1.SettlementService/OutpatientSettle"
DETAILS = "grpc-status-details-bin"


@pytest.fixture(scope="module")
def owner(gw):
    return gw


@pytest.fixture(scope="module")
def node(owner, spec_data, module_gateways, tmp_path_factory):
    """node-b: every mutating call goes to the owner."""
    ledger = tmp_path_factory.mktemp("node-b") / "ledger.sqlite"
    paths = dev_certs()
    return module_gateways(spec_data["dir"], ledger, "--owner-address", owner.target, "--node-cert",
                           paths.node_cert("node-b"), "--node-key", paths.node_key("node-b"),
                           "--metrics-listen", "127.0.0.1:0")


@pytest.fixture(scope="module", autouse=True)
def filed(node):
    file_person(node.client(LIAONING), "FW-1", "21010219800101051")   # filed through the node: on the owner


def seqs(owner, node) -> tuple[int, int]:
    return ledger_seq(owner.client("national")), ledger_seq(node.client("national"))


def raw(channel: grpc.Channel, request, metadata=()) -> bytes:
    """A settlement's answer bytes exactly as the server sent them."""
    return channel.unary_unary(OUTPATIENT, request_serializer=spb.OutpatientSettleRequest.SerializeToString,
                               response_deserializer=lambda b: b)(request, metadata=metadata, timeout=30)


def refusal(channel: grpc.Channel, request, metadata=()) -> tuple:
    """(code, message, the status details' bytes) of a refused settlement."""
    with pytest.raises(grpc.RpcError) as caught:
        raw(channel, request, metadata)
    err = caught.value
    return err.code(), err.details(), dict(err.trailing_metadata())[DETAILS]


def test_a_settlement_sent_to_the_other_node_is_performed_by_the_owner_and_answered_byte_for_byte(owner, node):
    before = seqs(owner, node)
    via_node = raw(node.channel(HAINAN), outpatient("fw-1", "FW-1"))
    assert seqs(owner, node) == (before[0] + 1, before[1])          # the owner's ledger, never the node's
    assert raw(owner.channel(HAINAN), outpatient("fw-1", "FW-1")) == via_node   # the owner's own answer
    direct = raw(owner.channel(HAINAN), outpatient("fw-2", "FW-1"))
    assert raw(node.channel(HAINAN), outpatient("fw-2", "FW-1")) == direct       # a replay through the node
    assert seqs(owner, node) == (before[0] + 2, 0)   # the node's own ledger is empty: its filing went on too
    settled = spb.SettlementResponse.FromString(via_node).settlement
    assert settled.setl_id and settled.breakdown.medfee_sumamt == 2500   # 1250 fen x 2
    # audited by the owner as its original caller, 海南 (not as the node that forwarded it)
    with open(owner.log_path.removesuffix(".log") + ".audit.jsonl", encoding="utf-8") as f:
        audited = [json.loads(line) for line in f if '"fw-1"' in line]
    assert [(a["caller"], a["outcome"]) for a in audited] == [(HAINAN, "ok"), (HAINAN, "replayed")]


def test_a_refusal_comes_back_with_the_owners_status_reason_and_details(owner, node):
    before = seqs(owner, node)
    for request, reason in ((outpatient("fw-3", "FW-NOBODY"), "PERSON_NOT_FILED"),
                            (outpatient("fw-4", "FW-1", inst=GZ_L3), "PERMISSION_DENIED"),
                            (outpatient("fw-5", "FW-1", price=-5), "INVALID_PRICE")):
        via_node = refusal(node.channel(HAINAN), request)
        assert via_node == refusal(owner.channel(HAINAN), request)
        info = error_details_pb2.ErrorInfo()
        status_pb2.Status.FromString(via_node[2]).details[0].Unpack(info)
        assert info.reason == reason, via_node[1]
        if reason == "PERMISSION_DENIED":   # authorized on the owner, as the original caller (not as the node)
            assert HAINAN in via_node[1]
    assert seqs(owner, node) == before


def test_a_batch_and_a_stream_through_the_node_are_performed_by_the_owner(owner, node):
    hainan = node.client(HAINAN)
    before = seqs(owner, node)
    batch = hainan(hainan.settlement.SettleBatch, spb.SettleBatchRequest(items=[
        spb.SettleItem(outpatient=outpatient("fw-b1", "FW-1")), spb.SettleItem(outpatient=outpatient("fw-b2", "FW-0"))]))
    assert [o.WhichOneof("outcome") for o in batch.outcomes] == ["settlement", "refused"]
    items = [spb.SettleItem(outpatient=outpatient(f"fw-s{n}", "FW-1")) for n in range(3)]
    streamed = list(hainan.settlement.SettleStream(iter(items), timeout=30))
    assert [o.WhichOneof("outcome") for o in streamed] == ["settlement"] * 3
    assert seqs(owner, node) == (before[0] + 4, before[1])
    # the stream replayed on the owner: the same answers, nothing more done
    assert list(owner.client(HAINAN).settlement.SettleStream(iter(items), timeout=30)) == streamed
    assert seqs(owner, node)[0] == before[0] + 4


def test_reads_are_answered_by_the_node_itself(owner, node):
    hainan = node.client(HAINAN)
    setl_id = hainan(hainan.settlement.OutpatientSettle, outpatient("fw-r", "FW-1")).settlement.setl_id
    _, reason, _ = hainan.refused(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=setl_id))
    assert reason == "SETTLEMENT_NOT_FOUND"   # this node's own state (SQLite: not shared with the owner)
    at_owner = owner.client(HAINAN)
    assert at_owner(at_owner.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=setl_id)).settlement.setl_id \
        == setl_id


def test_a_province_cannot_name_another_caller_with_the_forwarding_entry(owner, node):
    """The attacker: 海南's certificate with an entry naming 辽宁 (or even itself) is refused by either node, and
    nothing is done."""
    before = seqs(owner, node)
    for gateway in (owner, node):
        for caller in (LIAONING, HAINAN):
            code, message, _ = refusal(gateway.channel(HAINAN), outpatient(f"fw-x-{caller}", "FW-1"),
                                       ((FORWARDED_FOR, caller),))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "[FORWARDING_REFUSED]" in message
    assert seqs(owner, node) == before


def node_channel(target: str, name: str) -> grpc.Channel:
    """A channel presenting node name's certificate, as a forwarding node does."""
    paths = dev_certs()
    with open(paths.ca, "rb") as ca, open(paths.node_key(name), "rb") as key, open(paths.node_cert(name), "rb") as cert:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(ca.read(), key.read(), cert.read()))


def test_a_node_certificate_is_no_caller_of_its_own(owner, node):
    before = seqs(owner, node)
    with node_channel(owner.target, "node-a") as channel:
        for metadata in ((), ((FORWARDED_FOR, "not-a-caller"),)):
            code, message, _ = refusal(channel, outpatient("fw-n", "FW-1"), metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED and "[FORWARDING_REFUSED]" in message
        # with the entry it acts as the caller it names: what a forwarding node does
        answer = spb.SettlementResponse.FromString(raw(channel, outpatient("fw-n", "FW-1"), ((FORWARDED_FOR, HAINAN),)))
        assert answer.settlement.setl_id
    assert seqs(owner, node) == (before[0] + 1, before[1])


def test_forwarded_calls_are_counted_by_method_and_outcome(node):
    text = urllib.request.urlopen(node.metrics_url, timeout=10).read().decode()
    ok = [line for line in text.splitlines()
          if line.startswith('yidi_forwarded_calls_total{method="SettlementService/OutpatientSettle",outcome="OK"}')]
    assert ok and float(ok[0].split()[-1]) >= 2
    assert 'yidi_forwarded_calls_total{method="SettlementService/OutpatientSettle",outcome="PERSON_NOT_FILED"}' in text


def test_an_owner_down_is_owner_unavailable_and_the_retry_once_it_is_back_is_performed(spec_data, gateways, tmp_path):
    with socket.socket() as s:          # a port nothing listens on: the owner is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    orphan = gateways(spec_data["dir"], tmp_path / "node.sqlite", "--owner-address", f"127.0.0.1:{port}")
    with pytest.raises(grpc.RpcError) as caught:
        raw(orphan.channel(HAINAN), outpatient("fw-down", "FW-1"))
    assert (caught.value.code(), reason_of(caught.value)) == (grpc.StatusCode.UNAVAILABLE, "OWNER_UNAVAILABLE")
    assert detail_of(caught.value, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() > 0
    assert "[OWNER_UNAVAILABLE]" in caught.value.details()
    # the owner starts at its address: the same requests, retried as advised, are performed there
    back = gateways(spec_data["dir"], tmp_path / "owner.sqlite", listen=f"127.0.0.1:{port}")
    retried(lambda: file_person(orphan.client(LIAONING), "FW-1", "21010219800101051"))
    answer = spb.SettlementResponse.FromString(raw(orphan.channel(HAINAN), outpatient("fw-down", "FW-1")))
    assert ledger_seq(back.client("national")) == 2 and answer.settlement.setl_id


def test_the_owner_gets_the_clients_remaining_deadline(spec_data, gateways, tmp_path, monkeypatch):
    """An owner whose settlements stall 1.2 s (a test hook) is past a 0.5 s deadline when it would perform the
    call: it does not, so it was given the client's deadline; the retry with time enough is performed once."""
    monkeypatch.setenv("YIDI_STALL_RPC", "SettlementService/OutpatientSettle:1200")
    slow = gateways(spec_data["dir"], tmp_path / "owner.sqlite")
    monkeypatch.delenv("YIDI_STALL_RPC")
    node = gateways(spec_data["dir"], tmp_path / "node.sqlite", "--owner-address", slow.target)
    file_person(node.client(LIAONING), "FW-1", "21010219800101051")
    national = slow.client("national")
    with pytest.raises(grpc.RpcError) as caught:
        node.channel(HAINAN).unary_unary(OUTPATIENT, request_serializer=spb.OutpatientSettleRequest.SerializeToString)(
            outpatient("fw-late", "FW-1"), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ledger_seq(national) == 1        # answered once the stall is over: the filing only
    spb.SettlementResponse.FromString(raw(node.channel(HAINAN), outpatient("fw-late", "FW-1")))
    assert ledger_seq(national) == 2


def test_sighup_reloads_the_node_certificate_calls_are_forwarded_with(owner, spec_data, gateways, tmp_path):
    """A renewed node certificate is taken on SIGHUP without a restart: files that fail the check leave the one in
    use; a certificate the owner does not trust (another CA's) makes the next forwarded call OWNER_UNAVAILABLE,
    which shows the new one is presented; putting the right one back and SIGHUP again restores forwarding."""
    paths, live = dev_certs(), tmp_path / "live"
    live.mkdir()

    def install(cert: bytes, key: bytes) -> None:
        (live / "node.pem").write_bytes(cert)
        (live / "node.key").write_bytes(key)

    def hup_and_wait(text: str, count: int) -> None:
        hupped.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while hupped.log().count(text) < count:
            assert time.monotonic() < deadline, f"{text!r} never logged {count} times:\n{hupped.log()[-2000:]}"
            time.sleep(0.05)

    good = (certs.read(paths.node_cert("node-b")), certs.read(paths.node_key("node-b")))
    install(*good)
    hupped = gateways(spec_data["dir"], tmp_path / "node.sqlite", "--owner-address", owner.target,
                      "--node-cert", str(live / "node.pem"), "--node-key", str(live / "node.key"))
    national = owner.client("national")
    start = ledger_seq(national)
    raw(hupped.channel(HAINAN), outpatient("fw-hup-1", "FW-1"))
    assert ledger_seq(national) == start + 1

    install(good[0], b"not a key")
    hup_and_wait("node certificate not reloaded", 1)
    raw(hupped.channel(HAINAN), outpatient("fw-hup-2", "FW-1"))      # the certificate in use stayed
    assert ledger_seq(national) == start + 2

    ca_cert, ca_key = certs.make_ca("another CA")
    cert, key = certs.issue(ca_cert, ca_key, "node-b", [x509.UniformResourceIdentifier("yidi://node/node-b")],
                            server=True, usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    install(certs.pem(cert), certs.pem_key(key))
    hup_and_wait("node certificate loaded", 2)
    with pytest.raises(grpc.RpcError) as caught:
        raw(hupped.channel(HAINAN), outpatient("fw-hup-3", "FW-1"))
    assert reason_of(caught.value) == "OWNER_UNAVAILABLE"                   # the owner refused its handshake
    assert ledger_seq(national) == start + 2

    install(*good)
    hup_and_wait("node certificate loaded", 3)
    retried(lambda: raw(hupped.channel(HAINAN), outpatient("fw-hup-3", "FW-1")))
    assert ledger_seq(national) == start + 3


def retried(call, within_s: float = 5.0):
    """call(), retried after RetryInfo's delay while it is refused OWNER_UNAVAILABLE (the node reconnects)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            if reason_of(err) != "OWNER_UNAVAILABLE" or time.monotonic() > deadline:
                raise
            time.sleep(detail_of(err, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() / 1000)


def test_yidi_certs_makes_a_certificate_per_node_named(tmp_path):
    def certs(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway", "certs", "--out", str(tmp_path), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    assert certs("--nodes", "gw-1,gw-2").returncode == 0
    for name in ("gw-1", "gw-2"):
        with open(tmp_path / "nodes" / f"{name}.pem", "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier)] == [f"yidi://node/{name}"]
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not (tmp_path / "nodes" / "node-a.pem").exists()
    ca = (tmp_path / "ca.pem").read_bytes()
    refused = certs("--nodes", "Node_A")
    assert refused.returncode != 0 and refused.stderr.strip().splitlines() == [
        "--nodes: node name 'Node_A': lower-case letters, digits and '-' (a DNS label)"]
    assert (tmp_path / "ca.pem").read_bytes() == ca   # nothing written over


def test_the_calls_forwarded_are_the_mutating_ones():
    sent = {f"{d.name}/{m.name}" for d, _ in SERVICES for m in d.methods if forwarded(m)}
    assert {"SettlementService/OutpatientSettle", "SettlementService/SettleBatch", "SettlementService/SettleStream",
            "SettlementService/Reverse", "FilingService/File", "FundsService/CloseMonth",
            "ProblemService/ReportProblem", "AdminService/LoadReferenceData"} <= sent
    assert not sent & {"SettlementService/GetSettlement", "SettlementService/PreSettle", "DiagnosticsService/Ping",
                       "FundsService/ReconcileDetail", "AdminService/TakeSnapshot", "FilingService/ListFilings",
                       "AdminService/GetReferenceDataStatus"}

"""Prometheus /metrics on the side port, scraped over HTTP after real gRPC traffic.

The figures must move with what the gateway did: calls by method and status,
records by kind, batch sizes, ledger commits, index sizes, GC pauses.
"""
from __future__ import annotations

import re
import threading
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway._pb.yidi.v1 import diagnostics_pb2 as dpb, funds_pb2 as fdpb, settlement_pb2 as spb
from builders import outpatient
from gateway_harness import Client, file_person
from test_alerts import rule_metrics

HAINAN, LIAONING = "460000", "210000"
GATEWAY_OPTIONS = ("--metrics-listen", "127.0.0.1:0")


def scrape(gw) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(gw.metrics_url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_serving_line_names_the_metrics_endpoint(gw):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", gw.metrics_url)


def test_metrics_follow_calls_records_batches_and_commits(gw):
    before = scrape(gw)
    file_person(gw.client(LIAONING), "PM-1", "21010219800101031")
    hainan = gw.client(HAINAN)
    for _ in range(3):
        hainan(hainan.diagnostics.Ping, dpb.PingRequest())
    hainan(hainan.settlement.OutpatientSettle, outpatient("m-1", "PM-1"))
    code, reason, _ = hainan.refused(hainan.settlement.OutpatientSettle, outpatient("m-2", "P-NOBODY"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PERSON_NOT_FILED")
    batch = spb.SettleBatchRequest(items=[spb.SettleItem(outpatient=outpatient(f"m-b{n}", "PM-1")) for n in range(4)])
    assert len(hainan(hainan.settlement.SettleBatch, batch).outcomes) == 4
    after = scrape(gw)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ping = "DiagnosticsService/Ping"
    settle = "SettlementService/OutpatientSettle"
    assert delta("yidi_rpc_duration_seconds_count", method=ping, code="OK") == 3
    assert delta("yidi_rpc_duration_seconds_count", method=settle, code="OK") == 1
    assert delta("yidi_rpc_duration_seconds_count", method=settle, code="FAILED_PRECONDITION") == 1
    assert delta("yidi_rpc_duration_seconds_sum", method=settle, code="OK") > 0
    assert delta("yidi_ledger_records_total", kind="settled") == 5      # one unary, four in the batch
    assert delta("yidi_ledger_records_total", kind="filed") == 1
    assert delta("yidi_batch_items_count", rpc="SettleBatch") == 1
    assert delta("yidi_batch_items_sum", rpc="SettleBatch") == 4
    # three commits at least (the filing, the unary settlement, the batch as one group of four)
    assert delta("yidi_ledger_commit_records_count") >= 3 and delta("yidi_ledger_commit_records_sum") == 6
    assert value(after, "yidi_ledger_commit_seconds_count") == value(after, "yidi_ledger_commit_records_count")
    assert value(after, "yidi_index_entries", table="persons") > 0
    assert value(after, "yidi_ledger_seq") >= 6
    assert value(after, "yidi_gc_pause_seconds_count") >= 1     # at least the collection before gc.freeze()
    assert value(after, "yidi_gc_pause_max_seconds") > 0


def test_refusals_by_reason_in_flight_serving_storage_build_and_process(gw):
    hainan = gw.client(HAINAN)
    before = scrape(gw)
    for n in range(2):
        hainan.refused(hainan.settlement.OutpatientSettle, outpatient(f"r-{n}", "P-NOBODY"))
    settle = "SettlementService/OutpatientSettle"
    refused_before = value(before, "yidi_refusals_total", method=settle, reason="PERSON_NOT_FILED")
    # The server counts a refusal just after sending it: a scrape may come a moment before the count.
    deadline = time.monotonic() + 5
    while value(after := scrape(gw), "yidi_refusals_total", method=settle, reason="PERSON_NOT_FILED") \
            < refused_before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert value(after, "yidi_refusals_total", method=settle, reason="PERSON_NOT_FILED") == refused_before + 2
    assert ("yidi_rpcs_in_flight", ()) in after        # the scrape itself is no RPC: 0 between calls
    assert value(after, "yidi_serving") == 1 and value(after, "yidi_storage_writable") == 1
    build = [labels for (name, labels) in after if name == "yidi_build_info"]
    assert len(build) == 1 and dict(build[0])["version"] and dict(build[0])["grpcio"]
    assert value(after, "process_cpu_seconds_total") > 0 and value(after, "process_resident_memory_bytes") > 0
    assert any(name == "python_info" for name, _ in after)


def test_prepaid_positions_are_exported_with_their_level(gw):
    national, hainan = gw.client("national"), gw.client(HAINAN)
    national(national.funds.SetPrepaid, fdpb.SetPrepaidRequest(request_id="m-prepaid", province="210000",
                                                               amount_fen=100_000))
    assert value(scrape(gw), "yidi_prepaid_level", province="210000") == 0
    file_person(gw.client(LIAONING), "PM-3", "21010219800101040")
    big = outpatient("m-big", "PM-3")
    big.lines[0].unit_price_fen = 5_000_000      # ¥50,000: the fund pays far more than ¥1,000 prepaid
    settled = hainan(hainan.settlement.OutpatientSettle, big).settlement.breakdown.fund_pay_sumamt
    samples = scrape(gw)
    assert value(samples, "yidi_prepaid_usage_ratio", province="210000") == settled * 10000 // 100_000 / 10000
    assert value(samples, "yidi_prepaid_level", province="210000") == 3        # exhausted


def test_every_metric_the_alert_rules_name_is_exported(gw):
    with urllib.request.urlopen(gw.metrics_url, timeout=10) as response:
        families = {family.name for family in text_string_to_metric_families(response.read().decode())}
    missing = {m for m in rule_metrics() if m not in families}
    assert not missing, f"alert rules name metrics the gateway does not export: {missing}"


def test_a_stream_cancelled_by_the_client_is_counted_without_a_traceback(gw):
    """Issue 13 item 11b: a SettleStream cancelled while the gateway waited to send its replies left the
    handler (an async generator) at a yield; the loop closed it later in another context, where resetting
    the caller's context variable raised ValueError, and the call was never counted.  Cancel one whose
    replies the client does not read: it is counted once, the log is clean, the gateway serves."""
    file_person(gw.client(LIAONING), "PM-2", "21010219800101032")
    # No BDP probing: the client's receive window stays at its initial 64 KiB, so the gateway's writes block.
    hainan = Client(gw.channel(HAINAN, options=[("grpc.http2.bdp_probe", 0)]), HAINAN)
    before = scrape(gw)
    log_before = len(gw.log())
    wanted = threading.Event()

    def items():
        for n in range(400):
            yield spb.SettleItem(outpatient=outpatient(f"m-s{n}", "PM-2"))
        wanted.wait(30)  # keep the request stream open until the client cancels the call

    call = hainan.settlement.SettleStream(items(), timeout=30)
    assert next(call).WhichOneof("outcome") == "settlement"
    time.sleep(1.5)  # the gateway settles the rest and blocks writing replies nobody reads
    call.cancel()
    wanted.set()
    with pytest.raises(grpc.RpcError) as ended:
        next(call)
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    method = "SettlementService/SettleStream"

    def counted(samples) -> dict:
        return {code: value(samples, "yidi_rpc_duration_seconds_count", method=method, code=code)
                for code in ("CANCELLED", "OK", "INTERNAL")}

    # Counted once: CANCELLED as a rule, OK when gRPC ended the request stream and took the replies left
    # before it cancelled the handler (gateway/transport/services/base.py, stream); never INTERNAL.
    deadline = time.monotonic() + 10
    while sum(counted(scrape(gw)).values()) != sum(counted(before).values()) + 1:
        assert time.monotonic() < deadline, (f"the cancelled stream was not counted: {counted(before)} -> "
                                             f"{counted(scrape(gw))}\n{gw.log()[log_before:][-3000:]}")
        time.sleep(0.05)
    assert counted(scrape(gw))["INTERNAL"] == counted(before)["INTERNAL"]
    fresh = gw.client(HAINAN)  # the gateway serves on (a new connection: the cancelled one is the client's)
    fresh(fresh.diagnostics.Ping, dpb.PingRequest())
    time.sleep(0.5)  # the time the loop took to close an abandoned generator (and log its ValueError)
    written = gw.log()[log_before:]
    assert "Traceback" not in written and "ValueError" not in written, written[-3000:]

"""The application log as an operator reads it: JSON or text lines, a line per refused call with method,
caller, request id, reason and latency, gRPC core's own lines marked, and progress that never breaks a line."""
from __future__ import annotations

import io
import json
import logging

import grpc
import pytest

from gateway.operations import logs
from gateway._pb.yidi.v1 import diagnostics_pb2 as dpb
from builders import outpatient

HAINAN = "460000"
GATEWAY_OPTIONS = ("--log-format", "json", "--log-level", "debug")


@pytest.fixture(scope="module")
def json_log(gw):
    """The module's gateway logs JSON at debug level (GATEWAY_OPTIONS): its log's lines, after a refusal, a Ping
    and a connection without a client certificate."""
    hainan = gw.client(HAINAN)
    hainan.refused(hainan.settlement.OutpatientSettle, outpatient("log-refused-1", "P-NOBODY", price=1, qty_milli=1000))
    hainan(hainan.diagnostics.Ping, dpb.PingRequest())
    anonymous = gw.client(None)     # TLS without a client certificate: gRPC core logs the failed handshake
    with pytest.raises(grpc.RpcError):
        anonymous(anonymous.diagnostics.Ping, dpb.PingRequest())
    assert gw.stop() == 0
    return gw.log().splitlines()


def test_every_line_is_one_json_object(json_log):
    parsed = [json.loads(line) for line in json_log]
    assert parsed and all({"ts", "level", "logger", "msg"} <= set(line) for line in parsed)


def test_a_refusal_line_names_method_caller_request_id_reason_and_latency(json_log):
    refusals = [json.loads(line) for line in json_log if "log-refused-1" in line]
    assert len(refusals) == 1
    line = refusals[0]
    assert line["level"] == "INFO" and line["logger"] == "yidi.rpc" and line["msg"] == "refused"
    assert line["method"] == "SettlementService/OutpatientSettle" and line["caller"] == HAINAN
    assert line["reason"] == "PERSON_NOT_FILED" and line["code"] == "FAILED_PRECONDITION"
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0


def test_at_debug_level_a_successful_call_is_logged_too(json_log):
    pings = [json.loads(line) for line in json_log if '"DiagnosticsService/Ping"' in line]
    assert any(p["code"] == "OK" and p["level"] == "DEBUG" and p["caller"] == HAINAN for p in pings)


def test_grpc_core_lines_are_marked_as_such(json_log):
    core = [json.loads(line) for line in json_log if '"grpc.core"' in line]
    assert core, "the handshake without a client certificate left no grpc.core line"
    assert all(line["logger"] == "grpc.core" and line.get("source") for line in core)
    assert any("Handshake failed" in line["msg"] for line in core)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_never_glues_itself_to_a_log_line():
    stream = Terminal()
    handler = logs.configure("text", "info", stream)
    try:
        progress = logs.Progress("load", stream=stream)
        progress("persons", 500, 1000)
        progress("persons", 1000, 1000)
        logging.getLogger("yidi.test").info("state rebuilt")
        progress("ledger", 3)
        progress.done()
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().split("\n")
    logged = [line for line in lines if "state rebuilt" in line]
    assert len(logged) == 1 and logged[0].split(" ")[1:4] == ["INFO", "yidi.test", "state"]
    assert lines[0].startswith("\rload persons: 500/1,000 rows") and "\rload persons: 1,000/1,000" in lines[0]
    assert lines[-2].startswith("\rload ledger: 3 rows") and lines[-1] == ""


def test_progress_elsewhere_is_log_lines():
    stream = io.StringIO()
    handler = logs.configure("json", "info", stream)
    try:
        progress = logs.Progress("load", stream=stream)
        for done in range(5):
            progress("persons", done)
        progress("ledger", 1)
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"].split(" rows")[0] for line in lines] == ["load persons: 0", "load ledger: 1"]


def test_a_core_line_is_relayed_with_its_level_and_source():
    records = []
    relay = logs.CoreLogRelay()
    relay.log = logging.getLogger("grpc.core.test")
    relay.log.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r)})())
    relay.relay_line("E1207 09:58:54.281407   17294 chttp2_transport.cc:123] something broke")
    relay.relay_line("not in gRPC's format")
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.ERROR, "something broke"),
                                                            (logging.WARNING, "not in gRPC's format")]
    assert records[0].fields == {"source": "chttp2_transport.cc:123"}

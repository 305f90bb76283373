"""A stalled event loop is seen from outside (issue 13, item 1): the plaintext health port, answered by threads
of its own, says NOT_SERVING while the loop answers nothing; when it answers again a problem report names the
stall; a loop silent past --loop-stall-exit-s ends the process, and the restarted gateway reports why.

The stall is made by the YIDI_STALL_RPC test hook (the RPC busy-spins the loop, as the reversal bug did)."""
from __future__ import annotations

import threading
import time

import grpc

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import admin_pb2 as apb, diagnostics_pb2 as dpb, problems_pb2 as ppb

NATIONAL = "national"
STALL = "DiagnosticsService/Ping"


def problems_mentioning(client, fragment: str) -> list:
    answer = client(client.problems.ListProblems, ppb.ListProblemsRequest())
    return [p for p in answer.problems if fragment in p.text]


def wait_until(predicate, timeout_s: float = 20, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError("condition not reached in time")


def test_a_stalled_loop_is_not_serving_on_the_health_port_and_reported(tmp_path, gateways, monkeypatch):
    names = write_spec_dataset(tmp_path / "data")
    monkeypatch.setenv("YIDI_STALL_RPC", f"{STALL}:4000")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--health-listen", "127.0.0.1:0",
                  "--loop-stall-s", "0.5", "--loop-stall-exit-s", "0")
    national = gw.client(NATIONAL)
    assert gw.plain_health() == "SERVING"
    assert problems_mentioning(national, "事件循环停顿") == []

    stalling = threading.Thread(target=lambda: national(national.diagnostics.Ping, dpb.PingRequest()))
    stalling.start()
    assert wait_until(lambda: gw.plain_health() == "NOT_SERVING", timeout_s=3.5)
    # meanwhile the loop answers nothing on the mTLS port
    code = national.refused(national.admin.GetReferenceDataStatus, apb.GetReferenceDataStatusRequest(), timeout=0.3)[0]
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and stalling.is_alive()
    stalling.join()
    assert wait_until(lambda: gw.plain_health() == "SERVING")
    report = wait_until(lambda: problems_mentioning(national, "事件循环停顿"))[0]
    assert report.category == ppb.PROBLEM_CATEGORY_INTERNAL_ERROR and "_spin" in report.text
    assert "event loop stalled" in gw.log() and "answered again" in gw.log()


def test_a_loop_stuck_past_the_exit_limit_ends_the_process_and_the_restart_reports_it(tmp_path, gateways,
                                                                                        monkeypatch):
    names = write_spec_dataset(tmp_path / "data")
    ledger = str(tmp_path / "ledger.sqlite")
    monkeypatch.setenv("YIDI_STALL_RPC", f"{STALL}:60000")
    gw = gateways(names["dir"], ledger, "--health-listen", "127.0.0.1:0", "--loop-stall-s", "0.5",
                  "--loop-stall-exit-s", "2")
    national = gw.client(NATIONAL)
    threading.Thread(target=lambda: national.refused(national.diagnostics.Ping, dpb.PingRequest()),
                     daemon=True).start()
    assert gw.proc.wait(20) == 70   # EXIT_FATAL: the supervisor restarts it
    monkeypatch.delenv("YIDI_STALL_RPC")
    again = gateways(names["dir"], ledger)
    national = again.client(NATIONAL)
    report = wait_until(lambda: problems_mentioning(national, "自行退出"))[0]
    assert "_spin" in report.text

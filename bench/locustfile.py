"""Locust: provincial platforms as users, each running the realistic flows in the published mix.

    make load                         # headless, against a gateway it starts (see the Makefile)
    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host 127.0.0.1:50051

Flows and weights (cross-province direct settlement, 2023–2025 published volumes: over 90% of
settlements are outpatient or pharmacy, about 9% inpatient; filings are a few per hundred):

* outpatient (weight 91): 门诊一站式, one call;
* stay (weight 9): 入院登记 → 费用明细上传 → 出院结算, three calls, timed separately;
* file (weight 3): 备案 by an insured province.

Every user (``PlatformUser``) picks its next flow by these weights, so the mix holds at any number of
users (weights on separate user classes would make 5 users all outpatient).

Locust runs on gevent, whose gRPC cannot share a process with grpc.aio, so this file never
imports the gateway's server side: it uses the generated stubs over a plain (gevent-patched)
channel.  Cases come from datagen.workload (YIDI_DATA, default data/national).  Every call is
reported with its RPC name; a refusal is a failure with its reason.  Locust's own requests/s counts
failures too, so at the end this prints the calls answered OK per second with the refusals by reason beside
them, and exits 1 if any refusal was not among EXPECTED_REFUSALS (the business rules the drawn cases meet).
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from collections import Counter

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
grpc_gevent.init_gevent()

from datagen.workload import DATE, Workload  # noqa: E402
from gateway._pb.yidi.v1 import common_pb2 as pb, filing_pb2 as fpb  # noqa: E402
from gateway._pb.yidi.v1 import filing_pb2_grpc, settlement_pb2 as spb, settlement_pb2_grpc  # noqa: E402
from gateway.security import certs  # noqa: E402
from gateway.transport.status import reason_of  # noqa: E402
from gateway.testing import credentials  # noqa: E402

_WORKLOAD: list[Workload] = []
_IDS = itertools.count()
# Cases are drawn with replacement: a person may be drawn for a second stay while the first is open.
EXPECTED_REFUSALS = ("DUPLICATE_ADMISSION",)
REFUSALS: Counter = Counter()


@events.quitting.add_listener
def _successes_only(environment, **_kwargs) -> None:
    """The rate of calls answered OK, the refusals beside it; exit status 1 on a refusal not expected."""
    total = environment.stats.total
    ok = total.num_requests - total.num_failures
    seconds = max(1e-9, (total.last_request_timestamp or total.start_time) - total.start_time)
    unexpected = {reason: n for reason, n in REFUSALS.items() if reason not in EXPECTED_REFUSALS}
    print(f"answered OK: {ok} calls, {ok / seconds:,.1f}/s; refused: {dict(REFUSALS) or 0}", file=sys.stderr)
    if unexpected:
        print(f"unexpected refusals {unexpected}: the rate above is not a measurement", file=sys.stderr)
        environment.process_exit_code = 1
    elif total.num_failures == sum(REFUSALS.values()):
        environment.process_exit_code = 0   # expected refusals only (locust would exit 1 on any failure)


def workload() -> Workload:
    if not _WORKLOAD:
        _WORKLOAD.append(Workload(os.environ.get("YIDI_DATA", os.path.join(ROOT, "data", "national")),
                                  seed=int(os.environ.get("YIDI_SEED", "7")), persons=50_000))
    return _WORKLOAD[0]


def fee_lines(case) -> list[pb.FeeLine]:
    return [pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen, qty_milli=x.qty_milli)
            for x in case.lines]


class PlatformUser(User):
    """A provincial platform: each iteration one flow, drawn by the published weights."""

    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.channels: dict[str, grpc.Channel] = {}
        self.stubs: dict[str, dict] = {}
        self.run = f"{os.getpid()}-{int(time.time())}"

    def on_stop(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def stub(self, caller: str, service: str):
        """The caller's own channel, presenting its client certificate (YIDI_CERTS, default certs/dev)."""
        if caller not in self.stubs:
            paths = certs.Paths(os.environ.get("YIDI_CERTS") or os.path.join(ROOT, "certs", "dev"))
            channel = self.channels[caller] = grpc.secure_channel(self.host or "127.0.0.1:50051",
                                                                   credentials(caller, paths))
            self.stubs[caller] = {"settlement": settlement_pb2_grpc.SettlementServiceStub(channel),
                                  "filing": filing_pb2_grpc.FilingServiceStub(channel)}
        return self.stubs[caller][service]

    def call(self, name: str, method: str, request, caller: str):
        """method: "settlement.OutpatientSettle" and the like."""
        service, rpc = method.split(".")
        start = time.perf_counter()
        exc, response = None, None
        try:
            response = getattr(self.stub(caller, service), rpc)(request, timeout=30)
        except grpc.RpcError as err:
            reason = reason_of(err) or err.code().name
            REFUSALS[reason] += 1
            exc = RuntimeError(f"{err.code().name} {reason}")
        events.request.fire(request_type="grpc", name=name, response_time=(time.perf_counter() - start) * 1000,
                            response_length=response.ByteSize() if response is not None else 0, exception=exc)
        return response

    def rid(self, what: str) -> str:
        return f"locust-{self.run}-{what}-{next(_IDS)}"


    @task(91)
    def outpatient(self) -> None:
        case = workload().outpatient()
        self.call("OutpatientSettle", "settlement.OutpatientSettle", spb.OutpatientSettleRequest(
            request_id=self.rid("op"), psn_no=case.psn_no, fixmedins_code=case.fixmedins_code, setl_date=DATE,
            lines=fee_lines(case)), case.treatment_province)


    @task(9)
    def stay(self) -> None:
        case = workload().inpatient()
        caller = case.treatment_province
        admitted = self.call("Admit", "settlement.Admit", spb.AdmitRequest(
            request_id=self.rid("admit"), psn_no=case.psn_no, fixmedins_code=case.fixmedins_code,
            adm_date=DATE), caller)
        if admitted is None:
            return
        self.call("UploadFees", "settlement.UploadFees", spb.UploadFeesRequest(
            request_id=self.rid("fees"), mdtrt_id=admitted.mdtrt_id, lines=fee_lines(case)), caller)
        self.call("DischargeSettle", "settlement.DischargeSettle", spb.DischargeSettleRequest(
            request_id=self.rid("settle"), mdtrt_id=admitted.mdtrt_id, dscg_date=DATE), caller)


    @task(3)
    def file(self) -> None:
        from core import certno_check_char

        n = next(_IDS)
        # A certno stands for one person for ever: the psn_no is made from it (a person filed again
        # in a later run gets a new filing, never a PERSON_CONFLICT).
        first17 = f"2101021{940 + n // 365000 % 60:03d}{(n // 1000) % 12 + 1:02d}{(n // 12000) % 28 + 1:02d}{n % 1000:03d}"
        psn_no = "L" + first17
        person = pb.Person(psn_no=psn_no, certno=first17 + certno_check_char(first17), name="压测",
                           insuplc_admdvs="210102", insutype=pb.INSUTYPE_EMPLOYEE,
                           person_type=pb.PERSON_TYPE_RETIRED, status=pb.PERSON_STATUS_ACTIVE, card_no=f"K{n}",
                           card_version="3.0")
        filing = pb.Filing(filing_id=f"F{self.run}-{n}", psn_no=psn_no, kind=pb.FILING_KIND_RETIRED_RELOCATION,
                           dest_admdvs="460000", valid_from=20260101, status=pb.FILING_STATUS_ACTIVE)
        self.call("File", "filing.File", fpb.FileRequest(request_id=self.rid("file"), person=person,
                                                            filing=filing), "210000")

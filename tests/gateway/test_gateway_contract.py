"""The gateway over real gRPC on loopback: SPEC §4–§6 and §9 as a platform sees them.

One gateway process serves the whole module, on the SPEC fixture data set
(datagen/spec_fixture.py) with a ledger seeded with the "so far this year"
history that E2, E4 and E5 start from (tests/gateway_seed.py).  Tests that
change state use their own persons or visits, so their order does not matter.
"""
from __future__ import annotations

import os

import re

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from datagen.spec_fixture import FILINGS, INSTITUTIONS, PERSONS, make_certno
from core.access import RULES
from gateway.security import certs
from gateway._pb.yidi.v1 import admin_pb2, common_pb2 as pb, diagnostics_pb2 as dpb, filing_pb2 as fpb
from gateway._pb.yidi.v1 import funds_pb2 as fdpb, problems_pb2 as ppb, settlement_pb2 as spb
from gateway.transport.server import SERVICES
from builders import (DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, GZ_L3, HK_L2, HK_L3, NOT_LISTED, TREATMENT_A,
                      accumulators, admit, cancel, ledger_seq, line, outpatient, rid, settle, upload)
from gateway_harness import Client, file_person
from gateway_seed import filed, prior_settlement, write_ledger

HAINAN, LIAONING, GUANGDONG = "460000", "210000", "440000"
MAX_MESSAGE_BYTES = 64 * 1024


def person(name: str, psn_no: str, certno17: str, **kw) -> dict:
    row = dict(PERSONS[name], psn_no=psn_no, certno=make_certno(certno17))
    row.update(kw)
    return row


# E2: the retired person of E1, second admission, fund paid 1000000 and supplementary base 1400000 so far.
E2_PERSON = person("retired", "P2101020E2", "21010219500101102")
E2_FILING = dict(FILINGS["retired"], filing_id="F-E2", psn_no="P2101020E2")
# E4: in service, long-term residence, 45000 of the outpatient deductible used.
E4_PERSON = person("in_service", "P2101020E4", "21010219850303104")
E4_FILING = dict(FILINGS["in_service"], filing_id="F-E4", psn_no="P2101020E4")
# E5: referral, third admission, fund paid 29500000 (cap 30000000), supplementary base 9000000.
E5_PERSON = person("referral", "P2101020E5", "21010219700404105")
E5_FILING = dict(FILINGS["referral"], filing_id="F-E5", psn_no="P2101020E5")


GATEWAY_OPTIONS = ("--max-message-bytes", str(MAX_MESSAGE_BYTES))


@pytest.fixture(scope="module")
def spec_data(spec_data):
    """The module's gateway (conftest's gw) starts on a ledger seeded with E2's, E4's and E5's history."""
    inst = spec_data["inst"]
    events = [filed(E2_PERSON, E2_FILING), filed(E4_PERSON, E4_FILING), filed(E5_PERSON, E5_FILING)]
    events += prior_settlement(1, "P2101020E2", "210102", inst["hk_l3"], "460100", 3, E2_FILING, 20260201,
                               {"inpatient_fund_paid_fen": 1000000, "crit_base_fen": 1400000,
                                "inpatient_admissions": 1}, inpatient=True)
    events += prior_settlement(2, "P2101020E4", "210102", inst["hk_l1"], "460100", 1, E4_FILING, 20260201,
                               {"outpatient_deductible_used_fen": 45000}, inpatient=False)
    events += prior_settlement(3, "P2101020E5", "210102", inst["hk_l1"], "460100", 1, E5_FILING, 20260210,
                               {"inpatient_fund_paid_fen": 29500000, "crit_base_fen": 9000000,
                                "inpatient_admissions": 2}, inpatient=True)
    write_ledger(spec_data["ledger"], LIAONING, events)
    return spec_data


@pytest.fixture(scope="module", autouse=True)
def log_without_id_numbers(gw):
    """National ID numbers never reach the log, whatever the module refused or settled."""
    yield
    assert gw.stop() == 0, gw.log()[-3000:]
    log = gw.log()
    assert "refused" in log and not re.search(r"(?<!\d)\d{17}[\dXx](?!\d)", log)


@pytest.fixture(scope="module")
def hainan(gw):
    return gw.client(HAINAN)


@pytest.fixture(scope="module")
def liaoning(gw):
    return gw.client(LIAONING)


@pytest.fixture(scope="module")
def national(gw):
    return gw.client("national")


E1_LINES = [line(1, DRUG_A, 1250, 20000), line(2, DRUG_B, 8800, 3500), line(3, DRUG_B_CAPPED, 7300, 10000),
            line(4, DRUG_C, 45000, 1000), line(5, TREATMENT_A, 1200000, 1000), line(6, NOT_LISTED, 9999, 2000)]


def breakdown(s: pb.Settlement) -> dict:
    return {f.name: getattr(s.breakdown, f.name) for f in pb.Breakdown.DESCRIPTOR.fields}


# ------------------------------------------------------------------ service
def test_health_reports_serving_and_reflection_lists_the_services(gw):
    channel = gw.client("national").channel
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "yidi.v1.SettlementService", "yidi.v1.FilingService", "yidi.v1.AdminService",
                    "yidi.v1.FundsService", "yidi.v1.ProblemService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    listed = {s.name for s in reply.list_services_response.service}
    assert {"yidi.v1.FilingService", "yidi.v1.SettlementService", "yidi.v1.AdminService",
            "grpc.health.v1.Health"} <= listed
    reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="yidi.v1.SettlementService")])))
    fd = descriptor_pb2.FileDescriptorProto.FromString(reply.file_descriptor_response.file_descriptor_proto[0])
    assert fd.package == "yidi.v1"


def test_reference_data_status_for_the_national_operator(national, hainan):
    status = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
    assert status.counts["persons"] == len(PERSONS) + 3 and status.counts["catalog_items"] == 20
    assert status.ledger_seq >= 8
    assert (status.node_role, list(status.owned_partitions), status.node_id) == ("single", [], "")   # SQLite
    code, reason, _ = hainan.refused(hainan.admin.LoadReferenceData, admin_pb2.LoadReferenceDataRequest(
        request_id=rid(), data_dir="/tmp"))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    code, reason, _ = hainan.refused(hainan.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


# ------------------------------------------------------ SPEC §10.1 personal accounts, E6
def account(client, psn_no) -> fpb.AccountResponse:
    return client(client.filing.GetAccount, fpb.GetAccountRequest(psn_no=psn_no))


def test_e6_through_grpc_and_cancellation_gives_the_accounts_back(hainan, liaoning, spec_data):
    acct, family = spec_data["psn"]["acct"], spec_data["psn"]["family"]
    shown = account(liaoning, acct)
    assert (shown.balc, list(shown.mulaid_psn_nos), list(shown.mulaid_balc)) == (100000, [family], [300000])
    a = admit(hainan, acct, spec_data["inst"]["hk_l3"])
    upload(hainan, a.mdtrt_id, E1_LINES)
    pre = hainan(hainan.settlement.PreSettle, spb.PreSettleRequest(
        mdtrt_id=a.mdtrt_id, setl_date=20260315, acct_used_flag=True, acct_mulaid_flag=True)).settlement
    s = hainan(hainan.settlement.DischargeSettle, spb.DischargeSettleRequest(
        request_id=rid("e6"), mdtrt_id=a.mdtrt_id, dscg_date=20260315, acct_used_flag=True,
        acct_mulaid_flag=True)).settlement
    assert breakdown(s) == breakdown(pre) == dict(
        medfee_sumamt=1393798, fulamt_ownpay_amt=64998, overlmt_selfpay=23000, preselfpay_amt=13080,
        inscp_scp_amt=1292720, act_pay_dedc=120000, pay_ratio_bp=8500, hifp_pay=996812, hifmi_pay=0,
        hifob_pay=0, maf_pay=0, fund_pay_sumamt=996812, psn_cash_pay=87998, acct_pay=100000, acct_mulaid_pay=208988)
    assert s.balc == 0 == pre.balc
    shown = account(liaoning, acct)
    assert (shown.balc, list(shown.mulaid_balc)) == (0, [91012])
    got = hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=s.setl_id)).settlement
    assert (got.breakdown.acct_pay, got.breakdown.acct_mulaid_pay, got.balc) == (100000, 208988, 0)
    cancel(hainan, s.setl_id)
    shown = account(liaoning, acct)
    assert (shown.balc, list(shown.mulaid_balc)) == (100000, [300000])


def test_adjust_account_over_grpc(hainan, liaoning, national, spec_data):
    psn_no = "P2101029300"
    file_person(liaoning, psn_no, "21010219900101300")
    adjust = fpb.AdjustAccountRequest(request_id=rid("adj"), psn_no=psn_no, amount_fen=20000, reason="年度划入")
    first = liaoning(liaoning.filing.AdjustAccount, adjust)
    assert (first.psn_no, first.balc) == (psn_no, 20000)
    assert liaoning(liaoning.filing.AdjustAccount, adjust) == first            # idempotent by request_id
    assert account(liaoning, psn_no).balc == 20000
    seq = ledger_seq(national)
    code, reason, message = liaoning.refused(liaoning.filing.AdjustAccount, fpb.AdjustAccountRequest(
        request_id=rid("adj"), psn_no=psn_no, amount_fen=-20001, reason="清退"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_INSUFFICIENT")
    assert "个人账户余额 20000 分" in message and message.endswith("[ACCOUNT_INSUFFICIENT]")
    assert ledger_seq(national) == seq and account(liaoning, psn_no).balc == 20000
    # an outpatient visit paid partly from the account, read from the wire by the core
    s = hainan(hainan.settlement.OutpatientSettle, outpatient(
        rid("op"), psn_no, spec_data["inst"]["hk_l1"], date=20260316,
        lines=[line(1, DRUG_A, 1250, 6000), line(2, DRUG_C, 45000, 1000)], acct_used_flag=True)).settlement
    # 7500 in scope, all under the annual deductible: the account pays it, never the class-C 45000
    assert (s.breakdown.acct_pay, s.breakdown.psn_cash_pay, s.balc) == (7500, 45000, 12500)
    assert account(liaoning, psn_no).balc == 12500
    # the detail reconciliation compares the accounts' share when the province sends it (SPEC §10.1)
    span = fdpb.ReconcileRange(fixmedins_code=spec_data["inst"]["hk_l1"], date_from=20260316, date_to=20260316)

    def differences(**acct):
        item = fdpb.ReconcileItem(setl_id=s.setl_id, fund_pay_sumamt=s.breakdown.fund_pay_sumamt, **acct)
        got = hainan(hainan.funds.ReconcileDetail, iter([fdpb.ReconcileDetailRequest(range=span, items=[item])]))
        return [(fdpb.DifferenceKind.Name(d.kind), d.platform_acct_pay_sumamt, d.province_acct_pay_sumamt)
                for d in got.differences if d.setl_id == s.setl_id]

    assert differences() == differences(acct_pay_sumamt=7500) == []
    assert differences(acct_pay_sumamt=7499) == [("DIFFERENCE_KIND_AMOUNT_DIFFERS", 7500, 7499)]
    # the insured province only
    code, reason, _ = hainan.refused(hainan.filing.GetAccount, fpb.GetAccountRequest(psn_no=psn_no))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PERSON_NOT_FOUND")   # as if no such person (SPEC §9)


# ------------------------------------------------------ SPEC §10.2 chronic diseases, E7
E7_LINES = [line(1, TREATMENT_A, 60000, 3000), line(2, DRUG_A, 1250, 10000), line(3, DRUG_C, 45000, 1000)]


def chronic(client, psn_no, inst, code, lines=E7_LINES, **kw) -> spb.OutpatientSettleRequest:
    return spb.OutpatientSettleRequest(request_id=rid("chronic"), psn_no=psn_no, fixmedins_code=inst,
                                       setl_date=20260315, lines=lines, med_type=pb.MED_TYPE_CHRONIC, dise_codg=code,
                                       **kw)


def test_e7_through_grpc(hainan, liaoning, spec_data):
    psn, inst = spec_data["psn"], spec_data["inst"]
    s = hainan(hainan.settlement.OutpatientSettle, chronic(hainan, psn["in_service"], inst["hk_l3"], "M07803")).settlement
    b = s.breakdown
    assert (b.medfee_sumamt, b.fulamt_ownpay_amt, b.inscp_scp_amt, b.act_pay_dedc, b.pay_ratio_bp, b.hifp_pay,
            b.psn_cash_pay) == (237500, 45000, 192500, 0, 8500, 163625, 73875)
    assert (s.med_type, s.dise_codg) == (pb.MED_TYPE_CHRONIC, "M07803")
    # the same lines for the retired person at level 2, diabetes (default entry), 10000 of its deductible used
    hainan(hainan.settlement.OutpatientSettle, chronic(hainan, psn["retired"], inst["hk_l2"], "M01600",
                                                       [line(1, DRUG_A, 1250, 8000)]))
    batch = hainan(hainan.settlement.SettleBatch, spb.SettleBatchRequest(items=[spb.SettleItem(
        outpatient=chronic(hainan, psn["retired"], inst["hk_l2"], "M01600"))]))
    b = batch.outcomes[0].settlement.settlement.breakdown                    # a batch item carries it too
    assert (b.act_pay_dedc, b.pay_ratio_bp, b.hifp_pay, b.psn_cash_pay) == (20000, 8000, 138000, 99500)
    acc = accumulators(liaoning, psn["retired"])
    assert [(c.dise_codg, c.deductible_used_fen, c.fund_paid_fen) for c in acc.chronic] == [("M01600", 30000, 138000)]


@pytest.mark.parametrize("who, inst, code, reason", [
    ("in_service", "hk_l3", "M01600", "DISEASE_NOT_RECOGNISED"),
    ("retired", "hk_l2", "M03900", "INSTITUTION_NOT_ENABLED_FOR_DISEASE"),
    ("assist", "hk_l2", "M01600", "POLICY_MISSING"),
])
def test_chronic_refusals_over_grpc(hainan, national, spec_data, who, inst, code, reason):
    seq = ledger_seq(national)
    status, got, message = hainan.refused(hainan.settlement.OutpatientSettle,
                                          chronic(hainan, spec_data["psn"][who], spec_data["inst"][inst], code))
    assert (status, got) == (grpc.StatusCode.FAILED_PRECONDITION, reason) and message.endswith(f"[{reason}]")
    assert code in message and ledger_seq(national) == seq


# ------------------------------------------------------ SPEC §10.3 mid-stay settlement, E8
def dated(ln: pb.FeeLine, fee_date: int) -> pb.FeeLine:
    return pb.FeeLine(feedetl_sn=ln.feedetl_sn, code=ln.code, unit_price_fen=ln.unit_price_fen,
                      qty_milli=ln.qty_milli, fee_date=fee_date)


def test_e8_mid_stay_settlement_through_grpc(hainan, liaoning, national, spec_data):
    psn_no = "P2101029400"   # E1's circumstances: retired, relocated, first admission of the year
    file_person(liaoning, psn_no, "21010219500101400", kind="retired_relocation", person_type=pb.PERSON_TYPE_RETIRED)
    a = admit(hainan, psn_no, spec_data["inst"]["hk_l3"], date=20260301)
    upload(hainan, a.mdtrt_id, [dated(E1_LINES[0], 20260305), dated(E1_LINES[4], 20260308),
                                dated(E1_LINES[1], 20260312), dated(E1_LINES[2], 20260314)])
    mid = hainan(hainan.settlement.DischargeSettle, spb.DischargeSettleRequest(
        request_id=rid("mid"), mdtrt_id=a.mdtrt_id, dscg_date=20260310, mid_setl_flag=True)).settlement
    b = mid.breakdown
    assert (b.inscp_scp_amt, b.act_pay_dedc, b.hifp_pay, b.psn_cash_pay) == (1225000, 120000, 939250, 285750)
    assert mid.mid_setl_flag
    seq = ledger_seq(national)
    code, reason, message = hainan.refused(hainan.settlement.UploadFees, spb.UploadFeesRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id, lines=[dated(line(9, DRUG_A, 100, 1000), 20260309)]))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FEE_DATE_SETTLED")
    assert "20260310" in message and message.endswith("[FEE_DATE_SETTLED]") and ledger_seq(national) == seq
    final = settle(hainan, a.mdtrt_id)
    b = final.breakdown
    assert (b.medfee_sumamt, b.overlmt_selfpay, b.preselfpay_amt, b.inscp_scp_amt, b.act_pay_dedc, b.hifp_pay,
            b.psn_cash_pay) == (103800, 23000, 13080, 67720, 0, 57562, 46238)
    acc = accumulators(liaoning, psn_no)
    assert (acc.inpatient_admissions, acc.crit_base_fen) == (1, 295908)
    code, reason, message = hainan.refused(hainan.settlement.CancelSettlement, spb.CancelSettlementRequest(
        request_id=rid(), setl_id=mid.setl_id, cancel_date=20260320))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_LATEST_SETTLEMENT")
    assert message.endswith("[NOT_LATEST_SETTLEMENT]") and ledger_seq(national) == seq + 1
    cancel(hainan, final.setl_id)
    cancel(hainan, mid.setl_id)
    assert accumulators(liaoning, psn_no).inpatient_admissions == 0
    again = settle(hainan, a.mdtrt_id)   # the whole stay at once, as E1
    assert (again.breakdown.inscp_scp_amt, again.breakdown.hifp_pay) == (1292720, 996812)


# ------------------------------------------------------ SPEC §10.4 refund lines, E9
def test_e9_refund_lines_through_grpc(hainan, liaoning, national, spec_data):
    psn_no = "P2101029500"
    file_person(liaoning, psn_no, "21010219850303500")
    a = admit(hainan, psn_no, spec_data["inst"]["hk_l1"])
    upload(hainan, a.mdtrt_id, [line(1, DRUG_A, 1250, 20000), line(2, DRUG_B, 8800, 3500)])
    refunds = [line(3, DRUG_A, 1250, -5000, init_feedetl_sn="1"),
               line(4, DRUG_B, 8800, -3500, init_feedetl_sn="2")]
    seq = ledger_seq(national)
    too_much = line(5, DRUG_A, 1250, -20001, init_feedetl_sn="1")
    code, reason, message = hainan.refused(hainan.settlement.UploadFees, spb.UploadFeesRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id, lines=[too_much]))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_ORIGINAL")
    assert message.endswith("[REFUND_EXCEEDS_ORIGINAL]") and ledger_seq(national) == seq
    assert (upload(hainan, a.mdtrt_id, refunds).medfee_sumamt) == 18750
    s = hainan(hainan.settlement.DischargeSettle, spb.DischargeSettleRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id, dscg_date=20260315, mid_setl_flag=True)).settlement
    assert (s.breakdown.medfee_sumamt, s.breakdown.inscp_scp_amt) == (18750, 18750)
    late = line(6, DRUG_A, 1250, -1000, init_feedetl_sn="1", fee_date=20260316)
    code, reason, message = hainan.refused(hainan.settlement.UploadFees, spb.UploadFeesRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id, lines=[late]))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LINE_ALREADY_SETTLED")
    assert message.endswith("[LINE_ALREADY_SETTLED]")


# ------------------------------------------------------ SPEC §10.5 credentials, §10.6 emergencies
def test_patients_identified_by_electronic_voucher_over_grpc(hainan, national, spec_data):
    import subprocess
    import sys

    psn_no = spec_data["psn"]["in_service"]
    run = subprocess.run([sys.executable, "-m", "gateway", "voucher", "--psn-no", psn_no, "--minutes", "5",
                          "--data-dir", spec_data["dir"]], capture_output=True, text=True, timeout=60, check=True)
    tok = run.stdout.strip()
    assert tok.startswith(psn_no + ".") and len(tok.rsplit(".", 1)[1]) == 32
    s = hainan(hainan.settlement.OutpatientSettle, spb.OutpatientSettleRequest(
        request_id=rid("voucher"), fixmedins_code=spec_data["inst"]["hk_l1"], setl_date=20260315,
        lines=[line(1, DRUG_A, 1250, 1000)], mdtrt_cert_type="01", mdtrt_cert_no=tok)).settlement
    assert s.psn_no == psn_no
    seq = ledger_seq(national)
    forged = tok[:-1] + ("0" if tok[-1] != "0" else "1")
    for request in (spb.AdmitRequest(request_id=rid(), fixmedins_code=spec_data["inst"]["hk_l1"], adm_date=20260315,
                                     mdtrt_cert_type="01", mdtrt_cert_no=forged),
                    spb.OutpatientSettleRequest(request_id=rid(), fixmedins_code=spec_data["inst"]["hk_l1"],
                                                setl_date=20260315, lines=[line(1, DRUG_A, 1250, 1000)],
                                                mdtrt_cert_type="01", mdtrt_cert_no=forged)):
        method = hainan.settlement.Admit if isinstance(request, spb.AdmitRequest) else hainan.settlement.OutpatientSettle
        code, reason, message = hainan.refused(method, request)
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CREDENTIAL_INVALID")
        assert message.endswith("[CREDENTIAL_INVALID]") and forged not in message
    assert ledger_seq(national) == seq


def test_emergency_admission_without_a_filing_over_grpc(hainan, spec_data):
    psn_no, inst = spec_data["psn"]["unfiled"], spec_data["inst"]["hk_l2"]
    code, reason, _ = hainan.refused(hainan.settlement.Admit, spb.AdmitRequest(
        request_id=rid(), psn_no=psn_no, fixmedins_code=inst, adm_date=20260315))
    assert reason == "PERSON_NOT_FILED"
    a = admit(hainan, psn_no, inst, date=20260315, emergency=True)
    assert (a.filing_id, a.filing_kind) == ("EMERGENCY", pb.FILING_KIND_EMERGENCY)
    upload(hainan, a.mdtrt_id, [line(1, TREATMENT_A, 500000, 1000)])
    assert settle(hainan, a.mdtrt_id).filing_id == "EMERGENCY"


# ------------------------------------------------------ SPEC §10.7 explanations
def test_explanation_over_grpc_and_in_the_cli(gw, hainan, liaoning, spec_data):
    import subprocess
    import sys

    s = hainan(hainan.settlement.OutpatientSettle, chronic(hainan, spec_data["psn"]["in_service"], spec_data["inst"]["hk_l3"],
                                                           "M07803")).settlement
    for client in (hainan, liaoning):   # treatment and insured province
        x = client(client.settlement.GetSettlementExplanation, spb.GetSettlementRequest(setl_id=s.setl_id))
        assert x.recomputed_equal and (x.policy_admdvs, x.catalog_province, x.chronic_entry) == (
            "210100", "460000", "M07803")
        assert [ln.chrgitm_lv for ln in x.lines] == ["A", "A", "C"] and x.layers[0].paid_fen == s.breakdown.hifp_pay
        assert x.after.chronic[0].fund_paid_fen - x.before.chronic[0].fund_paid_fen == s.breakdown.hifp_pay
    code, reason, _ = gw.client(GUANGDONG).refused(gw.client(GUANGDONG).settlement.GetSettlementExplanation,
                                                   spb.GetSettlementRequest(setl_id=s.setl_id))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SETTLEMENT_NOT_FOUND")   # as if no such settlement
    run = subprocess.run([sys.executable, "-m", "gateway", "--target", gw.target, "--caller", HAINAN, "show",
                          "--setl-id", s.setl_id, "--explain"], capture_output=True, text=True, timeout=60, check=True,
                         env=dict(os.environ, YIDI_CERTS=gw.certs.directory))
    assert "M07803" in run.stdout and "统筹基金" in run.stdout and "recomputed" in run.stdout


# ------------------------------------------------------ SPEC §10.8 look-ups
def test_designated_institutions_paged_and_filtered(gw, spec_data):
    guangdong = gw.client(GUANGDONG)   # public to every platform
    seen, token = [], ""
    while True:
        page = guangdong(guangdong.settlement.ListInstitutions, spb.ListInstitutionsRequest(
            admdvs="460000", page_size=3, page_token=token))
        seen += [i.fixmedins_code for i in page.institutions]
        token = page.next_page_token
        if not token:
            break
    hainan_codes = sorted(c for c, _n, a, *_ in INSTITUTIONS.values() if a.startswith("46"))
    assert seen == hainan_codes
    dialysis = guangdong(guangdong.settlement.ListInstitutions, spb.ListInstitutionsRequest(dise_codg="M07803"))
    assert [i.fixmedins_code for i in dialysis.institutions] == [spec_data["inst"]["hk_l3"]]
    inpatient = guangdong(guangdong.settlement.ListInstitutions, spb.ListInstitutionsRequest(
        admdvs="460100", inpatient=True, kind="hospital"))
    assert all(i.inpatient and i.kind == "hospital" and i.admdvs == "460100" for i in inpatient.institutions)
    assert spec_data["inst"]["hk_no_ip"] not in [i.fixmedins_code for i in inpatient.institutions]


def test_admitted_patients_of_an_institution(hainan, liaoning, spec_data):
    psn_no = "P2101029600"
    file_person(liaoning, psn_no, "21010219850303600")
    inst = spec_data["inst"]["sy_l3"]
    a = admit(hainan, psn_no, inst)
    upload(hainan, a.mdtrt_id, [line(1, DRUG_A, 1250, 2000)])
    listed = hainan(hainan.settlement.ListAdmitted, spb.ListAdmittedRequest(fixmedins_code=inst))
    row = next(p for p in listed.patients if p.mdtrt_id == a.mdtrt_id)
    assert (row.psn_no, row.line_count, row.medfee_sumamt, row.filing_kind) == (
        psn_no, 1, 2500, pb.FILING_KIND_LONG_TERM_RESIDENCE)
    code, reason, _ = liaoning.refused(liaoning.settlement.ListAdmitted, spb.ListAdmittedRequest(fixmedins_code=inst))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")   # the insured province: no
    settle(hainan, a.mdtrt_id)
    listed = hainan(hainan.settlement.ListAdmitted, spb.ListAdmittedRequest(fixmedins_code=inst))
    assert a.mdtrt_id not in [p.mdtrt_id for p in listed.patients]


# ------------------------------------------------------ SPEC §5.6 E1–E5
def test_e1_through_grpc(hainan, spec_data):
    a = admit(hainan, spec_data["psn"]["retired"], spec_data["inst"]["hk_l3"])
    assert a.filing_kind == pb.FILING_KIND_RETIRED_RELOCATION and a.fixmedins_level == 3
    visit = upload(hainan, a.mdtrt_id, E1_LINES)
    assert (visit.line_count, visit.medfee_sumamt) == (6, 1393798)
    s = settle(hainan, a.mdtrt_id)
    assert breakdown(s) == dict(
        medfee_sumamt=1393798, fulamt_ownpay_amt=64998, overlmt_selfpay=23000, preselfpay_amt=13080,
        inscp_scp_amt=1292720, act_pay_dedc=120000, pay_ratio_bp=8500, hifp_pay=996812, hifmi_pay=0,
        hifob_pay=0, maf_pay=0, fund_pay_sumamt=996812, psn_cash_pay=396986, acct_pay=0, acct_mulaid_pay=0)
    assert [ln.chrgitm_lv for ln in s.lines] == ["A", "B", "B", "C", "A", ""]
    acc = accumulators(hainan, spec_data["psn"]["retired"])
    assert (acc.inpatient_fund_paid_fen, acc.crit_base_fen, acc.inpatient_admissions) == (996812, 295908, 1)


def test_e2_through_grpc(hainan, spec_data):
    a = admit(hainan, "P2101020E2", spec_data["inst"]["hk_l3"])
    upload(hainan, a.mdtrt_id, [line(1, TREATMENT_A, 8000000, 1000), line(2, DRUG_B, 50000, 20000)])
    b = breakdown(settle(hainan, a.mdtrt_id))
    assert (b["medfee_sumamt"], b["preselfpay_amt"], b["inscp_scp_amt"], b["act_pay_dedc"], b["pay_ratio_bp"],
            b["hifp_pay"], b["fund_pay_sumamt"], b["psn_cash_pay"]) == (
        9000000, 100000, 8900000, 60000, 8500, 7514000, 8285600, 714400)
    assert (b["hifob_pay"], b["hifmi_pay"]) == (771600, 0)  # employee insurance: 职工大额


def test_e3_through_grpc(hainan, spec_data):
    a = admit(hainan, spec_data["psn"]["assist"], spec_data["inst"]["hk_l2"])
    upload(hainan, a.mdtrt_id, [line(1, DRUG_A, 1250, 20000), line(2, TREATMENT_A, 500000, 1000)])
    b = breakdown(settle(hainan, a.mdtrt_id))
    assert (b["medfee_sumamt"], b["inscp_scp_amt"], b["act_pay_dedc"], b["pay_ratio_bp"], b["hifp_pay"],
            b["hifmi_pay"] + b["hifob_pay"], b["maf_pay"], b["fund_pay_sumamt"], b["psn_cash_pay"]) == (
        525000, 525000, 60000, 7500, 348750, 0, 123375, 472125, 52875)


def test_e4_outpatient_through_grpc(hainan, spec_data):
    s = hainan(hainan.settlement.OutpatientSettle, outpatient(
        rid("op"), "P2101020E4", spec_data["inst"]["hk_l1"],
        lines=[line(1, DRUG_A, 1250, 6000), line(2, DRUG_B, 8800, 1500)])).settlement
    b = breakdown(s)
    assert s.visit_kind == pb.VISIT_KIND_OUTPATIENT and s.setl_id and s.mdtrt_id
    assert (b["medfee_sumamt"], b["preselfpay_amt"], b["inscp_scp_amt"], b["act_pay_dedc"], b["pay_ratio_bp"],
            b["hifp_pay"], b["psn_cash_pay"]) == (20700, 1320, 19380, 5000, 7000, 10066, 10634)
    assert accumulators(hainan, "P2101020E4").outpatient_deductible_used_fen == 50000


def test_e5_through_grpc(hainan, spec_data):
    a = admit(hainan, "P2101020E5", spec_data["inst"]["hk_l1"])
    assert a.filing_kind == pb.FILING_KIND_REFERRAL
    upload(hainan, a.mdtrt_id, [line(1, TREATMENT_A, 2000000, 1000)])
    b = breakdown(settle(hainan, a.mdtrt_id))
    assert (b["act_pay_dedc"], b["pay_ratio_bp"], b["hifp_pay"], b["hifob_pay"], b["fund_pay_sumamt"],
            b["psn_cash_pay"]) == (15000, 9000, 500000, 900000, 1400000, 600000)
    assert accumulators(hainan, "P2101020E5").inpatient_fund_paid_fen == 30000000


# ------------------------------------------------------- SPEC §4 reasons
def test_every_eligibility_reason_over_grpc(hainan, liaoning, spec_data):
    inst, psn = spec_data["inst"], spec_data["psn"]
    file_person(liaoning, "P2101029001", "21010219900101201")  # long-term residence in 海南
    admit(hainan, "P2101029001", inst["hk_l2"])  # an open stay, for DUPLICATE_ADMISSION
    cases = [
        (dict(psn_no="P-NOBODY", fixmedins_code=inst["hk_l3"]), "PERSON_NOT_FILED", "备案即时生效"),
        (dict(psn_no=psn["unfiled"], fixmedins_code=inst["hk_l3"]), "PERSON_NOT_FILED", "补办"),
        (dict(psn_no=psn["suspended"], fixmedins_code=inst["hk_l3"]), "INSURANCE_SUSPENDED", "暂停"),
        (dict(psn_no=psn["retired"], fixmedins_code=inst["hk_l3"],
              card=spb.Card(card_no="WRONG", card_version="3.0")), "CARD_INVALID", "卡号"),
        (dict(psn_no=psn["retired"], fixmedins_code=inst["hk_l3"],
              card=spb.Card(card_no=PERSONS["retired"]["card_no"], card_version="1.0")), "CARD_INVALID", "1.0"),
        (dict(psn_no=psn["retired"], fixmedins_code="H46019999999"), "INSTITUTION_UNKNOWN", "H46019999999"),
        (dict(psn_no=psn["retired"], fixmedins_code=inst["hk_no_ip"]), "INSTITUTION_NOT_ENABLED", "住院"),
        (dict(psn_no=psn["assist"], fixmedins_code=inst["sy_l3"]), "NOT_FILED_FOR_DESTINATION", "海口市"),
        (dict(psn_no=psn["referral"], fixmedins_code=inst["hk_l2"]), "INSTITUTION_NOT_DESIGNATED", "海口市秀英区人民医院"),
        (dict(psn_no="P2101029001", fixmedins_code=inst["hk_l3"]), "DUPLICATE_ADMISSION", "未出院"),
    ]
    for fields, reason, fragment in cases:
        code, got, message = hainan.refused(hainan.settlement.Admit, spb.AdmitRequest(
            request_id=rid("elig"), adm_date=20260310, **fields))
        assert got == reason, (fields, got, message)
        assert fragment in message and f"[{reason}]" in message, (reason, message)
        assert PERSONS["retired"]["certno"] not in message
    # NOT_CROSS_PROVINCE: a Liaoning person at a Liaoning hospital, asked by Liaoning.
    _, got, message = liaoning.refused(liaoning.settlement.Admit, spb.AdmitRequest(
        request_id=rid(), psn_no=psn["retired"], fixmedins_code=inst["sy_home"], adm_date=20260310))
    assert got == "NOT_CROSS_PROVINCE" and "参保地" in message


def test_admission_by_certno_and_card(hainan, liaoning):
    file_person(liaoning, "P2101029002", "21010219900101202")
    a = hainan(hainan.settlement.Admit, spb.AdmitRequest(
        request_id=rid(), certno=make_certno("21010219900101202"), fixmedins_code=HK_L3,
        adm_date=20260310, card=spb.Card(card_no="K01029002", card_version="3.0")))
    assert a.psn_no == "P2101029002" and a.filing_id == "F-P2101029002"


# ------------------------------------------------------- SPEC §6 lifecycle
def test_lifecycle_fees_presettle_settle_cancel_resettle(hainan, liaoning):
    file_person(liaoning, "P2101029003", "21010219900101203")
    a = admit(hainan, "P2101029003", HK_L2)
    lines = [line(1, TREATMENT_A, 300000, 1000), line(2, DRUG_B, 8800, 2000)]
    assert upload(hainan, a.mdtrt_id, lines).line_count == 2
    # Re-sending the same lines (new request id) is a no-op; other content under one sn is a conflict.
    again = upload(hainan, a.mdtrt_id, lines + [line(3, DRUG_A, 1250, 4000)])
    assert (again.line_count, again.medfee_sumamt) == (3, 300000 + 17600 + 5000)
    _, reason, message = hainan.refused(hainan.settlement.UploadFees, spb.UploadFeesRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id, lines=[line(1, TREATMENT_A, 300001, 1000)]))
    assert reason == "FEE_LINE_CONFLICT" and "撤销" in message
    after = hainan(hainan.settlement.WithdrawFees, spb.WithdrawFeesRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id, feedetl_sns=["3"]))
    assert (after.line_count, after.medfee_sumamt) == (2, 317600)
    # Pre-settlement answers exactly what settlement will, and changes nothing.
    before = accumulators(hainan, "P2101029003")
    pre = hainan(hainan.settlement.PreSettle, spb.PreSettleRequest(mdtrt_id=a.mdtrt_id, setl_date=20260315)).settlement
    assert accumulators(hainan, "P2101029003") == before and pre.setl_id == ""
    s = settle(hainan, a.mdtrt_id)
    assert breakdown(s) == breakdown(pre) and s.status == pb.SETTLEMENT_STATUS_SETTLED
    assert accumulators(hainan, "P2101029003").inpatient_fund_paid_fen == s.breakdown.hifp_pay > 0
    # A settled stay takes no more fees and cannot be un-admitted.
    _, reason, _ = hainan.refused(hainan.settlement.UploadFees, spb.UploadFeesRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id, lines=[line(9, DRUG_A, 1, 1000)]))
    assert reason == "VISIT_ALREADY_SETTLED"
    _, reason, _ = hainan.refused(hainan.settlement.CancelAdmission, spb.CancelAdmissionRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id))
    assert reason == "VISIT_ALREADY_SETTLED"
    # Cancel: the deltas come back exactly; the stay is open for correction.
    c = cancel(hainan, s.setl_id)
    assert c.status == pb.SETTLEMENT_STATUS_CANCELLED and c.cancel_date == 20260320
    assert accumulators(hainan, "P2101029003") == before
    _, reason, _ = hainan.refused(hainan.settlement.CancelSettlement, spb.CancelSettlementRequest(
        request_id=rid(), setl_id=s.setl_id, cancel_date=20260320))
    assert reason == "SETTLEMENT_ALREADY_CANCELLED"
    upload(hainan, a.mdtrt_id, [line(4, DRUG_A, 1250, 2000)])
    s2 = settle(hainan, a.mdtrt_id, date=20260321)
    assert s2.setl_id != s.setl_id and s2.breakdown.medfee_sumamt == 317600 + 2500
    shown = hainan(hainan.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=s.setl_id)).settlement
    assert shown.status == pb.SETTLEMENT_STATUS_CANCELLED and breakdown(shown) == breakdown(s)


def test_cancel_admission_closes_the_stay(hainan, liaoning):
    file_person(liaoning, "P2101029004", "21010219900101204")
    a = admit(hainan, "P2101029004", HK_L2)
    v = hainan(hainan.settlement.CancelAdmission, spb.CancelAdmissionRequest(request_id=rid(), mdtrt_id=a.mdtrt_id))
    assert v.status == pb.VISIT_STATUS_CANCELLED
    _, reason, _ = hainan.refused(hainan.settlement.DischargeSettle, spb.DischargeSettleRequest(
        request_id=rid(), mdtrt_id=a.mdtrt_id, dscg_date=20260315))
    assert reason == "VISIT_NOT_OPEN"
    assert admit(hainan, "P2101029004", HK_L2).mdtrt_id != a.mdtrt_id  # no longer a duplicate


def test_filing_after_refusal_then_admit_with_the_same_key(hainan, liaoning):
    """补办备案: a refused admission changes nothing, so its key can be retried after filing."""
    req = spb.AdmitRequest(request_id=rid("late"), psn_no="P2101029005", fixmedins_code=HK_L3,
                           adm_date=20260310)
    assert hainan.refused(hainan.settlement.Admit, req)[1] == "PERSON_NOT_FILED"
    file_person(liaoning, "P2101029005", "21010219900101205")
    assert hainan(hainan.settlement.Admit, req).psn_no == "P2101029005"


def test_filing_revise_revoke_and_list(hainan, liaoning):
    f = file_person(liaoning, "P2101029006", "21010219900101206").filing
    listed = liaoning(liaoning.filing.ListFilings, fpb.ListFilingsRequest(psn_no="P2101029006"))
    assert [x.filing_id for x in listed.filings] == [f.filing_id]
    assert "*" in listed.person.certno and listed.person.certno != make_certno("21010219900101206")
    revised = liaoning(liaoning.filing.ReviseFiling, fpb.ReviseFilingRequest(request_id=rid(), filing=pb.Filing(
        filing_id=f.filing_id, dest_admdvs="440000", valid_from=20260101))).filing
    assert revised.dest_admdvs == "440000" and revised.kind == f.kind
    _, reason, message = hainan.refused(hainan.settlement.Admit, spb.AdmitRequest(
        request_id=rid(), psn_no="P2101029006", fixmedins_code=HK_L3, adm_date=20260310))
    assert reason == "NOT_FILED_FOR_DESTINATION" and "广东省" in message
    revoked = liaoning(liaoning.filing.RevokeFiling, fpb.RevokeFilingRequest(request_id=rid(), filing_id=f.filing_id))
    assert revoked.filing.status == pb.FILING_STATUS_REVOKED
    # Reading someone insured elsewhere is not Hainan's to do, and the answer is that of a person who does not exist.
    refused = hainan.refused(hainan.filing.ListFilings, fpb.ListFilingsRequest(psn_no="P2101029006"))
    assert refused[:2] == (grpc.StatusCode.NOT_FOUND, "PERSON_NOT_FOUND")
    assert hainan.refused(hainan.filing.ListFilings, fpb.ListFilingsRequest(psn_no="P2101029NONE")) == refused


# ---------------------------------------------------------- idempotency
def test_replay_is_byte_identical_and_reuse_is_refused(hainan, liaoning, national):
    file_person(liaoning, "P2101029007", "21010219900101207")
    a = admit(hainan, "P2101029007", HK_L2)
    upload(hainan, a.mdtrt_id, [line(1, TREATMENT_A, 250000, 1000)])
    req = spb.DischargeSettleRequest(request_id=rid("idem"), mdtrt_id=a.mdtrt_id, dscg_date=20260315)
    method = "/yidi.v1.SettlementService/DischargeSettle"
    first = hainan.raw(method, req)
    acc = accumulators(hainan, "P2101029007")
    seq = ledger_seq(national)
    assert hainan.raw(method, req) == first
    assert hainan.raw(method, req) == first
    other = spb.DischargeSettleRequest(request_id=req.request_id, mdtrt_id=a.mdtrt_id, dscg_date=20260316)
    code, reason, message = hainan.refused(hainan.settlement.DischargeSettle, other)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert req.request_id in message
    assert accumulators(hainan, "P2101029007") == acc and ledger_seq(national) == seq
    # The same key from another platform is another request.
    gd = spb.AdmitRequest(request_id=req.request_id, psn_no="P2101029007", fixmedins_code=GZ_L3,
                          adm_date=20260310)
    assert liaoning.refused(liaoning.settlement.Admit, gd)[1] == "PERMISSION_DENIED"


# ------------------------------------------------------------ bad input
def test_bad_input_is_refused_with_a_reason_and_changes_nothing(hainan, liaoning, national, spec_data):
    a = admit(hainan, spec_data["psn"]["in_service"], spec_data["inst"]["hk_l2"])
    seq = ledger_seq(national)
    good = pb.Person(psn_no="P2101029100", certno=make_certno("21010219900101300"), name="坏输入",
                     insuplc_admdvs="210102", insutype=pb.INSUTYPE_EMPLOYEE, person_type=pb.PERSON_TYPE_RETIRED,
                     status=pb.PERSON_STATUS_ACTIVE)
    filing = pb.Filing(filing_id="F-BAD", psn_no="P2101029100", kind=pb.FILING_KIND_RETIRED_RELOCATION,
                       dest_admdvs="460000", valid_from=20260101, status=pb.FILING_STATUS_ACTIVE)
    bad_certno = pb.Person()
    bad_certno.CopyFrom(good)
    bad_certno.certno = good.certno[:-1] + ("0" if good.certno[-1] != "0" else "1")
    bad_enum = pb.Person()
    bad_enum.CopyFrom(good)
    bad_enum.insutype = 999
    cases = [
        (liaoning, liaoning.filing.File, fpb.FileRequest(request_id=rid(), person=bad_certno, filing=filing),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CERTNO"),
        (liaoning, liaoning.filing.File, fpb.FileRequest(request_id=rid(), person=bad_enum, filing=filing),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ENUM"),
        (hainan, hainan.settlement.UploadFees, spb.UploadFeesRequest(
            request_id=rid(), mdtrt_id=a.mdtrt_id, lines=[line(1, DRUG_A, -1, 1000)]),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PRICE"),
        (hainan, hainan.settlement.UploadFees, spb.UploadFeesRequest(
            request_id=rid(), mdtrt_id=a.mdtrt_id, lines=[line(1, DRUG_A, 100, 0)]),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUANTITY"),
        (hainan, hainan.settlement.DischargeSettle, spb.DischargeSettleRequest(
            request_id=rid(), mdtrt_id=a.mdtrt_id, dscg_date=20261340),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DATE"),
        (hainan, hainan.settlement.Admit, spb.AdmitRequest(
            request_id=rid(), psn_no=spec_data["psn"]["retired"], fixmedins_code=HK_L3, adm_date=99999999),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DATE"),
        (hainan, hainan.settlement.Admit, spb.AdmitRequest(
            request_id="", psn_no=spec_data["psn"]["retired"], fixmedins_code=HK_L3, adm_date=20260310),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST_ID"),
        (hainan, hainan.settlement.UploadFees, spb.UploadFeesRequest(
            request_id=rid(), mdtrt_id=a.mdtrt_id,
            lines=[line(n, DRUG_A, 1, 1000, name="长" * 1000)
                   for n in range(MAX_MESSAGE_BYTES // 2000)]),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE"),
    ]
    for client, method, request, code, reason in cases:
        got_code, got_reason, message = client.refused(method, request)
        assert (got_code, got_reason) == (code, reason), (reason, got_code, got_reason, message)
        assert message.endswith(f"[{reason}]")
    assert ledger_seq(national) == seq
    visit = upload(hainan, a.mdtrt_id, [line(1, DRUG_A, 100, 1000)])
    assert visit.line_count == 1  # none of the refused lines stuck


def _client_with(gw, ca_cert, key, cert) -> Client:
    """A client presenting an arbitrary certificate (PEM bytes), trusting the gateway's CA."""
    with open(gw.certs.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(f.read(), certs.pem_key(key), certs.pem(cert))
    channel = grpc.secure_channel(gw.target, creds)
    gw.channels.append(channel)
    return Client(channel, None)


def test_a_caller_without_a_certificate_of_the_platform_ca_cannot_even_connect(gw):
    anonymous = gw.client(None)  # TLS, but no client certificate
    code, reason, _ = anonymous.refused(anonymous.settlement.GetSettlement, spb.GetSettlementRequest(setl_id="S1"))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, None)  # the handshake itself is refused
    other_ca, other_key = certs.make_ca("another CA")
    cert, key = certs.issue(other_ca, other_key, "forged-460000",
                            [x509.UniformResourceIdentifier(certs.caller_uri(HAINAN))], server=False)
    forged = _client_with(gw, other_ca, key, cert)
    code, reason, _ = forged.refused(forged.settlement.GetSettlement, spb.GetSettlementRequest(setl_id="S1"))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, None)


def test_a_certificate_without_a_yidi_name_is_unauthenticated(gw):
    with open(gw.certs.ca_key, "rb") as k, open(gw.certs.ca, "rb") as c:
        ca_key = serialization.load_pem_private_key(k.read(), None)
        ca = x509.load_pem_x509_certificate(c.read())
    for sans in ([x509.DNSName("hainan.example")], [x509.UniformResourceIdentifier("yidi://province/999999")],
                 [x509.UniformResourceIdentifier(certs.caller_uri(HAINAN)),
                  x509.UniformResourceIdentifier(certs.caller_uri(LIAONING))]):
        cert, key = certs.issue(ca, ca_key, "odd", sans, server=False)
        odd = _client_with(gw, ca, key, cert)
        code, reason, message = odd.refused(odd.settlement.GetSettlement, spb.GetSettlementRequest(setl_id="S1"))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"), sans
        assert "yidi://province/" in message


def test_a_certificate_without_client_authentication_usage_is_refused(gw):
    """Issue 13 item 11c: a certificate of the platform CA naming a province but without an extended key
    usage extension passed the TLS handshake (RFC 5280: none means any purpose) and was taken as that
    province.  The gateway now asks for clientAuth by name; a certificate whose extended key usage spec_data
    other purposes only is refused by the handshake itself."""
    with open(gw.certs.ca_key, "rb") as k, open(gw.certs.ca, "rb") as c:
        ca_key = serialization.load_pem_private_key(k.read(), None)
        ca = x509.load_pem_x509_certificate(c.read())
    sans = [x509.UniformResourceIdentifier(certs.caller_uri(HAINAN))]
    usage = x509.ExtendedKeyUsageOID
    request = spb.GetSettlementRequest(setl_id="S999999999999999")
    for usages, refused in (((), (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")),
                            ((usage.SERVER_AUTH,), (grpc.StatusCode.UNAVAILABLE, None)),
                            ((usage.ANY_EXTENDED_KEY_USAGE,), (grpc.StatusCode.UNAVAILABLE, None)),
                            ((usage.CLIENT_AUTH,), (grpc.StatusCode.NOT_FOUND, "SETTLEMENT_NOT_FOUND")),
                            ((usage.SERVER_AUTH, usage.CLIENT_AUTH), (grpc.StatusCode.NOT_FOUND, "SETTLEMENT_NOT_FOUND"))):
        cert, key = certs.issue(ca, ca_key, "usage-test", sans, server=False, usages=usages)
        client = _client_with(gw, ca, key, cert)
        code, reason, message = client.refused(client.settlement.GetSettlement, request)
        assert (code, reason) == refused, (usages, code, reason, message)
        if reason == "UNAUTHENTICATED":
            assert "clientAuth" in message and message.endswith("[UNAUTHENTICATED]"), message
        # accepted ones are 海南 (the made-up settlement is not found, as for any caller)


def test_a_header_never_names_the_caller(gw, hainan):
    """The old x-yidi-caller header is ignored: Hainan's certificate is Hainan, whatever it claims."""
    code, reason, _ = hainan.refused(hainan.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest(),
                                     metadata=(("x-yidi-caller", "national"),))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


def test_other_provinces_cannot_act_on_a_visit(gw, hainan, liaoning):
    file_person(liaoning, "P2101029008", "21010219900101208")
    a = admit(hainan, "P2101029008", HK_L2)
    upload(hainan, a.mdtrt_id, [line(1, TREATMENT_A, 100000, 1000)])
    s = settle(hainan, a.mdtrt_id)
    guangdong = gw.client(GUANGDONG)
    assert guangdong.refused(guangdong.settlement.CancelSettlement, spb.CancelSettlementRequest(
        request_id=rid(), setl_id=s.setl_id, cancel_date=20260320))[1] == "SETTLEMENT_NOT_FOUND"
    assert guangdong.refused(guangdong.settlement.GetSettlement, spb.GetSettlementRequest(
        setl_id=s.setl_id))[1] == "SETTLEMENT_NOT_FOUND"
    # The insured province may read it (so being told it may not cancel it reveals nothing).
    assert liaoning.refused(liaoning.settlement.CancelSettlement, spb.CancelSettlementRequest(
        request_id=rid(), setl_id=s.setl_id, cancel_date=20260320))[1] == "PERMISSION_DENIED"
    shown = liaoning(liaoning.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=s.setl_id)).settlement
    assert shown.setl_id == s.setl_id and shown.breakdown == s.breakdown


# ------------------------------------------- every RPC: authorization and bad input
@pytest.fixture(scope="module")
def case(hainan, liaoning):
    """A filed person with an open stay (with a fee line) and a settled stay, insured in 辽宁, treated in 海南."""
    filing = file_person(liaoning, "P2101029200", "21010219900101400").filing
    open_stay = admit(hainan, "P2101029200", HK_L2)
    upload(hainan, open_stay.mdtrt_id, [line(1, TREATMENT_A, 100000, 1000)])
    file_person(liaoning, "P2101029201", "21010219900101401")
    settled_stay = admit(hainan, "P2101029201", HK_L2)
    upload(hainan, settled_stay.mdtrt_id, [line(1, TREATMENT_A, 100000, 1000)])
    setl_id = settle(hainan, settled_stay.mdtrt_id).setl_id
    problem = hainan(hainan.problems.ReportProblem, ppb.ReportProblemRequest(
        request_id=rid(), setl_id=setl_id, category=ppb.PROBLEM_CATEGORY_AMOUNT_DISPUTE, text="金额有疑问")).problem
    return {"filing": filing, "mdtrt_id": open_stay.mdtrt_id, "setl_id": setl_id, "problem_id": problem.problem_id}


def every_rpc(case, **override):
    """One well-formed request per RPC of every service (fields overridable by name).

    (The gateway's hostile-input tests, tests/e2e/test_hostile_input.py, build theirs from the descriptors,
    so an RPC added later is fuzzed without a line there; this table holds one meaningful request each.)
    """
    f, m, s = case["filing"], case["mdtrt_id"], case["setl_id"]
    r = case.get("problem_id", "")
    span = fdpb.ReconcileRange(fixmedins_code=HK_L2, date_from=20260301, date_to=20260331)
    person = pb.Person(psn_no="P2101029202", certno=make_certno("21010219900101402"), name="授权",
                       insuplc_admdvs="210102", insutype=pb.INSUTYPE_EMPLOYEE, person_type=pb.PERSON_TYPE_IN_SERVICE,
                       status=pb.PERSON_STATUS_ACTIVE, card_no="K9202", card_version="3.0")
    new_filing = pb.Filing(filing_id="F-9202", psn_no="P2101029202", kind=pb.FILING_KIND_STATIONED_WORK,
                           dest_admdvs="460000", valid_from=20260101, status=pb.FILING_STATUS_ACTIVE)
    requests = {
        "File": fpb.FileRequest(request_id=rid(), person=person, filing=new_filing),
        "ReviseFiling": fpb.ReviseFilingRequest(request_id=rid(), filing=pb.Filing(
            filing_id=f.filing_id, dest_admdvs="460000", valid_from=20260101)),
        "RevokeFiling": fpb.RevokeFilingRequest(request_id=rid(), filing_id=f.filing_id),
        "ListFilings": fpb.ListFilingsRequest(psn_no=f.psn_no),
        "AdjustAccount": fpb.AdjustAccountRequest(request_id=rid(), psn_no=f.psn_no, amount_fen=100, reason="年度划入"),
        "GetAccount": fpb.GetAccountRequest(psn_no=f.psn_no),
        "Admit": spb.AdmitRequest(request_id=rid(), psn_no=f.psn_no, fixmedins_code=HK_L3, adm_date=20260310),
        "CancelAdmission": spb.CancelAdmissionRequest(request_id=rid(), mdtrt_id=m),
        "UploadFees": spb.UploadFeesRequest(request_id=rid(), mdtrt_id=m, lines=[line(2, DRUG_A, 100, 1000)]),
        "WithdrawFees": spb.WithdrawFeesRequest(request_id=rid(), mdtrt_id=m, feedetl_sns=["1"]),
        "PreSettle": spb.PreSettleRequest(mdtrt_id=m, setl_date=20260315),
        "DischargeSettle": spb.DischargeSettleRequest(request_id=rid(), mdtrt_id=m, dscg_date=20260315),
        "CancelSettlement": spb.CancelSettlementRequest(request_id=rid(), setl_id=s, cancel_date=20260320),
        "OutpatientSettle": outpatient(rid(), f.psn_no, HK_L3, price=100, qty_milli=1000),
        "GetSettlement": spb.GetSettlementRequest(setl_id=s),
        "GetAccumulators": spb.GetAccumulatorsRequest(psn_no=f.psn_no, year=2026),
        "GetSettlementExplanation": spb.GetSettlementRequest(setl_id=s),
        "ListInstitutions": spb.ListInstitutionsRequest(admdvs="460000", page_size=5),
        "ListAdmitted": spb.ListAdmittedRequest(fixmedins_code=HK_L2),
        "LoadReferenceData": admin_pb2.LoadReferenceDataRequest(request_id=rid(), data_dir="/nonexistent"),
        "GetReferenceDataStatus": admin_pb2.GetReferenceDataStatusRequest(),
        "TakeSnapshot": admin_pb2.TakeSnapshotRequest(),
        "Reverse": spb.ReverseRequest(request_id=rid(), original_request_id="never-sent-" + rid(),
                                      reverse_date=20260320),
        "Ping": dpb.PingRequest(),
        "SetPrepaid": fdpb.SetPrepaidRequest(request_id=rid(), province=HAINAN, amount_fen=10_000_000_00),
        "TopUpPrepaid": fdpb.TopUpPrepaidRequest(request_id=rid(), province=HAINAN, amount_fen=1_000_000_00),
        "GetPositions": fdpb.GetPositionsRequest(province=HAINAN),
        "CloseMonth": fdpb.ClearingMonthRequest(request_id=rid(), month=202501),
        "ReopenMonth": fdpb.ClearingMonthRequest(request_id=rid(), month=202501),
        "ConfirmStatement": fdpb.ConfirmStatementRequest(request_id=rid(), month=202501, province=HAINAN),
        "GetClearingReport": fdpb.GetClearingReportRequest(month=202501, province=HAINAN),
        "ReconcileTotals": fdpb.ReconcileTotalsRequest(range=span, figures=fdpb.ReconcileFigures()),
        "ReconcileDetail": fdpb.ReconcileDetailRequest(range=span, items=[fdpb.ReconcileItem(setl_id=s)]),
        "ListFlagged": fdpb.ListFlaggedRequest(range=span),
        "ReportProblem": ppb.ReportProblemRequest(request_id=rid(), setl_id=s, category=ppb.PROBLEM_CATEGORY_OTHER,
                                                  text="测试"),
        "ListProblems": ppb.ListProblemsRequest(province=HAINAN),
        "GetProblem": ppb.GetProblemRequest(problem_id=r),
        "AssignProblem": ppb.UpdateProblemRequest(request_id=rid(), problem_id=r, text="张三"),
        "CommentProblem": ppb.UpdateProblemRequest(request_id=rid(), problem_id=r, text="已核实"),
        "ResolveProblem": ppb.UpdateProblemRequest(request_id=rid(), problem_id=r, text="已更正"),
    }
    requests["SettleBatch"] = spb.SettleBatchRequest(items=[spb.SettleItem(outpatient=requests["OutpatientSettle"])])
    requests["SettleStream"] = [spb.SettleItem(outpatient=requests["OutpatientSettle"])]  # a stream of items
    for name, fields in override.items():
        for key, value in fields.items():
            target = requests[name]
            *path, leaf = key.split(".")
            for part in path:
                target = getattr(target, part)
            if isinstance(value, list):
                del getattr(target, leaf)[:]
                getattr(target, leaf).extend(value)
            else:
                setattr(target, leaf, value)
    return requests


def stub_method(client, name):
    """The stub's method; a client-streaming one is called with a stream of the one request."""
    for stub in (client.filing, client.settlement, client.admin, client.diagnostics, client.funds, client.problems):
        if hasattr(stub, name):
            method = getattr(stub, name)
            if name in STREAMING:
                return lambda request, **kw: method(iter([request]), **kw)
            return method
    raise KeyError(name)


STREAMING = {"ReconcileDetail"}  # client-streaming; SettleStream (bidirectional) is called with its items


def test_every_rpc_has_a_test_in_these_tables():
    spec_data = {m.name for svc, _ in SERVICES for m in svc.methods}
    assert spec_data == set(every_rpc({"filing": pb.Filing(), "mdtrt_id": "", "setl_id": ""})) == set(BAD_INPUT)
    assert STREAMING == {m.name for svc, _ in SERVICES for m in svc.methods
                         if m.client_streaming and not m.server_streaming}


DENIED = (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
# What a province with no right to the object gets, per RPC (SPEC §9; core/access.py): an object named
# by id answers as if it did not exist; PERMISSION_DENIED only where that reveals nothing.
FOREIGN = {
    "AdjustAccount": (grpc.StatusCode.NOT_FOUND, "PERSON_NOT_FOUND"),
    "GetAccount": (grpc.StatusCode.NOT_FOUND, "PERSON_NOT_FOUND"),
    "GetSettlementExplanation": (grpc.StatusCode.NOT_FOUND, "SETTLEMENT_NOT_FOUND"),
    "File": DENIED, "ReviseFiling": (grpc.StatusCode.NOT_FOUND, "FILING_NOT_FOUND"),
    "RevokeFiling": (grpc.StatusCode.NOT_FOUND, "FILING_NOT_FOUND"),
    "ListFilings": (grpc.StatusCode.NOT_FOUND, "PERSON_NOT_FOUND"), "Admit": DENIED,
    "CancelAdmission": (grpc.StatusCode.NOT_FOUND, "VISIT_NOT_FOUND"),
    "UploadFees": (grpc.StatusCode.NOT_FOUND, "VISIT_NOT_FOUND"),
    "WithdrawFees": (grpc.StatusCode.NOT_FOUND, "VISIT_NOT_FOUND"),
    "PreSettle": (grpc.StatusCode.NOT_FOUND, "VISIT_NOT_FOUND"),
    "DischargeSettle": (grpc.StatusCode.NOT_FOUND, "VISIT_NOT_FOUND"),
    "CancelSettlement": (grpc.StatusCode.NOT_FOUND, "SETTLEMENT_NOT_FOUND"), "OutpatientSettle": DENIED,
    "GetSettlement": (grpc.StatusCode.NOT_FOUND, "SETTLEMENT_NOT_FOUND"),
    "GetAccumulators": (grpc.StatusCode.NOT_FOUND, "PERSON_NOT_FOUND"),
    "LoadReferenceData": DENIED, "GetReferenceDataStatus": DENIED, "TakeSnapshot": DENIED,
    "ReportProblem": (grpc.StatusCode.NOT_FOUND, "SETTLEMENT_NOT_FOUND"),
    "GetProblem": (grpc.StatusCode.NOT_FOUND, "PROBLEM_NOT_FOUND"),
    "AssignProblem": (grpc.StatusCode.NOT_FOUND, "PROBLEM_NOT_FOUND"),
    "CommentProblem": (grpc.StatusCode.NOT_FOUND, "PROBLEM_NOT_FOUND"),
    "ResolveProblem": (grpc.StatusCode.NOT_FOUND, "PROBLEM_NOT_FOUND"),
    # Reverse spec_data one of the caller's own request ids: there is no one else's object to refuse
    # (tests/gateway/test_reverse.py: a province's reversal never reaches another's request).
    "Reverse": None,
}
# The fake object each id-naming RPC is asked about, to compare with the real one of another province.
FAKE = {"ReviseFiling": {"filing.filing_id": "F-NOSUCH"}, "RevokeFiling": {"filing_id": "F-NOSUCH"},
        "ListFilings": {"psn_no": "P-NOSUCH"}, "CancelAdmission": {"mdtrt_id": "M999999999999999"},
        "UploadFees": {"mdtrt_id": "M999999999999999"}, "WithdrawFees": {"mdtrt_id": "M999999999999999"},
        "PreSettle": {"mdtrt_id": "M999999999999999"}, "DischargeSettle": {"mdtrt_id": "M999999999999999"},
        "CancelSettlement": {"setl_id": "S999999999999999"}, "GetSettlement": {"setl_id": "S999999999999999"},
        "GetAccumulators": {"psn_no": "P-NOSUCH"}, "ReportProblem": {"setl_id": "S999999999999999"},
        "GetProblem": {"problem_id": "R999999999999999"}, "AssignProblem": {"problem_id": "R999999999999999"},
        "CommentProblem": {"problem_id": "R999999999999999"}, "ResolveProblem": {"problem_id": "R999999999999999"}}


def test_every_rpc_refuses_a_province_it_does_not_concern(gw, case, national):
    guangdong = gw.client(GUANGDONG)
    seq = ledger_seq(national)
    assert set(FOREIGN) <= set(every_rpc(case))
    for name, request in every_rpc(case).items():
        if name == "SettleBatch":  # open to every caller; each item is authorized by its unary RPC's rule
            outcome = guangdong(stub_method(guangdong, name), request).outcomes[0]
            assert refusal_reason(outcome) == "PERMISSION_DENIED"
            continue
        if name == "SettleStream":
            outcome = next(iter(guangdong(stub_method(guangdong, name), iter(request))))
            assert refusal_reason(outcome) == "PERMISSION_DENIED"
            continue
        if RULES[rule_name(name)].kind == "own_request":
            continue  # Reverse reaches only the caller's own keys, and records a reversal (tests/gateway/test_reverse.py)
        if RULES[rule_name(name)].kind == "any":
            guangdong(stub_method(guangdong, name), request)  # open to every identified caller
            continue
        code, reason, message = guangdong.refused(stub_method(guangdong, name), request)
        assert (code, reason) == FOREIGN.get(name, DENIED), (name, reason, message)
    assert ledger_seq(national) == seq


def test_a_refusal_reveals_nothing_real_and_fake_objects_answer_alike(gw, case, national):
    """SPEC §9: a caller with no right to an object gets the same answer, byte for byte, whether it exists or not."""
    guangdong = gw.client(GUANGDONG)
    seq = ledger_seq(national)
    for name, fake in FAKE.items():
        real = guangdong.refused(stub_method(guangdong, name), every_rpc(case)[name])
        made_up = guangdong.refused(stub_method(guangdong, name), every_rpc(case, **{name: fake})[name])
        # The id itself is echoed (the caller sent it); apart from it the answers are identical.
        sent = [v for k, v in fake.items()][0]
        real_id = {"ReviseFiling": case["filing"].filing_id, "RevokeFiling": case["filing"].filing_id,
                   "ListFilings": case["filing"].psn_no, "GetAccumulators": case["filing"].psn_no,
                   "CancelSettlement": case["setl_id"], "GetSettlement": case["setl_id"],
                   "ReportProblem": case["setl_id"]}.get(name, case["problem_id"] if "Problem" in name
                                                           else case["mdtrt_id"])
        assert real[:2] == made_up[:2], name
        assert real[2].replace(real_id, "<id>") == made_up[2].replace(sent, "<id>"), (name, real, made_up)
    assert ledger_seq(national) == seq


def refusal_status(client, method, request) -> bytes:
    """The whole google.rpc.Status of a refused call (code, message, ErrorInfo), as the server sent it."""
    try:
        method(request, timeout=30)
    except grpc.RpcError as err:
        return rpc_status.from_call(err).SerializeToString()
    raise AssertionError("the call was expected to be refused but succeeded")


def test_problem_reports_reveal_nothing_to_an_outsider(gw, case, hainan, national):
    """Issue 13 item 10: an outsider province's ReportProblem on a real settlement answered PERMISSION_DENIED
    and on a made-up one NOT_FOUND (likewise the problem RPCs on a real or made-up report).  Now the whole
    status, byte for byte apart from the id the caller sent, is the same for both."""
    guangdong = gw.client(GUANGDONG)
    seq = ledger_seq(national)
    by_visit = hainan(hainan.problems.ReportProblem, ppb.ReportProblemRequest(
        request_id=rid(), mdtrt_id=case["mdtrt_id"], category=ppb.PROBLEM_CATEGORY_OTHER, text="就诊有疑问")).problem
    seq = ledger_seq(national)
    report = dict(request_id="same", category=ppb.PROBLEM_CATEGORY_OTHER, text="测试")
    update = dict(request_id="same", text="已核实")
    cases = [  # (rpc, request factory, real id, made-up id of the same length, reason)
        (guangdong.problems.ReportProblem, lambda i: ppb.ReportProblemRequest(setl_id=i, **report),
         case["setl_id"], "S999999999999999", "SETTLEMENT_NOT_FOUND"),
        (guangdong.problems.ReportProblem, lambda i: ppb.ReportProblemRequest(mdtrt_id=i, **report),
         case["mdtrt_id"], "M999999999999999", "VISIT_NOT_FOUND"),
        (guangdong.problems.GetProblem, lambda i: ppb.GetProblemRequest(problem_id=i),
         case["problem_id"], "R999999999999999", "PROBLEM_NOT_FOUND"),
        (guangdong.problems.GetProblem, lambda i: ppb.GetProblemRequest(problem_id=i),
         by_visit.problem_id, "R999999999999998", "PROBLEM_NOT_FOUND"),
    ] + [(rpc, lambda i: ppb.UpdateProblemRequest(problem_id=i, **update), case["problem_id"], "R999999999999999",
          "PROBLEM_NOT_FOUND")
         for rpc in (guangdong.problems.AssignProblem, guangdong.problems.CommentProblem,
                     guangdong.problems.ResolveProblem)]
    for rpc, request, real_id, made_up_id, reason in cases:
        assert len(real_id) == len(made_up_id)
        real = refusal_status(guangdong, rpc, request(real_id))
        made_up = refusal_status(guangdong, rpc, request(made_up_id))
        assert real.replace(real_id.encode(), b"<id>") == made_up.replace(made_up_id.encode(), b"<id>"), (real, made_up)
        assert guangdong.refused(rpc, request(real_id))[:2] == (grpc.StatusCode.NOT_FOUND, reason)
    assert ledger_seq(national) == seq  # nothing was recorded


def test_admit_at_an_unknown_institution_answers_alike_for_every_person(gw, hainan, spec_data):
    """Before: the institution's province was checked only for known ones, so an unknown code let SPEC §4
    answer per person (PERSON_NOT_FILED or INSTITUTION_UNKNOWN) and any province could probe who is filed."""
    guangdong = gw.client(GUANGDONG)
    answers = set()
    for client in (guangdong, hainan):
        for who in (dict(psn_no=spec_data["psn"]["retired"]), dict(psn_no="P-NOBODY"),
                    dict(certno=PERSONS["retired"]["certno"]), dict(certno=make_certno("11010119900101999"))):
            for rpc, request in (
                    (client.settlement.Admit, spb.AdmitRequest(request_id=rid(), fixmedins_code="H44019999999",
                                                               adm_date=20260310, **who)),
                    (client.settlement.OutpatientSettle, spb.OutpatientSettleRequest(
                        request_id=rid(), fixmedins_code="H44019999999", setl_date=20260310,
                        lines=[line(1, DRUG_A, 100, 1000)], **who))):
                answers.add(client.refused(rpc, request))
    assert len(answers) == 1 and next(iter(answers))[1] == "INSTITUTION_UNKNOWN"


def refusal_reason(outcome: spb.SettleOutcome) -> str:
    from google.rpc import error_details_pb2

    info = error_details_pb2.ErrorInfo()
    outcome.refused.details[0].Unpack(info)
    return info.reason


def rule_name(method: str) -> str:
    return next(f"{svc.name}/{method}" for svc, _ in SERVICES if method in svc.methods_by_name)


BAD_INPUT = {  # RPC -> (fields to spoil, expected reason)
    "File": ({"person.certno": "21010219900101402"}, "INVALID_CERTNO"),
    "ReviseFiling": ({"filing.valid_from": 20261399}, "INVALID_DATE"),
    "RevokeFiling": ({"filing_id": ""}, "INVALID_ARGUMENT"),
    "ListFilings": ({"psn_no": ""}, "INVALID_ARGUMENT"),
    "AdjustAccount": ({"amount_fen": 0}, "INVALID_AMOUNT"),
    "GetAccount": ({"psn_no": "有 空格"}, "INVALID_ARGUMENT"),
    "Admit": ({"adm_date": 2026031}, "INVALID_DATE"),
    "CancelAdmission": ({"mdtrt_id": ""}, "INVALID_ARGUMENT"),
    "UploadFees": ({"lines": [line(9, DRUG_A, 100, -5)]},
                   "INVALID_QUANTITY"),
    "WithdrawFees": ({"feedetl_sns": [""]}, "INVALID_ARGUMENT"),
    "PreSettle": ({"setl_date": 20260230}, "INVALID_DATE"),
    "DischargeSettle": ({"request_id": "有 空格"}, "INVALID_REQUEST_ID"),
    "CancelSettlement": ({"cancel_date": 0}, "INVALID_DATE"),
    "OutpatientSettle": ({"lines": [line(1, DRUG_A, -100, 1000)]},
                         "INVALID_PRICE"),
    "GetSettlement": ({"setl_id": ""}, "INVALID_ARGUMENT"),
    "GetAccumulators": ({"year": 0}, "INVALID_DATE"),
    "GetSettlementExplanation": ({"setl_id": "有 空格"}, "INVALID_ARGUMENT"),
    "ListInstitutions": ({"kind": "hotel"}, "INVALID_ENUM"),
    "ListAdmitted": ({"page_size": 5000}, "INVALID_ARGUMENT"),
    "LoadReferenceData": ({"data_dir": ""}, "INVALID_ARGUMENT"),
    "GetReferenceDataStatus": (None, None),  # takes no input
    "TakeSnapshot": (None, None),  # takes no input
    "Reverse": ({"original_request_id": "有 空格"}, "INVALID_REQUEST_ID"),
    "Ping": (None, None),  # takes no input
    "SettleBatch": ({"items": [spb.SettleItem(outpatient=spb.OutpatientSettleRequest(request_id=f"b{n}"))
                               for n in range(1001)]}, "BATCH_TOO_LARGE"),
    "SettleStream": (None, None),  # per-item refusals: tests/gateway/test_gateway_batch.py
    "SetPrepaid": ({"amount_fen": -1}, "INVALID_AMOUNT"),
    "TopUpPrepaid": ({"amount_fen": 0}, "INVALID_AMOUNT"),
    "GetPositions": ({"province": "46000X"}, "INVALID_ARGUMENT"),
    "CloseMonth": ({"month": 202613}, "INVALID_DATE"),
    "ReopenMonth": ({"month": 0}, "INVALID_DATE"),
    "ConfirmStatement": ({"month": 20261}, "INVALID_DATE"),
    "GetClearingReport": ({"month": 999999}, "INVALID_DATE"),
    "ReconcileTotals": ({"range.date_from": 20260230}, "INVALID_DATE"),
    "ReconcileDetail": ({"items": [fdpb.ReconcileItem(setl_id="X1")]}, "INVALID_ARGUMENT"),
    "ListFlagged": ({"flags": [9]}, "INVALID_ENUM"),
    "ReportProblem": ({"text": ""}, "INVALID_ARGUMENT"),
    "ListProblems": ({"limit": 5000}, "INVALID_ARGUMENT"),
    "GetProblem": ({"problem_id": ""}, "INVALID_ARGUMENT"),
    "AssignProblem": ({"text": ""}, "INVALID_ARGUMENT"),
    "CommentProblem": ({"text": " "}, "INVALID_ARGUMENT"),
    "ResolveProblem": ({"text": ""}, "INVALID_ARGUMENT"),
}


def test_every_rpc_refuses_bad_input_and_changes_nothing(gw, case, national, hainan, liaoning):
    callers = {"File": liaoning, "ReviseFiling": liaoning, "RevokeFiling": liaoning, "ListFilings": liaoning,
               "AdjustAccount": liaoning, "GetAccount": liaoning,
               "LoadReferenceData": national, "GetReferenceDataStatus": national, "SetPrepaid": national,
               "TopUpPrepaid": national, "GetPositions": national, "CloseMonth": national, "ReopenMonth": national,
               "GetClearingReport": national, "ListProblems": national}
    seq = ledger_seq(national)
    for name, (fields, reason) in BAD_INPUT.items():
        if fields is None:
            continue
        client = callers.get(name, hainan)
        request = every_rpc(case, **{name: fields})[name]
        code, got, message = client.refused(stub_method(client, name), request)
        assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason), (name, got, message)
        assert message.endswith(f"[{reason}]")
    assert ledger_seq(national) == seq
    # And the well-formed requests of the open stay still work: nothing above stuck.
    assert hainan(hainan.settlement.UploadFees, every_rpc(case)["UploadFees"]).line_count == 2

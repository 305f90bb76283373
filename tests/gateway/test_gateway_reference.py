"""AdminService.LoadReferenceData over real gRPC (SPEC §3, §9; docs/design.md "Reference data reload").

A rejected load names the file and line and the gateway keeps serving the old
data; a good load swaps the data in without losing anything the ledger holds;
the directory of the last good load is what a restart loads, whatever
``--data-dir`` says; only the national operator may load.
"""
from __future__ import annotations

import json
import os
from functools import partial

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import admin_pb2, settlement_pb2 as spb
import builders
from builders import (DRUG_A, DRUG_B, HK_L1, HK_L2, HK_L3, TREATMENT_A, accumulators, get_settlement, line,
                      outpatient, reference_status, upload)
from gateway_harness import file_person

HAINAN, LIAONING = "460000", "210000"
NEW_INST = "H46010000009"  # only in the new data set
LOAD = "/yidi.v1.AdminService/LoadReferenceData"


@pytest.fixture
def dirs(tmp_path):
    old = write_spec_dataset(tmp_path / "old")["dir"]
    # Bad: the SPEC fixture with the 390 policy (line 2) reducing referrals by 15 points (limit: 10).
    bad = write_spec_dataset(tmp_path / "bad")["dir"]
    path = os.path.join(bad, "policies.jsonl")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    rows[1]["reduction_bp"]["referral"] = 1500
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    # New: the fixture plus one institution, with its own manifest.
    new = write_spec_dataset(tmp_path / "new", manifest={"name": "spec-fixture", "seed": 7, "version": "2026.2"})["dir"]
    with open(os.path.join(new, "institutions.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"fixmedins_code": NEW_INST, "name": "海口市新区医院", "admdvs": "460100",
                            "kind": "hospital", "level": 2, "inpatient": True, "outpatient": True},
                           ensure_ascii=False) + "\n")
    return {"old": old, "bad": bad, "new": new, "ledger": str(tmp_path / "ledger.sqlite")}


# The visits here: admitted 20260301, discharged 20260310.
admit = partial(builders.admit, date=20260301)
settle = partial(builders.settle, date=20260310)


def load_request(request_id: str, data_dir: str) -> admin_pb2.LoadReferenceDataRequest:
    return admin_pb2.LoadReferenceDataRequest(request_id=request_id, data_dir=data_dir)


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


def test_only_the_national_operator_loads_reference_data(dirs, gateways):
    gw = gateways(dirs["old"], dirs["ledger"])
    national = gw.client("national")
    before = reference_status(national)
    for caller in (HAINAN, LIAONING):
        client = gw.client(caller)
        code, reason, _ = client.refused(client.admin.LoadReferenceData, load_request("load-p-" + caller, dirs["new"]))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert reference_status(national) == before
    assert gw.stop() == 0, gw.log()[-3000:]


def test_reference_reload_rejects_bad_data_swaps_good_data_and_survives_restart(dirs, gateways):
    gw = gateways(dirs["old"], dirs["ledger"])
    hainan, liaoning, national = gw.client(HAINAN), gw.client(LIAONING), gw.client("national")
    for n in range(1, 6):
        file_person(liaoning, f"PR{n}", f"210102197001010{n:02d}")
    # State the ledger holds before any reload: a settlement (with its accumulators) and an open stay.
    a = admit(hainan, "PR1", HK_L3, "ref-admit-1")
    upload(hainan, a.mdtrt_id, [line(1, TREATMENT_A, 500000, 1000), line(2, DRUG_B, 8800, 2000)], "ref-fees-1")
    settled = settle(hainan, a.mdtrt_id, "ref-settle-1")
    acc = accumulators(hainan, "PR1")
    assert acc.inpatient_fund_paid_fen == settled.breakdown.hifp_pay > 0
    open_stay = admit(hainan, "PR2", HK_L2, "ref-admit-2")
    upload(hainan, open_stay.mdtrt_id, [line(1, TREATMENT_A, 100000, 1000)], "ref-fees-2")
    old = reference_status(national)
    assert old.data_dir == dirs["old"] and old.counts["institutions"] == 11 and old.seed == 0

    # A bad row: refused with the file and line, and the old data keeps serving.
    try:
        national(national.admin.LoadReferenceData, load_request("load-bad", dirs["bad"]))
        raise AssertionError("a bad data set was loaded")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(err)
        assert info.reason == "REFERENCE_DATA_INVALID"
        assert "policies.jsonl" in err.details() and "第 2 行" in err.details(), err.details()
        assert (info.metadata["file"], info.metadata["line"]) == ("policies.jsonl", "2")
    code, reason, _ = national.refused(national.admin.LoadReferenceData,
                                       load_request("load-missing", dirs["old"] + "-no-such-dir"))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert reference_status(national) == old  # same data, counts and ledger: the refusals changed nothing
    assert get_settlement(hainan, settled.setl_id) == settled
    assert admit(hainan, "PR3", HK_L2, "ref-admit-3").fixmedins_level == 2  # still admitting
    code, reason, _ = hainan.refused(hainan.settlement.Admit, spb.AdmitRequest(
        request_id="ref-admit-4-early", psn_no="PR4", fixmedins_code=NEW_INST, adm_date=20260301))
    assert reason == "INSTITUTION_UNKNOWN"

    # A good directory: loaded, and the answer is replayed byte for byte.
    req = load_request("load-new", dirs["new"])
    first = national.raw(LOAD, req)
    loaded = admin_pb2.ReferenceDataStatus.FromString(first)
    assert loaded.data_dir == dirs["new"] and loaded.seed == 7 and loaded.version == "2026.2"
    assert dict(loaded.counts) == dict(old.counts, institutions=12)
    assert national.raw(LOAD, req) == first
    code, reason, _ = national.refused(national.admin.LoadReferenceData, load_request("load-new", dirs["old"]))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    now = reference_status(national)
    assert (now.data_dir, dict(now.counts), now.seed) == (dirs["new"], dict(loaded.counts), 7)
    assert now.ledger_seq == reference_status(national).ledger_seq > old.ledger_seq

    # The ledger's state is intact on the new data: settlement, accumulators, open stays, filings.
    assert get_settlement(hainan, settled.setl_id) == settled
    assert accumulators(hainan, "PR1") == acc
    code, reason, _ = hainan.refused(hainan.settlement.Admit, spb.AdmitRequest(
        request_id="ref-admit-2b", psn_no="PR2", fixmedins_code=HK_L3, adm_date=20260305))
    assert reason == "DUPLICATE_ADMISSION"
    upload(hainan, open_stay.mdtrt_id, [line(2, DRUG_A, 1250, 4000)], "ref-fees-2b")
    later = settle(hainan, open_stay.mdtrt_id, "ref-settle-2")
    assert later.breakdown.medfee_sumamt == 105000
    at_new = admit(hainan, "PR4", NEW_INST, "ref-admit-4")
    assert at_new.fixmedins_level == 2 and at_new.filing_id == "F-PR4"
    # A caller-chosen filing id that happens to be the ledger's reference key must not
    # be mistaken for a reference load at restart.
    file_person(liaoning, "PR6", "21010219700101006", filing_id="reference")
    acc2 = accumulators(hainan, "PR2")

    # Restart pointed at the OLD directory: the gateway loads the one the ledger names.
    assert gw.stop() == 0, gw.log()[-3000:]
    gw = gateways(dirs["old"], dirs["ledger"])
    hainan, national = gw.client(HAINAN), gw.client("national")
    after = reference_status(national)
    assert (after.data_dir, dict(after.counts), after.seed, after.version) == (
        dirs["new"], dict(now.counts, persons=now.counts["persons"] + 1, filings=now.counts["filings"] + 1),
        7, "2026.2")
    assert get_settlement(hainan, settled.setl_id) == settled
    assert get_settlement(hainan, later.setl_id) == later
    assert accumulators(hainan, "PR1") == acc and accumulators(hainan, "PR2") == acc2
    assert national.raw(LOAD, req) == first
    # The stay at the new institution is still open; and it still admits others.
    upload(hainan, at_new.mdtrt_id, [line(1, TREATMENT_A, 70000, 1000)], "ref-fees-4")
    assert settle(hainan, at_new.mdtrt_id, "ref-settle-4").fixmedins_code == NEW_INST
    assert admit(hainan, "PR5", NEW_INST, "ref-admit-5").fixmedins_level == 2
    assert gw.stop() == 0, gw.log()[-3000:]


def test_personal_account_balances_across_restarts_and_reference_reloads(dirs, tmp_path, gateways):
    """SPEC §10.1: balance = the data set's opening balance + the changes ledgered since it was loaded."""
    from gateway._pb.yidi.v1 import filing_pb2 as fpb

    acct = "P210102000008"   # the fixture's person with ¥1,000 in the account
    # The insured place's next data set already has what happened before (and a debit of its own): ¥900.
    later = write_spec_dataset(tmp_path / "later")["dir"]
    path = os.path.join(later, "persons.jsonl")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    next(r for r in rows if r["psn_no"] == acct)["acct_balance_fen"] = 90000
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    def balance(gw) -> int:
        liaoning = gw.client(LIAONING)
        return liaoning(liaoning.filing.GetAccount, fpb.GetAccountRequest(psn_no=acct)).balc

    gw = gateways(dirs["old"], dirs["ledger"])
    liaoning, hainan = gw.client(LIAONING), gw.client(HAINAN)
    liaoning(liaoning.filing.AdjustAccount, fpb.AdjustAccountRequest(request_id="acct-1", psn_no=acct,
                                                                      amount_fen=5000, reason="年度划入"))
    s = hainan(hainan.settlement.OutpatientSettle, outpatient(
        "acct-op-1", acct, HK_L1, lines=[line(1, DRUG_A, 1250, 6000)], acct_used_flag=True)).settlement
    assert (s.breakdown.acct_pay, s.balc) == (7500, 97500) and balance(gw) == 97500
    assert gw.stop() == 0, gw.log()[-3000:]
    gw = gateways(dirs["old"], dirs["ledger"])               # replayed from the ledger
    assert balance(gw) == 97500
    national = gw.client("national")
    national(national.admin.TakeSnapshot, admin_pb2.TakeSnapshotRequest())
    national.raw(LOAD, load_request("acct-load", later))     # the new opening balances replace the changes
    assert balance(gw) == 90000
    assert gw.stop() == 0, gw.log()[-3000:]
    gw = gateways(dirs["old"], dirs["ledger"])               # snapshot before the load + replay of the load
    assert balance(gw) == 90000
    hainan = gw.client(HAINAN)
    hainan(hainan.settlement.CancelSettlement, spb.CancelSettlementRequest(
        request_id="acct-cancel", setl_id=s.setl_id, cancel_date=20260316))
    assert balance(gw) == 97500                               # exactly what it drew, given back
    assert gw.stop() == 0, gw.log()[-3000:]

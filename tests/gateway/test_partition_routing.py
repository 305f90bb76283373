"""Which partition a request or a command names (gateway/partitions.py), read with the reference data.

The spec data set's insured are Liaoning's (21 % 2 = partition 1 of 2).  An id names its partition; a person by
psn_no, certno, an electronic voucher or a filing is in their insured province's; a prepaid position's province
is its own; a problem report's reporting province, or a call naming nothing, names no partition (it is served
where it arrives).
"""
from __future__ import annotations

from core import Index
from core.commands import ChangeClearingMonth, PersonId, ReportProblem, SetPrepaid
from core.events import settlement_id
from core.partition import SEQ_SPAN, PartitionMap
from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import common_pb2 as pb, filing_pb2 as fpb, funds_pb2 as fdpb, settlement_pb2 as spb
from gateway.partitions import every_partition, partition_of

TWO = PartitionMap(2)


def test_a_call_names_its_partition_by_an_id_a_person_or_a_position(tmp_path):
    names = write_spec_dataset(tmp_path)
    index = Index()
    index.load_dir(names["dir"])
    psn_no, certno = names["psn"]["retired"], names["certno"]["retired"]
    named = [
        spb.CancelSettlementRequest(request_id="r", setl_id=settlement_id(SEQ_SPAN + 3)),          # 1
        spb.DischargeSettleRequest(request_id="r", mdtrt_id="M000000000000009"),                    # 0
        spb.OutpatientSettleRequest(request_id="r", psn_no=psn_no),                                 # 1
        spb.AdmitRequest(request_id="r", certno=certno),                                            # 1
        spb.OutpatientSettleRequest(request_id="r", mdtrt_cert_type="01", mdtrt_cert_no=f"{psn_no}.1.x"),  # 1
        fpb.FileRequest(request_id="r", person=pb.Person(psn_no="NEW", insuplc_admdvs="440100")),  # 0
        fpb.RevokeFilingRequest(request_id="r", filing_id=names["filing"]["retired"]),  # 1
        fdpb.SetPrepaidRequest(request_id="r", province="440000"),                                  # 0
        SetPrepaid(request_id="r", province="210000", amount_fen=1),                                # 1
    ]
    assert [partition_of(index, TWO, x) for x in named] == [1, 0, 1, 1, 1, 0, 1, 0, 1]
    unnamed = [
        spb.OutpatientSettleRequest(request_id="r", psn_no="NOBODY"),
        ReportProblem(request_id="r", reporter="gateway", category="internal_error", text="x", province="440000",
                      at_ms=1),
        fdpb.ConfirmStatementRequest(request_id="r", month=202603, province="440000"),
        spb.CancelSettlementRequest(request_id="r", setl_id="S999"),
        spb.OutpatientSettleRequest(request_id="r", setl_date=20260315),
    ]
    assert [partition_of(index, TWO, x) for x in unnamed] == [None] * len(unnamed)
    assert partition_of(index, TWO, spb.AdmitRequest(request_id="r", psn_no=psn_no)) == \
        partition_of(index, TWO, PersonId(psn_no=psn_no)) == 1
    assert every_partition(ChangeClearingMonth(request_id="r", month=202603, action="close"))

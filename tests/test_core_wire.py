"""The core writes answers as protobuf bytes itself (wire.pxi): they must equal what the generated classes write."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from core.events import Breakdown, FeeLine
from datagen.spec_fixture import DATE, load_spec_index
from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb

CODES = ("XA01", "XB02", "XB03", "XC04", "T001", "ZZ99")
_SPEC = {}


def spec(tmp_path_factory):
    if not _SPEC:
        _SPEC["ix"] = load_spec_index(tmp_path_factory.mktemp("wire"))
    return _SPEC["ix"]


def by_the_classes(bill, head: dict, lines) -> bytes:
    results = bill.line_results()
    settlement = pb.Settlement(
        **head, policy_effective_from=bill.policy_effective_from,
        breakdown=pb.Breakdown(**dict(zip(Breakdown.__struct_fields__, bill.breakdown, strict=True))),
        lines=[pb.LineResult(feedetl_sn=ln.feedetl_sn, code=ln.code, chrgitm_lv=r[0], det_item_fee_sumamt=r[1],
                             fulamt_ownpay_amt=r[2], overlmt_selfpay=r[3], preselfpay_amt=r[4], inscp_scp_amt=r[5])
               for ln, r in zip(lines, results, strict=True)])
    return spb.SettlementResponse(settlement=settlement).SerializeToString(deterministic=True)


line = st.builds(lambda sn, c, p, q: FeeLine(str(sn), c, "", p, q), st.integers(1, 10**9), st.sampled_from(CODES),
                 st.integers(0, 10**9), st.integers(1, 10**7))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(lines=st.lists(line, min_size=1, max_size=12), who=st.sampled_from(("retired", "assist", "in_service")),
       inpatient=st.booleans(), status=st.sampled_from((0, 1, 2)), name=st.sampled_from(("", "张建国", "李秀英 A")))
def test_the_core_writes_the_bytes_the_generated_classes_write(tmp_path_factory, lines, who, inpatient, status, name):
    ix, n = spec(tmp_path_factory)
    kind = {"retired": "retired_relocation", "assist": "other_temporary", "in_service": "long_term_residence"}[who]
    inst = n["inst"]["hk_l2"]
    bill = ix.bill(n["psn"][who], inst, kind, inpatient, DATE, lines)
    head = dict(setl_id="S000000000000042" if status else "", mdtrt_id="M000000000000041", psn_no=n["psn"][who],
                psn_name=name, fixmedins_code=inst, fixmedins_name="海口市人民医院", insuplc_admdvs="210102",
                mdtrtarea_admdvs="460100", visit_kind=1 if inpatient else 2, insutype=310,
                filing_id="F0002", filing_kind=6, setl_date=DATE, status=status)
    assert bill.settlement_response(**head, lines=lines) == by_the_classes(bill, head, lines)
    # And the bill agrees with the dict answer of Index.benefit (one computation, two shapes).
    answer = ix.benefit(n["psn"][who], inst, kind, inpatient, DATE, [(x.code, x.unit_price_fen, x.qty_milli)
                                                                       for x in lines])
    assert bill.breakdown == tuple(answer[k] for k in Breakdown.__struct_fields__)

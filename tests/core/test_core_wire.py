"""The core writes answers as protobuf bytes itself (wire.pxi): they must equal what the generated classes write."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from core.commands import Card
from core.events import Breakdown, FeeLine
from core.funds import RISK_FLAGS, risk_flag_values
from datagen.spec_fixture import DATE, load_spec_index
from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb
from builders import DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, NOT_LISTED, TREATMENT_A

CODES = (DRUG_A, DRUG_B, DRUG_B_CAPPED, DRUG_C, TREATMENT_A, NOT_LISTED)
_SPEC = {}
# A test build declares a made-up layer the contract does not have (tests/money_layer.py): nothing to compare with.
pytestmark = pytest.mark.skipif(set(Breakdown.__struct_fields__) - set(pb.Breakdown.DESCRIPTOR.fields_by_name),
                                reason="a made-up fund layer of a test build, not in common.proto")


def spec(tmp_path_factory):
    if not _SPEC:
        _SPEC["ix"] = load_spec_index(tmp_path_factory.mktemp("wire"))
    return _SPEC["ix"]


def by_the_classes(bill, head: dict, lines, flags: int = 0, month: int = 0, balc: int = 0) -> bytes:
    results = bill.line_results()
    settlement = pb.Settlement(
        **head, policy_effective_from=bill.policy_effective_from, clearing_month=month, balc=balc,
        risk_flags=[pb.RiskFlag.Value("RISK_FLAG_" + name) for i, name in enumerate(RISK_FLAGS) if flags >> i & 1],
        breakdown=pb.Breakdown(**dict(zip(Breakdown.__struct_fields__, bill.breakdown, strict=True))),
        lines=[pb.LineResult(feedetl_sn=ln.feedetl_sn, code=ln.code, chrgitm_lv=r[0], det_item_fee_sumamt=r[1],
                             fulamt_ownpay_amt=r[2], overlmt_selfpay=r[3], preselfpay_amt=r[4], inscp_scp_amt=r[5])
               for ln, r in zip(lines, results, strict=True)])
    return spb.SettlementResponse(settlement=settlement).SerializeToString(deterministic=True)


line = st.builds(lambda sn, c, p, q: FeeLine(str(sn), c, "", p, q), st.integers(1, 10**9), st.sampled_from(CODES),
                 st.integers(0, 10**9), st.integers(1, 10**7))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(lines=st.lists(line, min_size=1, max_size=12), who=st.sampled_from(("retired", "assist", "in_service")),
       inpatient=st.booleans(), status=st.sampled_from((0, 1, 2)), name=st.sampled_from(("", "张建国", "李秀英 A")),
       flags=st.integers(0, 15), month=st.sampled_from((0, 202603, 202612)),
       accounts=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**9)))
def test_the_core_writes_the_bytes_the_generated_classes_write(tmp_path_factory, lines, who, inpatient, status, name,
                                                               flags, month, accounts):
    ix, n = spec(tmp_path_factory)
    kind = {"retired": "retired_relocation", "assist": "other_temporary", "in_service": "long_term_residence"}[who]
    inst = n["inst"]["hk_l2"]
    bill = ix.bill(n["psn"][who], inst, kind, inpatient, DATE, lines)
    own, family, balc = accounts  # SPEC §10.1: the accounts' share, within what they may pay
    own = min(own, bill.acct_payable)
    bill.set_accounts(own, min(family, bill.acct_payable - own))
    head = dict(setl_id="S000000000000042" if status else "", mdtrt_id="M000000000000041", psn_no=n["psn"][who],
                psn_name=name, fixmedins_code=inst, fixmedins_name="海口市人民医院", insuplc_admdvs="210102",
                mdtrtarea_admdvs="460100", visit_kind=pb.VISIT_KIND_INPATIENT if inpatient else pb.VISIT_KIND_OUTPATIENT,
                insutype=pb.INSUTYPE_EMPLOYEE, filing_id="F0002", filing_kind=pb.FILING_KIND_OTHER_TEMPORARY,
                setl_date=DATE, status=status)
    med = dict(med_type=pb.MED_TYPE_CHRONIC, dise_codg="M07803") if flags & 1 else {}   # SPEC §10.2 fields, on some
    if flags & 2:
        med["mid_setl_flag"] = True                                     # SPEC §10.3
    assert (bill.settlement_response(**head, lines=lines, risk_flags=risk_flag_values(flags), clearing_month=month,
                                     balc=balc, **med)
            == by_the_classes(bill, dict(head, **med), lines, flags, month, balc))
    # And the bill agrees with the dict answer of Index.benefit (one computation, two shapes).
    answer = ix.benefit(n["psn"][who], inst, kind, inpatient, DATE, [(x.code, x.unit_price_fen, x.qty_milli)
                                                                       for x in lines])
    unpaid = dict(answer, psn_cash_pay=answer["psn_cash_pay"] - bill.breakdown[-2] - bill.breakdown[-1],
                  acct_pay=bill.breakdown[-2], acct_mulaid_pay=bill.breakdown[-1])
    assert bill.breakdown == tuple(unpaid[k] for k in Breakdown.__struct_fields__)


# ---------------------------------------------------------------- reading requests
from hypothesis import example  # noqa: E402

from core import _core  # noqa: E402
from gateway.transport import convert  # noqa: E402

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
ints = st.one_of(st.just(0), st.integers(-2**31, 2**31 - 1), st.integers(-2**63, 2**63 - 1))
fee_line = st.builds(pb.FeeLine, feedetl_sn=text, code=text, name=text, unit_price_fen=ints, qty_milli=ints,
                     fee_date=st.integers(-2**31, 2**31 - 1), init_feedetl_sn=text)
request = st.builds(
    lambda rid, who, inst, date, card, lines, acct, med, cert: spb.OutpatientSettleRequest(
        request_id=rid, fixmedins_code=inst, setl_date=date, lines=lines,
        **({"psn_no": who[1]} if who[0] else {"certno": who[1]}), **({"card": card} if card else {}),
        acct_used_flag=acct[0], acct_mulaid_flag=acct[1], med_type=med[0], dise_codg=med[1],
        mdtrt_cert_type=cert[0], mdtrt_cert_no=cert[1]),
    text, st.tuples(st.booleans(), text), text, st.integers(-2**31, 2**31 - 1),
    st.one_of(st.none(), st.builds(spb.Card, card_no=text, card_version=text)), st.lists(fee_line, max_size=4),
    st.tuples(st.booleans(), st.booleans()), st.tuples(st.sampled_from((0, 14, 7, -1)), text),
    st.tuples(st.sampled_from(("", "01", "02", "03")), text))


def _plain(req: spb.OutpatientSettleRequest) -> spb.OutpatientSettleRequest:
    """The request without a medical type or a credential: the usual outpatient settlement."""
    for name in ("med_type", "mdtrt_cert_type", "mdtrt_cert_no"):
        req.ClearField(name)
    return req


requests = st.one_of(request, request.map(_plain))


def read_by_the_classes(req: spb.OutpatientSettleRequest) -> _core.OutpatientRequestRead:
    card = Card(req.card.card_no, req.card.card_version) if req.HasField("card") else None
    return _core.OutpatientRequestRead(
        request_id=req.request_id, psn_no=req.psn_no, certno=req.certno, fixmedins_code=req.fixmedins_code,
        setl_date=req.setl_date, card=card,
        lines=tuple(FeeLine(x.feedetl_sn, x.code, x.name, x.unit_price_fen, x.qty_milli, x.fee_date,
                            x.init_feedetl_sn) for x in req.lines),
        acct_used_flag=req.acct_used_flag, acct_mulaid_flag=req.acct_mulaid_flag, med_type=req.med_type,
        dise_codg=req.dise_codg, mdtrt_cert_type=req.mdtrt_cert_type, mdtrt_cert_no=req.mdtrt_cert_no)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(request)
@example(spb.OutpatientSettleRequest())
def test_the_core_reads_canonical_requests_as_the_generated_classes_do(req):
    raw = req.SerializeToString(deterministic=True)
    assert _core.read_outpatient_request(raw) == read_by_the_classes(req)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=80), requests)
def test_whatever_the_core_accepts_is_canonical_and_read_as_upb_reads_it(noise, req):
    for raw in (noise, req.SerializeToString() + noise, noise + req.SerializeToString()):
        read = _core.read_outpatient_request(raw)
        if read is None:
            continue  # the gateway then parses with the generated class
        parsed = spb.OutpatientSettleRequest.FromString(raw)  # accepted bytes must be a valid message
        assert read == read_by_the_classes(parsed)
        assert raw == parsed.SerializeToString(deterministic=True)  # so the digest may be taken over raw
    for raw in (noise, req.SerializeToString() + noise):
        wire = _core.read_outpatient(raw)
        assert (wire is None) == (_core.read_outpatient_request(raw) is None)
        if type(wire) is _core.Wire:
            parsed = spb.OutpatientSettleRequest.FromString(raw)
            assert (wire.command, wire.digest) == (convert.outpatient_command(parsed), convert.request_digest(parsed))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(requests)
@example(spb.OutpatientSettleRequest())
def test_the_core_makes_the_command_the_gateway_makes_of_the_decoded_request(req):
    """read_outpatient: the command and digest convert makes of the upb-decoded message, unless the request names a
    credential or a medical type (then the fields, for convert to finish)."""
    raw = req.SerializeToString(deterministic=True)
    read = _core.read_outpatient(raw)
    if req.med_type or req.mdtrt_cert_type or req.mdtrt_cert_no:
        assert read == read_by_the_classes(req)
        return
    assert type(read) is _core.Wire
    assert read.command == convert.outpatient_command(req)
    assert read.digest == convert.request_digest(req)
    assert (read.request_id, read.person) == (read.command.request_id, read.command.person)   # the command's fields


def test_a_field_number_beyond_32_bits_is_not_read_as_one_of_ours():
    request_id = spb.OutpatientSettleRequest.REQUEST_ID_FIELD_NUMBER
    raw = _varint(((1 << 32) + request_id) << 3 | 2) + b"\x01a"   # upb refuses it: not a valid field number
    assert _core.read_outpatient_request(raw) is None
    item = _varint(((1 << 32) + spb.SettleItem.OUTPATIENT_FIELD_NUMBER) << 3 | 2) + b"\x00"
    assert _core.read_settle_item(item) is None


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.one_of(requests.map(lambda r: spb.SettleItem(outpatient=r)),
                          st.builds(spb.DischargeSettleRequest, request_id=text, mdtrt_id=text,
                                    dscg_date=st.integers(0, 10**8)).map(lambda r: spb.SettleItem(discharge=r))),
                max_size=5), st.binary(max_size=20))
def test_batch_items_are_split_as_the_generated_classes_split_them(items, noise):
    batch = spb.SettleBatchRequest(items=items)
    raws = _core.read_batch_items(batch.SerializeToString())
    assert raws == [x.SerializeToString() for x in items]
    for raw, item in zip(raws, items, strict=True):
        kind = item.WhichOneof("settle")
        assert _core.read_settle_item(raw) == _core.SettleItemRead(
            field=spb.SettleItem.DESCRIPTOR.fields_by_name[kind].number, request=getattr(item, kind).SerializeToString())
    read = _core.read_batch(batch.SerializeToString(), "method", 9)
    assert len(read) == len(items)
    for got, raw, item in zip(read, raws, items, strict=True):
        whole = _core.read_outpatient(item.outpatient.SerializeToString()) if item.HasField("outpatient") else None
        if type(whole) is not _core.Wire:   # not read whole in the core: its bytes, for convert.settle_item
            assert got == raw and _core.read_outpatient_item(raw, "method", 9) is None
            continue
        for entry in (got, _core.read_outpatient_item(raw, "method", 9)):
            method, wire, field = entry
            assert (method, wire.command, wire.digest, field) == ("method", whole.command, whole.digest, 9)
    split = _core.read_batch_items(noise)
    assert (split is None) == (_core.read_batch(noise, "method", 9) is None)
    if split is not None:  # accepted noise must be exactly a sequence of field-1 items (each then read on its own)
        key = bytes([spb.SettleBatchRequest.ITEMS_FIELD_NUMBER << 3 | 2])
        assert b"".join(key + _varint(len(x)) + x for x in split) == noise

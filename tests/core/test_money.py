"""Money declared once (core/money.py): the hand-written contract and every representation agree with it."""
from __future__ import annotations

from core import money
from core.events import Breakdown
from core.funds import TOTAL_FIELDS
from gateway._pb.yidi.v1 import common_pb2 as pb, funds_pb2 as fdpb


def test_the_breakdown_message_is_the_declaration_at_its_positions():
    fields = pb.Breakdown.DESCRIPTOR.fields
    assert [f.name for f in fields] == list(money.BREAKDOWN_KEYS)
    assert [f.number for f in fields] == list(range(1, len(money.BREAKDOWN) + 1))   # position + 1


def test_the_recorded_breakdown_is_the_declaration_in_order():
    assert Breakdown.__struct_fields__ == money.BREAKDOWN_KEYS
    assert Breakdown().medfee_sumamt == 0 and Breakdown(acct_pay=3, acct_mulaid_pay=4).acct_pay_sumamt == 7


def test_every_cleared_amount_and_accumulator_has_its_field_in_the_contract():
    totals = set(fdpb.ClearingTotals.DESCRIPTOR.fields_by_name)
    assert set(money.CLEARED_KEYS) <= totals and set(TOTAL_FIELDS) == totals
    assert set(money.ACCUMULATOR_KEYS) <= set(pb.Accumulators.DESCRIPTOR.fields_by_name)


def test_each_layer_is_reported_in_amounts_of_that_layer():
    for layer in money.LAYERS:
        for insutype, field in layer.reported_as.items():
            amount = next(a for a in money.BREAKDOWN if a.name == field)
            assert amount.layer == layer.name and insutype in ("", "310", "390")
    assert money.reported_as("supplementary", "390") == "hifmi_pay"
    assert money.reported_as("supplementary", "310") == "hifob_pay"
    assert money.reported_as("basic", "310") == "hifp_pay"


def test_an_older_record_reads_amounts_and_accumulators_declared_after_it_as_zero():
    assert money.pad((1, 2), 4) == (1, 2, 0, 0) and money.pad((1, 2, 3), 2) == (1, 2, 3)
    assert money.cleared(Breakdown(medfee_sumamt=10, fund_pay_sumamt=7, psn_cash_pay=1, acct_pay=2)) == (
        10, 0, 0, 0, 0, 7, 1, 2)

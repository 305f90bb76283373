"""No Python object per settlement survives its call: the gateway's execute path, driven in process on a real
SQLite ledger with the transport's own reply encoder, leaves as many objects tracked by the garbage collector
after N more settlements as before them, for two different N; and the long-lived dicts the settlements change
(clearing months, chronic accumulators, open stays) are not tracked again, so no young collection walks them.

In process, not over gRPC: only here can the test collect and count every object the process tracks."""
from __future__ import annotations

import gc
import itertools
import weakref

import uvloop

from builders import DRUG_A, DRUG_B, HK_L1, HK_L3, line
from core import commands as cmd
from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import settlement_pb2 as spb
from gateway.app import Gateway
from gateway.config import Config
from gateway.store import open_store
from gateway.testing import dev_certs, seal_key
from gateway.transport import convert

HAINAN = "460000"
BOUND = 16   # objects: what the first rounds after the warm-up may still leave in caches filled once


class Rounds:
    """One round: three unary outpatient settlements, one cancelled and one reversed; an inpatient stay admitted,
    billed and discharged; a SettleBatch of 20 outpatient settlements."""

    def __init__(self, gw: Gateway, psn_no: str) -> None:
        self.gw, self.psn_no = gw, psn_no
        self.ids = itertools.count()

    def rid(self, tag: str) -> str:
        return f"{tag}-{next(self.ids)}"

    def outpatient(self) -> spb.OutpatientSettleRequest:
        return spb.OutpatientSettleRequest(request_id=self.rid("op"), psn_no=self.psn_no, fixmedins_code=HK_L1,
                                           setl_date=20260315, lines=[line(1, DRUG_A, price=1250)])

    async def execute(self, command, request) -> bytes:
        return await self.gw.execute(HAINAN, command, convert.request_digest(request))

    async def settle(self, request) -> str:
        reply = await self.execute(convert.outpatient_command(request), request)
        return spb.SettlementResponse.FromString(reply).settlement.setl_id

    async def one(self) -> None:
        first = await self.settle(self.outpatient())
        await self.settle(self.outpatient())
        cancel = spb.CancelSettlementRequest(request_id=self.rid("cancel"), setl_id=first, cancel_date=20260320)
        await self.execute(cmd.CancelSettlement(request_id=cancel.request_id, setl_id=first, cancel_date=20260320),
                           cancel)
        original = self.outpatient()
        await self.settle(original)
        reverse = spb.ReverseRequest(request_id=self.rid("rv"), original_request_id=original.request_id,
                                     reverse_date=20260317)
        await self.execute(cmd.Reverse(request_id=reverse.request_id, original_request_id=original.request_id,
                                       reverse_date=20260317), reverse)
        admit = spb.AdmitRequest(request_id=self.rid("admit"), psn_no=self.psn_no, fixmedins_code=HK_L3,
                                 adm_date=20260310)
        mdtrt_id = spb.AdmitResponse.FromString(await self.execute(convert.admit_command(admit), admit)).mdtrt_id
        fees = spb.UploadFeesRequest(request_id=self.rid("fees"), mdtrt_id=mdtrt_id,
                                     lines=[line(1, DRUG_A), line(2, DRUG_B, price=999)])
        await self.execute(convert.upload_fees_command(fees), fees)
        discharge = spb.DischargeSettleRequest(request_id=self.rid("dscg"), mdtrt_id=mdtrt_id, dscg_date=20260315)
        await self.execute(convert.discharge_command(discharge), discharge)
        batch = [self.outpatient() for _ in range(20)]
        outcomes = await self.gw.execute_many(HAINAN, [(convert.outpatient_command(r), convert.request_digest(r))
                                                       for r in batch])
        assert all(isinstance(o, bytes) for o in outcomes), outcomes

    async def run(self, n: int) -> None:
        for _ in range(n):
            await self.one()


def tracked_after_a_full_collection() -> int:
    """Objects the collector tracks, less dead weak references: sqlite3 keeps one to each cursor a connection
    made and drops the dead ones every 200 cursors (a bounded list per connection, not per settlement)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if not (type(o) is weakref.ref and o() is None))


def long_lived_dicts(gw: Gateway) -> list[dict]:
    """The dicts a settlement changes that live as long as the gateway."""
    engine = gw.state.engine
    months = [rows for m in engine.funds.months.values() for rows in (m.pairs, m.institutions)]
    return [*months, engine.settlements.chronic, engine.visits.open_inpatient, engine.visits.open,
            engine.accounts.changes, *engine.funds.same_day.values()]


async def growth(tmp_path, rounds: tuple[int, ...]) -> tuple[list[int], list[bool]]:
    """Objects tracked after each number of rounds, less those after the warm-up; and whether any long-lived dict
    was tracked again while no collection ran."""
    names = write_spec_dataset(tmp_path / "data")
    config = Config(data_dir=names["dir"], ledger=str(tmp_path / "ledger.sqlite"), seal_key=dev_certs().seal_key)
    store = open_store(config.store_url(), seal_key())
    gw = Gateway(config, store, on_fatal=lambda exc: None, encode_reply=convert.encode_reply)
    await gw.rebuild()
    await gw.wait_writable()
    driver = Rounds(gw, names["psn"]["in_service"])
    try:
        await driver.run(5)   # warm-up: months, metric children, caches filled once
        base = tracked_after_a_full_collection()
        grown, retracked = [], []
        for n in rounds:
            gc.disable()   # no collection may untrack a dict behind the test's back
            try:
                await driver.run(n)
                retracked.append(any(gc.is_tracked(d) for d in long_lived_dicts(gw)))
            finally:
                gc.enable()
            grown.append(tracked_after_a_full_collection() - base)
    finally:
        await gw.close()
    return grown, retracked


def test_no_object_per_settlement_survives_its_call(tmp_path):
    """28 settlements a round (unary, batch, inpatient, cancelled, reversed): 10 rounds (280 settlements) and then
    30 more (840) leave the tracked objects where the warm-up left them, within a bound that does not grow with
    the rounds (0 measured once the warm-up has filled every cache)."""
    grown, retracked = uvloop.run(growth(tmp_path, (10, 30)))
    assert all(abs(g) <= BOUND for g in grown), grown
    assert retracked == [False, False]


def test_a_dict_holding_untracked_tuples_stays_untracked():
    """The mechanism the engine relies on (core.untracked): a tuple stored as made tracks the dict again."""
    from core import untracked

    rows = {"a": untracked(tuple([1, 2]))}
    gc.collect()
    assert not gc.is_tracked(rows)
    rows["b"] = untracked(tuple([3, 4]))
    assert not gc.is_tracked(rows)
    rows["c"] = tuple([5, 6])
    assert gc.is_tracked(rows)

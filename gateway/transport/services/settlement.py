"""SettlementService: translation only; the rules are in core (engine, index, access)."""
from __future__ import annotations

import asyncio

from core import commands as cmd
from core.errors import YidiError
from core.limits import check_year

from .. import convert
from ...app import Gateway
from ...partitions import partition_of, routed
from ..._pb.yidi.v1 import common_pb2 as pb
from ..._pb.yidi.v1 import settlement_pb2 as spb
from ...operations.metrics import BATCH_ITEMS
from .base import Decoded, request_digest


class SettlementService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {
            "Admit": self.admit, "CancelAdmission": self.cancel_admission, "UploadFees": self.upload_fees,
            "WithdrawFees": self.withdraw_fees, "PreSettle": self.presettle,
            "DischargeSettle": self.discharge_settle, "CancelSettlement": self.cancel_settlement,
            "OutpatientSettle": Decoded(convert.outpatient_wire, self.outpatient_settle),
            "GetSettlement": self.get_settlement,
            "GetAccumulators": self.get_accumulators,
            "Reverse": self.reverse,
            "GetSettlementExplanation": self.get_explanation,
            "ListInstitutions": self.list_institutions, "ListAdmitted": self.list_admitted,
            "SettleBatch": Decoded(self.batch_items, self.settle_batch),
            "SettleStream": Decoded(convert.settle_item, self.settle_stream),
        }

    async def admit(self, req: spb.AdmitRequest, caller: str):
        return await self.gw.execute(caller, convert.admit_command(req), request_digest(req))

    async def cancel_admission(self, req: spb.CancelAdmissionRequest, caller: str):
        command = cmd.CancelAdmission(request_id=req.request_id, mdtrt_id=req.mdtrt_id)
        return await self.gw.execute(caller, command, request_digest(req))

    async def upload_fees(self, req: spb.UploadFeesRequest, caller: str):
        return await self.gw.execute(caller, convert.upload_fees_command(req), request_digest(req))

    async def withdraw_fees(self, req: spb.WithdrawFeesRequest, caller: str):
        command = cmd.WithdrawFees(request_id=req.request_id, mdtrt_id=req.mdtrt_id, sns=tuple(req.feedetl_sns))
        return await self.gw.execute(caller, command, request_digest(req))

    async def presettle(self, req: spb.PreSettleRequest, _caller: str) -> bytes:
        return self.gw.engine.settlements.presettle(req.mdtrt_id, req.setl_date, req.acct_used_flag, req.acct_mulaid_flag,
                                        req.mid_setl_flag)

    async def discharge_settle(self, req: spb.DischargeSettleRequest, caller: str):
        return await self.gw.execute(caller, convert.discharge_command(req), request_digest(req))

    async def cancel_settlement(self, req: spb.CancelSettlementRequest, caller: str):
        command = cmd.CancelSettlement(request_id=req.request_id, setl_id=req.setl_id, cancel_date=req.cancel_date)
        return await self.gw.execute(caller, command, request_digest(req))

    async def outpatient_settle(self, req: convert.Wire, caller: str):
        return await self.gw.execute(caller, req.command, req.digest)

    async def get_settlement(self, req: spb.GetSettlementRequest, _caller: str):
        engine = self.gw.engine
        ref = engine.settlements.settlement(req.setl_id)
        return spb.SettlementResponse(
            settlement=convert.recorded_settlement(engine.settlements.reply(ref), ref.status, ref.cancel_date,
                                                   ref.cancel_clearing_month))

    async def get_accumulators(self, req: spb.GetAccumulatorsRequest, _caller: str):
        engine = self.gw.engine
        person = engine.filings.person(req.psn_no)
        check_year(req.year)
        chronic = [pb.ChronicAccumulators(dise_codg=code, deductible_used_fen=used, fund_paid_fen=paid)
                   for code, used, paid in engine.settlements.chronic_accumulators(person["psn_no"], req.year)]
        return pb.Accumulators(psn_no=person["psn_no"], year=req.year, chronic=chronic,
                               **engine.settlements.accumulators(person["psn_no"], req.year))

    async def reverse(self, req: spb.ReverseRequest, caller: str):
        command = cmd.Reverse(request_id=req.request_id, original_request_id=req.original_request_id,
                              reverse_date=req.reverse_date)
        return await self.gw.execute(caller, command, request_digest(req))

    async def get_explanation(self, req: spb.GetSettlementRequest, _caller: str):
        return convert.explanation_pb(self.gw.engine.reads.explanation(req.setl_id))

    # ------------------------------------------------------- look-ups (SPEC §10.8)
    async def list_institutions(self, req: spb.ListInstitutionsRequest, _caller: str):
        rows, more = self.gw.engine.reads.institutions(req.admdvs, req.kind, req.inpatient, req.outpatient, req.dise_codg,
                                                 req.page_token, req.page_size)
        return spb.ListInstitutionsResponse(institutions=[spb.Institution(**row) for row in rows],
                                            next_page_token=rows[-1]["fixmedins_code"] if more else "")

    async def list_admitted(self, req: spb.ListAdmittedRequest, _caller: str):
        rows, more = self.gw.engine.reads.admitted(req.fixmedins_code, req.page_token, req.page_size)
        return spb.ListAdmittedResponse(patients=[convert.admitted_pb(row) for row in rows],
                                        next_page_token=rows[-1]["mdtrt_id"] if more else "")

    # ------------------------------------------------------- batch, stream
    def batch_items(self, raw: bytes) -> list:
        return convert.batch_items(raw, self.gw.config.batch_max_items)

    async def settle_batch(self, items: list, caller: str) -> bytes:
        BATCH_ITEMS.labels("SettleBatch").observe(len(items))
        return convert.settle_batch_reply(await self._settle_items(caller, items))

    async def _settle_items(self, caller: str, items: list) -> list[bytes]:
        """Every item in one execute_many (one ledger group), each authorized by its unary RPC's rule at its turn;
        the encoded SettleOutcomes, in order.  SettleBatch and SettleStream both come here.

        An item is (unary RPC, convert.Wire, answer field) or the YidiError to answer in its place.
        """
        outcomes: list = [None] * len(items)
        runnable, methods, where = [], [], []
        for i, item in enumerate(items):
            if isinstance(item, YidiError):
                outcomes[i] = convert.settle_outcome(item)
                continue
            method, request, answer_field = item
            runnable.append((request.command, request.digest))
            methods.append(method)
            where.append((i, answer_field))
        audited = []   # each item is a mutating call of its own: one audit line each, as its unary call would be
        if runnable and self.gw.partitions.n > 1:
            for i in await self._refuse_routed_elsewhere(runnable, methods, where, outcomes):
                audited.append((items[i][0], items[i][1], "WRONG_PARTITION"))
        if runnable:
            done = await self.gw.execute_many(caller, runnable, methods=methods)
            for (i, answer_field), outcome in zip(where, done, strict=True):
                outcomes[i] = convert.settle_outcome(outcome, answer_field)
                audited.append((items[i][0], items[i][1], outcome.reason if isinstance(outcome, YidiError) else "ok"))
        if self.gw.audit is not None:
            self.gw.audit.write_many(caller, audited)
        return outcomes

    async def _refuse_routed_elsewhere(self, runnable: list, methods: list, where: list, outcomes: list) -> list[int]:
        """Items naming a person this node's reference data does not know, filed through the gateway in another
        partition (its route says so): refused WRONG_PARTITION as an item of a known person of another partition
        is, and taken out of the run (``execute_many`` decides the rest, on the event loop, where no route is
        read); the indices of the items refused."""
        gw = self.gw
        unknown = [k for k, (command, _) in enumerate(runnable)
                   if partition_of(gw.engine.index, gw.partitions, command) is None]
        if not unknown:
            return []
        parts = dict(zip(unknown, await routed(gw.store, [runnable[k][0] for k in unknown]), strict=True))
        refused = []
        for k in reversed(unknown):
            if parts[k] is not None and parts[k] != gw.store.part:
                i = where[k][0]
                outcomes[i] = convert.settle_outcome(YidiError("WRONG_PARTITION", part=parts[k], mine=gw.store.part))
                refused.append(i)
                del runnable[k], methods[k], where[k]
        return refused

    async def settle_stream(self, items, caller: str):
        """Outcomes in request order; items read within a short window go to the ledger as one group;
        at most ``stream_max_in_flight`` items read and not yet answered (then reading waits)."""
        config = self.gw.config
        room = asyncio.Semaphore(config.stream_max_in_flight)
        stream_items = BATCH_ITEMS.labels("SettleStream")
        groups: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def read() -> None:
            group: list = []
            timer = None

            def dispatch() -> None:
                nonlocal group, timer
                if timer is not None:
                    timer.cancel()
                    timer = None
                if group:
                    stream_items.observe(len(group))
                    groups.put_nowait(asyncio.ensure_future(self._settle_items(caller, group)))
                    group = []

            try:
                async for item in items:
                    await room.acquire()
                    group.append(item)
                    if len(group) >= config.batch_max_items:
                        dispatch()
                    elif timer is None:
                        timer = loop.call_later(config.stream_group_window_s, dispatch)
                dispatch()
            finally:
                groups.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await groups.get()) is not None:
                for outcome in await task:
                    room.release()
                    yield outcome
            await reader  # an error while reading ends the stream with it
        finally:
            reader.cancel()

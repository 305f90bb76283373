"""Which ledger partition a call concerns (core/partition.py; docs/postgresql.md, Partitions).

Read from the fields a request (a protobuf message) or a command (core/commands.py) names, which carry the
same names: an id the gateway issued (``mdtrt_id``, ``setl_id``, ``problem_id``, a reversal's ``target_id``)
names its partition; a person (``psn_no``, ``certno``, an electronic voucher, a filing's person, a new
person's ``insuplc_admdvs``) is in the partition of their insured province, which every node's reference data
knows; a prepaid position's ``province`` is its own.  None: the call names none of these (or names an
object this node's reference data does not know); it is served where it arrives.

The clearing calendar's commands and loading reference data are not a single partition's: ``every_partition``
says so.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from core.commands import ChangeClearingMonth, Command, LoadReferenceData
from core.errors import YidiError
from core.limits import PAGE_ROWS
from core.partition import PartitionMap, part_of_seq, route_names

from ._pb.yidi.v1 import funds_pb2 as fdpb, settlement_pb2 as spb
from .store.parts import StorageDown

# Ids whose partition is in their number (core/partition.py); a reversal's target once resolved.
_ID_FIELDS = ("mdtrt_id", "setl_id", "problem_id", "target_id")
# The requests and commands whose ``province`` is a prepaid position's (elsewhere a province is who reports or
# confirms something, which names no partition).
_POSITION_TYPES = frozenset({"SetPrepaid", "TopUpPrepaid", "SetPrepaidRequest", "TopUpPrepaidRequest",
                             "GetPositionsRequest"})
# SPEC §10.5: the electronic voucher is "psn_no.expiry.mac"; routing reads only its psn_no (the owner verifies it).
CERT_VOUCHER = "01"
# Reads answered from one partition's state (a person's, a visit's, a settlement's, a province's position): sent
# to that partition's owner when it is not this node's.  Other reads are answered where they arrive (from
# PostgreSQL, or the reference data every node loads).
PARTITION_READS = frozenset({
    "SettlementService/PreSettle", "SettlementService/GetSettlement", "SettlementService/GetSettlementExplanation",
    "SettlementService/GetAccumulators", "FilingService/GetAccount", "FilingService/ListFilings",
    "ProblemService/GetProblem"})


def every_partition(command: Command) -> bool:
    return type(command) is ChangeClearingMonth or type(command) is LoadReferenceData


def routed_names(obj) -> list[str]:
    """The names (core/partition.py ``route_names``) by which the persons and filings a request names, unknown
    to this node's reference data, may have been routed by their filing (备案) through the gateway."""
    names = []
    for holder in (obj, getattr(obj, "person", None), getattr(obj, "filing", None)):
        if holder is not None:
            names += route_names(psn_no=getattr(holder, "psn_no", ""), certno=getattr(holder, "certno", ""),
                                 filing_id=getattr(holder, "filing_id", ""))
    voucher = _voucher_psn_no(obj)
    if voucher:
        names += route_names(psn_no=voucher)
    return names


async def routed(store, msgs: list) -> list[int | None]:
    """Each message's (a request's or a command's) partition by the routes of persons filed through the gateway
    (PostgreSQL), read off the event loop, for messages naming a person or filing this node's reference data does
    not know; None: no route (or no such message)."""
    names = [routed_names(msg) for msg in msgs]
    route = getattr(store, "route_part", None)
    if route is None or not any(names):
        return [None] * len(msgs)
    try:
        return await asyncio.to_thread(lambda: [route(n) if n else None for n in names])
    except StorageDown:
        raise YidiError("STORAGE_UNAVAILABLE") from None


def partition_of(index, pmap: PartitionMap, obj) -> int | None:
    """The partition ``obj`` (a request or a command) concerns; None when it names none (serve it here)."""
    for name in _ID_FIELDS:
        ident = getattr(obj, name, "")
        if ident:
            return pmap.of_id(ident)
    person = getattr(obj, "person", None)
    insured = getattr(person, "insuplc_admdvs", "")
    if insured:   # a person being filed: as the request says (the index may not know them yet)
        return pmap.of_province(insured)
    psn_no = _psn_no(index, obj)
    if psn_no:
        row = index.get_person(psn_no)
        return pmap.of_province(row["insuplc_admdvs"]) if row is not None else None
    province = getattr(obj, "province", "") if type(obj).__name__ in _POSITION_TYPES else ""
    return pmap.of_province(province) if province else None


def _psn_no(index, obj) -> str:
    """The person a request names, by any of the ways it may: psn_no, certno, a voucher, a filing."""
    for holder in (obj, getattr(obj, "person", None), getattr(obj, "filing", None)):
        if holder is None:
            continue
        psn_no = getattr(holder, "psn_no", "")
        if psn_no:
            return psn_no
        certno = getattr(holder, "certno", "")
        if certno:
            return index.psn_no_by_certno(certno) or ""
    voucher = _voucher_psn_no(obj)
    if voucher:
        return voucher
    filing_id = getattr(obj, "filing_id", "")
    if filing_id:
        filing = index.get_filing(filing_id)
        return filing["psn_no"] if filing is not None else ""
    return ""


def _voucher_psn_no(obj) -> str:
    """The psn_no an electronic voucher (its own fields, or a credential's) names; "" if it names none."""
    credential = getattr(obj, "credential", None)
    cert_type = getattr(obj, "mdtrt_cert_type", "") or getattr(credential, "cert_type", "")
    cert_no = getattr(obj, "mdtrt_cert_no", "") or getattr(credential, "cert_no", "")
    return cert_no.partition(".")[0] if cert_type == CERT_VOUCHER and cert_no else ""


class RequestPartitions:
    """The partition of a call from its request bytes, for the forwarder (gateway/transport/forward.py): read
    with the node's reference data; a reversal's from its original's record (the idempotency index is shared)."""

    def __init__(self, gw) -> None:
        self.gw = gw
        self._classes: dict[str, type] = {}

    async def of(self, method, raw: bytes, caller: Callable[[], str]) -> int | None:
        """The partition of a call to ``method`` (a MethodDescriptor) with request ``raw``; None: serve it here
        (it names no partition, or cannot be read: the local handler answers it as it would)."""
        state = self.gw.state
        if state is None:
            return None
        try:
            msg = self._class(method).FromString(raw)
        except DecodeError:
            return None
        items = getattr(msg, "items", None)
        if items is not None:   # a batch of one partition (else split by the forwarder): its first item's
            if not items:
                return None
            msg = getattr(items[0], items[0].WhichOneof("settle") or "", None)
            if msg is None:
                return None
        original = getattr(msg, "original_request_id", "")
        if original:
            try:
                record = await asyncio.to_thread(self.gw.store.find_request, caller(), original)
            except StorageDown:
                raise YidiError("STORAGE_UNAVAILABLE") from None
            return part_of_seq(record.seq) if record is not None else None
        part = partition_of(state.engine.index, self.gw.partitions, msg)
        if part is None:
            part = (await self.routed([msg]))[0]
        return part

    async def routed(self, msgs: list) -> list[int | None]:
        return await routed(self.gw.store, msgs)

    async def batch_groups(self, items: list[bytes]) -> dict[int, list[int]] | None:
        """A SettleBatch's items (their bytes) by partition, in order within each (an item naming none: this
        node's); None when they are all one partition's, or one cannot be read (the batch is then served as one)."""
        state = self.gw.state
        if state is None:
            return None
        members = []
        for raw in items:
            try:
                item = spb.SettleItem.FromString(raw)
            except DecodeError:
                return None
            members.append(getattr(item, item.WhichOneof("settle") or "", None))
        parts = [partition_of(state.engine.index, self.gw.partitions, m) if m is not None else None for m in members]
        unknown = [i for i, part in enumerate(parts) if part is None and members[i] is not None]
        for i, part in zip(unknown, await self.routed([members[i] for i in unknown]), strict=True):
            parts[i] = part
        groups: dict[int, list[int]] = {}
        for i, part in enumerate(parts):
            groups.setdefault(self.gw.store.part if part is None else part, []).append(i)
        return groups if len(groups) > 1 else None

    def _class(self, method) -> type:
        cls = self._classes.get(method.full_name)
        if cls is None:
            cls = self._classes[method.full_name] = GetMessageClass(method.input_type)
        return cls


# ----------------------------------------------------------------- calls every partition answers
def merge_reports(replies: list[bytes], pmap: PartitionMap, request: bytes) -> bytes:
    """A clearing month's statement from every partition's (in partition order): closed once every partition has
    closed it, confirmed by a province once every partition recorded it; the (insured, treatment) pairs are each
    one partition's (the insured province's) and the institutions' and net positions' figures add up."""
    reports = [fdpb.ClearingReport.FromString(reply) for reply in replies]
    out = fdpb.ClearingReport(month=reports[0].month, closed=all(r.closed for r in reports),
                              confirmed=sorted(set.intersection(*(set(r.confirmed) for r in reports))))
    out.pairs.extend(sorted((p for r in reports for p in r.pairs),
                            key=lambda p: (p.insured_province, p.treatment_province)))
    institutions: dict[str, fdpb.InstitutionTotals] = {}
    nets: dict[str, fdpb.NetPosition] = {}
    for report in reports:
        _add_totals(out.totals, report.totals)
        out.province_names.update(report.province_names)
        for row in report.institutions:
            _add_totals(institutions.setdefault(row.fixmedins_code, _like(row)).totals, row.totals)
        for row in report.net_positions:
            net = nets.setdefault(row.province, fdpb.NetPosition(province=row.province))
            net.receivable_fen += row.receivable_fen
            net.payable_fen += row.payable_fen
            net.net_fen += row.net_fen
    out.institutions.extend(institutions[code] for code in sorted(institutions))
    out.net_positions.extend(nets[province] for province in sorted(nets))
    return out.SerializeToString()


def _like(row: fdpb.InstitutionTotals) -> fdpb.InstitutionTotals:
    return fdpb.InstitutionTotals(fixmedins_code=row.fixmedins_code, fixmedins_name=row.fixmedins_name,
                                  treatment_province=row.treatment_province)


def _add_totals(into: fdpb.ClearingTotals, more: fdpb.ClearingTotals) -> None:
    for field in fdpb.ClearingTotals.DESCRIPTOR.fields:
        setattr(into, field.name, getattr(into, field.name) + getattr(more, field.name))


def merge_positions(replies: list[bytes], pmap: PartitionMap, request: bytes) -> bytes:
    """Every insured province's prepaid position, each from its own partition (where its settlements draw it)."""
    out = fdpb.Positions()
    for part, reply in enumerate(replies):
        out.positions.extend(p for p in fdpb.Positions.FromString(reply).positions
                             if pmap.of_province(p.province) == part)
    return out.SerializeToString()


def first_answer(replies: list[bytes], pmap: PartitionMap, request: bytes) -> bytes:
    """A clearing calendar's change or a reference data load, made by every partition: partition 0's answer (all
    say the same month; each loaded the data set at the path the request names, partition 0's ledger seq)."""
    return replies[0]


def merge_admitted(replies: list[bytes], pmap: PartitionMap, request: bytes) -> bytes:
    """An institution's admitted patients (在院) from every partition's open stays: one page of the smallest
    mdtrt_ids after the page token (each partition answered its own smallest), in mdtrt_id order (an id is its
    record's seq, so partition 0's come first); more pages while any partition had more."""
    limit = spb.ListAdmittedRequest.FromString(request).page_size or PAGE_ROWS[0]
    answers = [spb.ListAdmittedResponse.FromString(reply) for reply in replies]
    patients = sorted((p for a in answers for p in a.patients), key=lambda p: p.mdtrt_id)
    more = len(patients) > limit or any(a.next_page_token for a in answers)
    out = spb.ListAdmittedResponse(patients=patients[:limit])
    if more:
        out.next_page_token = out.patients[-1].mdtrt_id
    return out.SerializeToString()


# RPCs every partition answers (when the ledger is split), and how their answers make one.  GetPositions of one
# province is that province's partition's.
EVERY_PARTITION = {
    "FundsService/CloseMonth": first_answer, "FundsService/ReopenMonth": first_answer,
    "FundsService/ConfirmStatement": first_answer, "FundsService/GetClearingReport": merge_reports,
    "FundsService/GetPositions": merge_positions, "AdminService/LoadReferenceData": first_answer,
    "SettlementService/ListAdmitted": merge_admitted}

"""A gateway node's role for its ledger partition on PostgreSQL: a standby following the owner, then the owner.

Start-up rebuilds the state as on SQLite (reference data, the newest snapshot,
the ledger's tail), then ``Ownership.run``:

* the node tries to take the partition's lease (gateway/store/postgresql/lease.py);
  while another node holds it, this node is a STANDBY: it reads the records
  the owner commits every ``follow_interval_s`` and applies them, as start-up
  replays them (checksum and chain link first); its lease keeper tries to take
  the lease every ``lease_renew_s``.  Health says NOT_SERVING; reads are
  answered (from PostgreSQL, or from the followed state, caught up first:
  ``caught_up``, so a read sees every record committed before it, whatever
  the poll); mutating calls are forwarded to
  the lease's holder (``LeaseHolder``, gateway/transport/forward.py), or,
  while the holder is not known, refused NOT_PARTITION_OWNER
  (``Gateway.require_owner``).
* once it holds the lease: the store takes the lease's token (from then on the
  previous owner's appends are refused by PostgreSQL), the rest of the tail is
  read and applied (nobody else can add to it now), it must end where the
  sealed head row says, and the ledger's writer starts.  The server then
  probes a write and reports SERVING.
* as the OWNER, a loop-side check every ``CHECK_S`` looks whether the lease
  is still valid by the keeper's clock; once it is not (not renewed in time,
  or taken by another node) mutating calls are refused at once and
  ``restart`` is called (the server: NOT_SERVING, exit 70, started again as
  a standby).  Commits cannot outlive the lease either way: the head row's
  token refuses them.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Callable

from core.archive import Overlay
from core.errors import YidiError
from core.partition import route_names

from .app import StoreArchive, apply_replayed
from .store import chain
from .store.parts import Deposed, StorageDown

log = logging.getLogger("yidi.ownership")

# How often the owner's event loop looks whether its lease is still valid.
CHECK_S = 0.1
# Records read from PostgreSQL per page while following.
FOLLOW_PAGE = 1024


class LeaseHolder:
    """Where a PostgreSQL node's calls of a partition are performed (``forward.Owner``).  This node's own
    partition: at the lease's holder while this node is a standby, so a client may call any node; here (None)
    while this node owns it, before it knows who does, and once it has lost the lease (here they are refused
    NOT_PARTITION_OWNER: never sent on to a holder it may have just learned of while exiting).  Another
    partition: at its lease's holder, as the lease table said at the last look (``Ownership.holders``);
    NOT_PARTITION_OWNER while no node holds it."""

    def __init__(self, gw) -> None:
        self.gw = gw

    def self_address(self) -> str:
        return self.gw.ownership.keeper.address

    async def look_up(self, part: int) -> None:
        ownership = self.gw.ownership
        if ownership is not None and part != ownership.keeper.part and part not in ownership.holders:
            await ownership.read_holders()

    def owner_address(self, part: int | None = None) -> str | None:
        ownership = self.gw.ownership
        if ownership is None:
            return None
        if part is not None and part != ownership.keeper.part:
            address = ownership.holders.get(part)
            if address is None:
                raise YidiError("NOT_PARTITION_OWNER", part=part, owner="未知")
            return address
        if ownership.owner:
            return None
        holder = ownership.holder_address()
        return holder if holder and holder != ownership.keeper.address else None


class PartitionLost(RuntimeError):
    """This node no longer owns its partition (why): it exits to be started again as a standby."""


class ReferenceReloaded(Exception):
    """The owner loaded another reference data set: a standby restarts to load it (rare; simplest correct)."""


class Ownership:
    def __init__(self, gw, keeper, follow_interval_s: float, restart: Callable[[str], None]) -> None:
        self.gw = gw
        self.keeper = keeper
        self.follow_interval_s = follow_interval_s
        self.restart = restart   # NOT_SERVING, then exit 70 to be started again (as a standby)
        self.owner = False   # the lease is held and the takeover is done: the ledger's writer runs
        self._taken: asyncio.Event | None = None
        self._check: asyncio.Task | None = None
        self.seq, self.chain = 0, b""   # the last record applied and its chain value
        self.holders: dict[int, str] = {}   # partition -> its owner's address, as the lease table said last
        self._directory: asyncio.Task | None = None
        self._routes: asyncio.Task | None = None   # routing this partition's filings (_route_filings)
        # One follow at a time (the poll's, a read's, the takeover's), numbered as they start; the number of the
        # last one that read to the end of what was committed.
        self._following = asyncio.Lock()
        self._follows_started = self._followed = 0

    def owns(self) -> bool:
        return self.owner and self.keeper.valid()

    def holder_address(self) -> str:
        """Where the owner is (as the lease names it), for a refusal: "" when unknown."""
        if self.owner:
            return self.keeper.address
        return self.keeper.holder.address if self.keeper.holder is not None else ""

    async def run(self, on_standby: Callable[[object], None]) -> None:
        """Follow the tail until the lease is ours, then take the partition over; returns once this node owns it."""
        from .store.postgresql.lease import Holder   # psycopg: only a PostgreSQL gateway loads it

        state = self.gw.state
        self.seq, self.chain = state.applied_seq, state.applied_chain
        if self.gw.partitions.n > 1:
            self._directory = asyncio.get_running_loop().create_task(self._look_up_holders())
        if not await asyncio.to_thread(self.keeper.try_take):
            loop = asyncio.get_running_loop()
            self._taken = asyncio.Event()
            self.keeper.on_taken = lambda _token: loop.call_soon_threadsafe(self._taken.set)
            self.keeper.start()
            durable = state.engine.archive.durable   # followed records are durable: nothing to overlay
            state.engine.archive = durable
            holder = self.keeper.holder or Holder("?", "", 0, 0.0)   # None: the server did not say yet
            log.info("STANDBY: partition %d is owned by %s at %s; following its records every %.1f s",
                     self.keeper.part, holder.owner, holder.address or "?", self.follow_interval_s)
            on_standby(holder)
            if not await self._follow_until_taken():
                await asyncio.Event().wait()   # restarting: the process ends
        else:
            self.keeper.start()
        try:
            await self._take_over()
        except (StorageDown, Deposed, ReferenceReloaded) as err:   # a failover, or another node was quicker
            self.restart(f"partition {self.keeper.part} not taken over: {err}")
            await asyncio.Event().wait()   # restarting: the process ends

    async def _follow_until_taken(self) -> bool:
        """True once the lease is ours; False when this standby must restart."""
        while not self._taken.is_set():
            try:
                await self.caught_up()
            except StorageDown as err:   # the server lost or restarting: the same records are read again later
                log.warning("standby cannot read the ledger now: %s", err)
            except ReferenceReloaded as why:
                self.restart(f"{why}; restarting to load it")
                return False
            try:
                await asyncio.wait_for(self._taken.wait(), self.follow_interval_s)
            except TimeoutError:
                pass
        return True

    async def caught_up(self) -> None:
        """Every record committed before this call is applied when it returns (a read at a standby sees what the
        owner acknowledged before it): done by a follow that started after the call, this call's or one it
        waited for.  StorageDown if the records cannot be read now."""
        asked = self._follows_started
        async with self._following:
            if self._followed > asked:
                return
            self._follows_started += 1
            number = self._follows_started
            await self.follow()
            self._followed = number

    async def before_read(self) -> None:
        """``caught_up`` for a read at a standby; NOT_READY when the standby is about to restart to load the
        reference data the owner loaded."""
        try:
            await self.caught_up()
        except ReferenceReloaded:
            raise YidiError("NOT_READY", why="本节点正在重新加载基础数据") from None

    async def follow(self) -> None:
        """Read the records after the last applied one (off the loop) and apply them (on the loop, where the
        state is read); only through ``caught_up``, one at a time."""
        store = self.gw.store
        while True:
            page = await asyncio.to_thread(lambda: list(itertools.islice(store.scan(self.seq), FOLLOW_PAGE)))
            for record in page:
                self._apply(record)
            if len(page) < FOLLOW_PAGE:
                return

    def _apply(self, record) -> None:
        if record.kind == "reference_loaded":
            raise ReferenceReloaded(f"the owner loaded reference data at ledger seq {record.seq}")
        gw = self.gw
        self.chain = apply_replayed(gw.state.engine, gw.keys, gw.store, record, self.seq, self.chain)
        self.seq = record.seq

    async def _take_over(self) -> None:
        gw, store = self.gw, self.gw.store
        head = await asyncio.to_thread(store.take_over, self.keeper.token)
        await self.caught_up()   # the rest of the tail: the previous owner cannot add to it any more
        if (self.seq, self.chain) != (head.seq, head.chain):
            raise chain.LedgerCorrupt(store.path, self.seq, f"ends the replayed tail, but the sealed head row says "
                                                            f"record {head.seq} with another chain value")
        engine = gw.state.engine
        if gw.partitions.n > 1:   # in the background: the routes written with filings are there already
            self._routes = asyncio.get_running_loop().create_task(self._route_filings())
        if isinstance(engine.archive, StoreArchive):   # it was a standby
            engine.archive = Overlay(engine.archive)
        gw.start_ledger()
        self.owner = True
        self._check = asyncio.get_running_loop().create_task(self._watch())
        log.info("took over partition %d at ledger seq %d (token %d)", self.keeper.part, self.seq, self.keeper.token)

    async def _route_filings(self) -> None:
        """Routes (person_routes) of every person and filing filed in this partition by RPC, where none is there:
        those filed before routes were kept with each filing."""
        filings = self.gw.state.engine.filings
        names = [n for p in filings.persons.values() for n in route_names(p)] + \
            [n for f in filings.filings.values() for n in route_names(filing=f)]
        try:
            await asyncio.to_thread(self.gw.store.put_routes, names)
        except StorageDown as err:   # written again by the next owner's takeover
            log.warning("routes of the persons filed in partition %d not written: %s", self.keeper.part, err)

    async def _look_up_holders(self) -> None:
        """Where every partition's owner is, read from the lease table as often as a lease is renewed."""
        while True:
            try:
                await self.read_holders()
            except StorageDown as err:   # kept as last read; the calls forwarded there are answered by their owner
                log.warning("the partitions' owners cannot be read now: %s", err)
            await asyncio.sleep(self.keeper.renew_s)

    async def read_holders(self) -> None:
        self.holders = await asyncio.to_thread(self.gw.store.lease_holders)

    async def _watch(self) -> None:
        while self.keeper.valid():
            await asyncio.sleep(CHECK_S)
        self.restart(self.keeper.lost or f"the lease of partition {self.keeper.part} was not renewed in time")

    def close(self) -> None:
        """Stop the keeper; the lease is given up if still ours (called after the ledger's last commit)."""
        for task in (self._check, self._directory, self._routes):
            if task is not None:
                task.cancel()
        self.keeper.close()

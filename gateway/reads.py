"""The read side the services answer from: the store's projections (gateway/store/parts.py ``Projections``).

The services translate a request into plain arguments and the answer into a
message; here the arguments are checked by the core's rules (a known
institution and date range, a known province, a page limit) and the store
is asked.  Reconciliation and risk-flag reads may cover a long range, so
they run in a worker thread and the settlements on the event loop never wait
for them; the detail reconciliation holds one chunk of each side at a time
(``core.funds.DetailReconciliation``).  Nothing here holds a database
connection: a long range read is the store's ``ReconRange``, closed here.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AsyncIterator, NamedTuple

from core.archive import ArchivedProblem, ProblemNote
from core.errors import YidiError
from core.events import id_seq
from core.funds import DetailReconciliation, Figures, Item
from core.limits import FLAGGED_ROWS, PAGE_ROWS, page_limit

from .store import Projections, ReconRange

if TYPE_CHECKING:
    from .app import Gateway

RECONCILE_CHUNK_ROWS = 4096       # platform rows read from the store at a time


class Range(NamedTuple):
    """A reconciliation range: an institution's settlements dated date_from..date_to (both included)."""

    fixmedins_code: str
    date_from: int
    date_to: int
    insutype: str = ""   # "": every insurance type


class Reads:
    def __init__(self, gw: Gateway, projections: Projections) -> None:
        self.gw = gw
        self.projections = projections

    def _checked(self, r: Range) -> Range:
        self.gw.engine.clearing.check_reconcile_range(r.fixmedins_code, r.date_from, r.date_to)
        return r

    # ------------------------------------------------------------ reconciliation (对账, SPEC §8)
    async def reconcile_totals(self, r: Range) -> Figures:
        """The platform's figures for the range: its live (not cancelled) settlements."""
        return await asyncio.to_thread(self.projections.recon_totals, *self._checked(r))

    async def reconcile_detail(self, batches: AsyncIterator[tuple[Range, list[Item]]]) -> DetailReconciliation:
        """The province's items, batch by batch, merged with the platform's settlements of the first batch's range."""
        merge = DetailReconciliation()
        platform: ReconRange | None = None
        try:
            async for r, items in batches:
                if platform is None:
                    platform = await asyncio.to_thread(self.projections.recon_range, *self._checked(r))
                merge.feed_province(items)
                await _compare(merge, platform)
            merge.province_done()
            await _compare(merge, platform)
        finally:
            if platform is not None:
                platform.close()
        return merge

    # ------------------------------------------------------------ risk flags (SPEC §7)
    async def flagged(self, r: Range, mask: int, limit: int) -> tuple[list[tuple[str, int, int, int, bool]], bool]:
        """(setl_id, setl_date, flags, medfee, cancelled) of the range's settlements (of every insurance type) with a
        flag of ``mask``, by date, at most ``limit`` (0: the default); and whether there were more."""
        self._checked(r)
        limit = page_limit(limit, FLAGGED_ROWS, "limit")
        rows = await asyncio.to_thread(self.projections.flagged, r.fixmedins_code, r.date_from, r.date_to, mask,
                                       limit + 1)
        return rows[:limit], len(rows) > limit

    # ------------------------------------------------------------ problem reports (报错处理)
    def problems(self, province: str, state: str, after_problem_id: str, limit: int) -> list[ArchivedProblem]:
        """Reports as they now stand, after the page token, of a state and a province ("": any), at most ``limit``
        (0: the default)."""
        if province:
            self.gw.engine.clearing.check_province(province)
        limit = page_limit(limit, PAGE_ROWS, "limit")
        after = id_seq(after_problem_id, "R") if after_problem_id else 0
        if after_problem_id and not after:
            raise YidiError("INVALID_ARGUMENT", what=f"翻页参数 after_problem_id「{after_problem_id[:40]}」",
                            problem="不是问题编号", field="after_problem_id")
        return self.projections.list_problems(province, state, after, limit)

    def problem(self, problem_id: str) -> tuple[ArchivedProblem, list[ProblemNote]]:
        """A report as it stands and its history."""
        return self.gw.engine.problems.problem(problem_id), self.projections.problem_notes(problem_id)


async def _compare(merge: DetailReconciliation, platform: ReconRange | None) -> None:
    """Advance the merge, reading the platform's rows a chunk at a time as it needs them."""
    merge.run()
    while platform is not None and merge.needs_platform:
        merge.feed_platform(await asyncio.to_thread(platform.fetchmany, RECONCILE_CHUNK_ROWS))
        merge.run()

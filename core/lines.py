"""Fee lines (费用明细): each line's fields, refunds (SPEC §10.4) and what a set of lines adds up to.

Pure functions over ``events.FeeLine``; the visits and settlements call them
when they decide.
"""
from __future__ import annotations

from typing import Iterable

import msgspec

from .errors import YidiError
from .events import FeeLine
from .limits import check_id, check_line, line_amount_fen


def check_fields(line: FeeLine, i: int) -> None:
    """One fee line's fields; a refusal names the field as lines[i].<field> (BadRequest)."""
    try:
        _check_fields(line)
    except YidiError as err:
        err.metadata["field"] = f"lines[{i}]." + err.metadata["field"] if "field" in err.metadata else f"lines[{i}]"
        raise


def _check_fields(line: FeeLine) -> None:
    qty = line.qty_milli
    if line.init_feedetl_sn:  # SPEC §10.4: a refund line has a negative quantity, checked as its size
        check_id(line.init_feedetl_sn, "原费用明细流水号 init_feedetl_sn", field="init_feedetl_sn")
        if type(qty) is not int or qty >= 0:
            raise YidiError("INVALID_QUANTITY", what=f"退费明细 {line.feedetl_sn} 的数量", problem="须为负数（千分之一单位）",
                            field="qty_milli")
        if line.init_feedetl_sn == line.feedetl_sn:
            raise YidiError("INVALID_ARGUMENT", what=f"退费明细 {line.feedetl_sn}", problem="不能退自己", field="init_feedetl_sn")
        qty = -qty
    check_line(line.feedetl_sn, line.code, line.name, line.unit_price_fen, qty, line.fee_date)


def check_refunds(lines: dict[str, FeeLine], new: Iterable[FeeLine], settled: dict[str, FeeLine]) -> None:
    """SPEC §10.4: each new refund names an unsettled original line of the stay (the lines so far, ``lines``, with
    the new ones) with its code and unit price, and no original's net quantity goes below 0."""
    for line in new:
        if not line.init_feedetl_sn:
            continue
        original = lines.get(line.init_feedetl_sn)
        if original is None and line.init_feedetl_sn in settled:
            raise YidiError("LINE_ALREADY_SETTLED", feedetl_sn=line.init_feedetl_sn, action="再退费")
        if original is None:
            raise YidiError("FEE_LINE_NOT_FOUND", feedetl_sn=line.init_feedetl_sn,
                            consequence=f"退费明细 {line.feedetl_sn} 无所可退")
        if original.init_feedetl_sn or (original.code, original.unit_price_fen) != (line.code, line.unit_price_fen):
            raise YidiError("INVALID_ARGUMENT", what=f"退费明细 {line.feedetl_sn}",
                            problem=f"须与原明细 {original.feedetl_sn} 的项目编码和单价相同（且原明细不能是退费明细）")
    net = _net_quantities(lines.values())
    over = [sn for sn, qty in net.items() if qty < 0]
    if over:
        raise YidiError("REFUND_EXCEEDS_ORIGINAL", feedetl_sn=over[0], net_qty_milli=net[over[0]])


def _net_quantities(lines: Iterable[FeeLine]) -> dict[str, int]:
    """Each original line's quantity net of its refunds (refunds of unknown lines are left out)."""
    net: dict[str, int] = {}
    refunds = []
    for line in lines:
        if line.init_feedetl_sn:
            refunds.append(line)
        else:
            net[line.feedetl_sn] = line.qty_milli
    for line in refunds:
        if line.init_feedetl_sn in net:
            net[line.init_feedetl_sn] += line.qty_milli
    return net


def net_lines(lines: tuple[FeeLine, ...]) -> tuple[FeeLine, ...]:
    """SPEC §10.4: the original lines with their net quantities (what §5.1 prices); a line refunded to 0 is gone."""
    if not any(line.init_feedetl_sn for line in lines):
        return lines
    net = _net_quantities(lines)
    return tuple(msgspec.structs.replace(line, qty_milli=net[line.feedetl_sn]) for line in lines
                 if not line.init_feedetl_sn and net[line.feedetl_sn] > 0)


def totals(lines: Iterable[FeeLine]) -> tuple[int, int]:
    """(line count, sum of line amounts, refunds netted) of fee lines."""
    lines = tuple(lines)
    total = 0
    for line in net_lines(lines):
        total += line_amount_fen(line.unit_price_fen, line.qty_milli)
    return len(lines), total

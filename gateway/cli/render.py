"""Answers as text a clerk reads: amounts in yuan from integer fen, settlements, filings, accumulators.

No floating point: ``yuan`` formats integer fen exactly.  Columns are padded
by display width (``width``: a Chinese character takes two columns on a
terminal), so a column after a Chinese name stays straight; tables have a
header line.  Messages without a rendering here are printed as JSON.
"""
from __future__ import annotations

import sys
import time
import unicodedata

from core import money


def width(text: str) -> int:
    """The columns text takes on a terminal: East Asian wide and fullwidth characters two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, columns: int, align: str = "<") -> str:
    """text padded with spaces to columns display columns, left (<) or right (>) aligned."""
    fill = " " * max(0, columns - width(text))
    return text + fill if align == "<" else fill + text


def table(headers: list[str], rows: list[list[str]], aligns: str, indent: str = "") -> list[str]:
    """Lines of a table: a header, then rows; each column as wide as its widest cell, aligned as aligns says
    (one "<" or ">" per column)."""
    columns = [max(width(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(pad(c, w, a) for c, w, a in zip(cells, columns, aligns, strict=True)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def progress_printer(label: str):
    """Progress on one terminal line per stage (stderr)."""
    start = time.monotonic()
    stages: list[str] = []

    def progress(stage: str, done: int, total: int | None = None) -> None:
        if stages and stages[-1] != stage:
            print(file=sys.stderr)
        if not stages or stages[-1] != stage:
            stages.append(stage)
        of = f"/{total:,}" if total else ""
        print(f"\r{label} {stage}: {done:,}{of} rows ({time.monotonic() - start:.1f} s)   ",
              end="", file=sys.stderr, flush=True)

    return progress


def print_message(msg, as_json: bool, field: str = "") -> None:
    from google.protobuf import json_format

    if field:  # one value, for shell scripts: --field settlement.setl_id
        for name in field.split("."):
            msg = getattr(msg, name)
        print(msg)
        return
    if as_json:
        print(json_format.MessageToJson(msg, preserving_proto_field_name=True, ensure_ascii=False,
                                        always_print_fields_with_no_presence=True))
        return
    text = render(msg)
    print(text if text is not None else json_format.MessageToJson(msg, preserving_proto_field_name=True,
                                                                  ensure_ascii=False))


def _enum(msg, field: str) -> str:
    """An enum field as its short name: FILING_KIND_REFERRAL -> referral."""
    enum = msg.DESCRIPTOR.fields_by_name[field].enum_type
    name = enum.values_by_number[getattr(msg, field)].name
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    return name.removeprefix(prefix).lower()


def render(msg) -> str | None:
    name = msg.DESCRIPTOR.name
    if name == "SettlementResponse":
        return render_settlement(msg.settlement)
    if name == "AdmitResponse":
        return (f"admitted  mdtrt_id {msg.mdtrt_id}\n  person   {msg.psn_no} {msg.psn_name} "
                f"(insured {msg.insuplc_admdvs})\n  filing   {msg.filing_id} {_enum(msg, 'filing_kind')}\n"
                f"  at       {msg.mdtrtarea_admdvs}, institution level {msg.fixmedins_level}")
    if name == "VisitResponse":
        return (f"visit {msg.mdtrt_id}: {_enum(msg, 'status')}, {msg.line_count} fee lines, "
                f"total {yuan(msg.medfee_sumamt)}")
    if name == "Accumulators":
        return render_accumulators(msg)
    if name == "FilingResponse":
        return render_filing(msg.filing)
    if name == "ListFilingsResponse":
        return render_filings(msg)
    if name == "ReferenceDataStatus":
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(msg.counts.items()))
        snap = f", snapshot at {msg.snapshot_seq}" if msg.snapshot_seq else ", no snapshot yet"
        node = f" {msg.node_id}" if msg.node_id else ""
        owned = f", owns partition {', '.join(map(str, msg.owned_partitions))}" if msg.owned_partitions else ""
        return (f"data {msg.data_dir} (seed {msg.seed}, version {msg.version})\n  {counts}\n"
                f"  ledger seq {msg.ledger_seq}{snap}\n  node{node}: {msg.node_role or 'single'}{owned}")
    if name == "SnapshotStatus":
        return f"snapshot at ledger seq {msg.ledger_seq}: {msg.path} ({msg.bytes:,} bytes)"
    return _FUNDS.get(name, lambda _m: None)(msg)


# ------------------------------------------------------------ month-end operations (SPEC §8)
LEVEL_ZH = {"normal": "正常", "yellow": "黄色预警", "red": "红色预警·紧急调增", "exhausted": "已用尽·待调增"}


def pct(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d}%"


def render_positions(msg) -> str:
    rows = []
    for p in msg.positions:
        level = _enum(p, "level")
        rows.append([p.province, p.province_name, yuan(p.prepaid_fen), yuan(p.used_fen), yuan(p.balance_fen),
                     pct(p.usage_bp), f"{level} {LEVEL_ZH.get(level, '')}",
                     yuan(p.top_up_demand_fen) if p.top_up_demand_fen else "-"])
    headers = ["province", "name", "prepaid 预付金", "used 已使用", "balance 余额", "usage", "level 预警",
               "top-up demand 调增需求"]
    return "\n".join(table(headers, rows, "<<>>>><>"))


def render_position(p) -> str:
    return render_positions(type("Positions", (), {"positions": [p]}))


def render_month(msg) -> str:
    state = "closed 已关闭" if msg.closed else "open 未关闭"
    confirmed = "、".join(msg.confirmed) or "none yet"
    return f"clearing month {msg.month}: {state}; confirmed by {confirmed}"


def render_report(r) -> str:
    names = r.province_names
    t = r.totals
    head = [f"clearing report {r.month} ({'closed' if r.closed else 'open'}; confirmed by "
            f"{'、'.join(r.confirmed) or 'none yet'})",
            f"  {t.settlements:,} settlements and {t.cancellations:,} cancellations booked "
            f"({t.settlements - t.cancellations:,} net); medfee {yuan(t.medfee_sumamt)}, "
            f"fund {yuan(t.fund_pay_sumamt)} ("
            + ", ".join(f"{a.name.removesuffix('_pay')} {yuan(getattr(t, a.name))}" for a in money.BREAKDOWN if a.layer)
            + ")",
            f"  flags: long_stay {t.long_stay:,}, high_cost {t.high_cost:,}, on_site_check {t.on_site_check:,}, "
            f"same_day_repeat {t.same_day_repeat:,}",
            "", "flows 参保地 → 就医地 (fund paid, largest first)"]
    columns = ["settlements 结算", "cancelled 撤销", "medfee 医疗费", "fund 基金", "accounts 个人账户"]
    rows = [[names.get(p.insured_province, p.insured_province), names.get(p.treatment_province, p.treatment_province),
             *_counts_and_money(p.totals)] for p in sorted(r.pairs, key=lambda p: -p.totals.fund_pay_sumamt)]
    head += table(["insured 参保地", "treatment 就医地", *columns], rows, "<<>>>>>", "  ")
    head += ["", "net positions 净头寸 (receivable 应收 − payable 应付; fund and accounts)"]
    nets = sorted(r.net_positions, key=lambda n: -n.net_fen)
    rows = [[n.province, names.get(n.province, ""), yuan(n.receivable_fen), yuan(n.payable_fen), yuan(n.net_fen)]
            for n in nets]
    head += table(["province", "name", "receivable 应收", "payable 应付", "net 净头寸"], rows, "<<>>>", "  ")
    provinces = {p.insured_province for p in r.pairs} | {p.treatment_province for p in r.pairs}
    if {n.province for n in nets} == provinces:   # the whole month (a province's report has its own row only)
        head.append(f"  sum of net positions {yuan(sum(n.net_fen for n in nets))}")
    if r.institutions:
        head += ["", "institutions 定点医药机构"]
        rows = [[i.fixmedins_code, i.fixmedins_name, *_counts_and_money(i.totals)] for i in r.institutions]
        head += table(["code", "name", *columns], rows, "<<>>>>>", "  ")
    return "\n".join(head)


def _counts_and_money(x) -> list[str]:
    """A ClearingTotals row: settlements and cancellations booked, then net medfee, fund and account payments."""
    return [f"{x.settlements:,}", f"{x.cancellations:,}", yuan(x.medfee_sumamt), yuan(x.fund_pay_sumamt),
            yuan(x.acct_pay_sumamt)]


def render_totals(msg) -> str:
    def line(label, f):
        return (f"  {label:<9} count {f.count:>8,}  medfee {yuan(f.medfee_sumamt):>18}  "
                f"fund {yuan(f.fund_pay_sumamt):>18}  cash {yuan(f.psn_cash_pay):>18}")
    return "\n".join([f"totals: {'match 一致' if msg.match else 'MISMATCH 不一致'}",
                      line("platform", msg.platform), line("province", msg.province)])


def render_detail(msg) -> str:
    lines = [f"detail: {'match 一致' if msg.match else 'MISMATCH 不一致'}; province sent {msg.province_items:,}, "
             f"platform has {msg.platform_items:,}",
             f"  missing on province side {msg.missing_on_province:,}, missing on platform {msg.missing_on_platform:,}, "
             f"amounts differ {msg.amount_differs:,}, states differ {msg.state_differs:,}"]
    for d in msg.differences:
        accounts = (f" (accounts 个人账户 platform {yuan(d.platform_acct_pay_sumamt)} / province "
                    f"{yuan(d.province_acct_pay_sumamt)})" if d.platform_acct_pay_sumamt != d.province_acct_pay_sumamt
                    else "")
        lines.append(f"  {d.setl_id} {_enum(d, 'kind'):<20} platform {yuan(d.platform_fund_pay_sumamt)}"
                     f"{' cancelled' if d.platform_cancelled else ''} / province {yuan(d.province_fund_pay_sumamt)}"
                     f"{' cancelled' if d.province_cancelled else ''}{accounts}")
    if msg.truncated:
        lines.append("  ... (more differences than listed)")
    return "\n".join(lines)


def render_problem(p) -> str:
    overdue = "  OVERDUE 超期" if p.overdue else ""
    about = p.setl_id or p.mdtrt_id or "-"
    who = f", assigned to {p.assignee}" if p.assignee else ""
    done = f"\n    resolved: {p.resolution}" if p.resolution else ""
    return (f"{p.problem_id} {_enum(p, 'state'):<8} {p.age_days:>4} days{overdue}  {_enum(p, 'category')} about {about} "
            f"({p.treatment_province or '-'}/{p.insured_province or '-'}, by {p.reporter}{who})\n    {p.text}{done}")


def render_problems(msg) -> str:
    lines = [render_problem(p) for p in msg.problems] or ["no problem reports"]
    if msg.overdue:
        lines.append(f"{msg.overdue} open for more than 30 days")
    return "\n".join(lines)


def render_problem_detail(msg) -> str:
    notes = [f"  {time.strftime('%Y-%m-%d %H:%M', time.localtime(n.at_unix_ms / 1000))} {n.action:<9} {n.by}: {n.text}"
             for n in msg.notes]
    return "\n".join([render_problem(msg.problem), *notes])


def render_flagged(msg) -> str:
    lines = [f"{s.setl_id} {s.setl_date} {yuan(s.medfee_sumamt):>14} "
             f"{' '.join(_flag_name(f) for f in s.risk_flags)}{' (cancelled)' if s.cancelled else ''}"
             for s in msg.settlements] or ["no flagged settlements"]
    return "\n".join(lines + (["..."] if msg.truncated else []))


def _flag_name(value: int) -> str:
    from .._pb.yidi.v1 import common_pb2 as pb

    return pb.RiskFlag.Name(value).removeprefix("RISK_FLAG_").lower()


_FUNDS = {
    "Positions": render_positions, "Position": render_position, "ClearingMonth": render_month,
    "ClearingReport": render_report, "ReconcileTotalsResponse": render_totals,
    "ReconcileDetailResponse": render_detail, "ListProblemsResponse": render_problems,
    "ProblemResponse": lambda m: render_problem(m.problem), "ProblemDetail": render_problem_detail,
    "FlaggedSettlements": render_flagged,
}


def render_accumulators(msg) -> str:
    """The year's accumulators: amounts (the ``_fen`` fields) in yuan under names without the unit, counts as is."""
    rows = [[f.name.removesuffix("_fen"), yuan(getattr(msg, f.name)) if f.name.endswith("_fen") else
             f"{getattr(msg, f.name):,}"] for f in msg.DESCRIPTOR.fields
            if f.name not in ("psn_no", "year", "chronic")]
    for c in msg.chronic:
        rows += [[f"chronic {c.dise_codg} deductible_used", yuan(c.deductible_used_fen)],
                 [f"chronic {c.dise_codg} fund_paid", yuan(c.fund_paid_fen)]]
    body = table(["accumulator", "amount"], rows, "<>", "  ")
    return f"accumulators of {msg.psn_no} in {msg.year}\n" + "\n".join(body)


def render_filings(msg) -> str:
    p = msg.person
    head = (f"{p.psn_no} {p.name} certno {p.certno} insured {p.insuplc_admdvs} "
            f"{_enum(p, 'insutype')} {_enum(p, 'person_type')} {_enum(p, 'status')}")
    return "\n".join([head, *(render_filing(f) for f in msg.filings)])


def render_filing(f) -> str:
    codes = ",".join(f.fixmedins_codes) or "any open institution"
    until = f.valid_to or "open-ended"
    return (f"filing {f.filing_id}: {_enum(f, 'kind')} to {f.dest_admdvs} ({codes}), "
            f"{f.valid_from}–{until}, {_enum(f, 'status')}")


_LAYER_ZH = {"basic": "统筹基金 basic fund", "critical_illness": "大病保险 critical illness",
             "assistance": "医疗救助 medical assistance"}


def _pct(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d}%"


def render_explanation(x) -> str:
    """SPEC §10.7 as a clerk reads it: lines, the ratio and deductible, each fund layer, the accumulators."""
    b = x.breakdown
    out = [f"settlement {x.setl_id} explained (结算说明)" + ("  [mid-stay 中途结算]" if x.mid_setl_flag else ""),
           f"  policy of pooling region {x.policy_admdvs}, insutype {_enum(x, 'insutype')}, in force from "
           f"{x.policy_effective_from}" + (f"; chronic disease {x.dise_codg} under entry {x.chronic_entry}"
                                           if x.dise_codg else ""),
           f"  catalogue of province {x.catalog_province} (就医地目录), institution level {x.fixmedins_level}",
           "  lines (class, self-pay share, price cap → total | 全自费 | 超限价 | 先行自付 | 符合范围):"]
    for ln in x.lines:
        cap = yuan(ln.price_cap_fen) if ln.price_cap_fen else "-"
        out.append(f"    {ln.feedetl_sn:>4} {ln.code:<10} {ln.chrgitm_lv or '目录外':<3} {_pct(ln.selfpay_bp):>7} "
                   f"cap {cap:>10}  {yuan(ln.det_item_fee_sumamt):>12} | {yuan(ln.fulamt_ownpay_amt):>10} | "
                   f"{yuan(ln.overlmt_selfpay):>10} | {yuan(ln.preselfpay_amt):>10} | {yuan(ln.inscp_scp_amt):>12}")
    out.append(f"  ratio {_pct(b.pay_ratio_bp)} = {_pct(x.base_ratio_bp)} for level {x.fixmedins_level}"
               f" + {_pct(x.retired_bonus_bp)} retired − {_pct(x.reduction_bp)} for {_enum(x, 'filing_kind')}")
    out.append(f"  deductible 起付线: room {yuan(x.deductible_fen)}, applied {yuan(b.act_pay_dedc)}")
    for layer in x.layers:
        ratio = f" × {_pct(layer.ratio_bp)}" if layer.ratio_bp else ""
        extra = (f" (year's self-pay before {yuan(layer.cumulative_before_fen)}, threshold {yuan(layer.threshold_fen)})"
                 if layer.layer == "critical_illness" else "")
        out.append(f"  {_LAYER_ZH.get(layer.layer, layer.layer)}: base {yuan(layer.base_fen)}{ratio}{extra}, "
                   f"cap room before {yuan(layer.room_before_fen)} → paid {yuan(layer.paid_fen)}")
    for a in x.accounts:
        out.append(f"  personal account 个人账户 of {a.psn_no}: paid {yuan(a.amount_fen)}")
    out.append(f"  fund_pay_sumamt 基金支付 {yuan(b.fund_pay_sumamt)}, accounts {yuan(money.accounts_total(b))}, "
               f"psn_cash_pay 个人现金 {yuan(b.psn_cash_pay)}")
    before, after = x.before, x.after
    for name in money.ACCUMULATOR_KEYS:
        if getattr(before, name) != getattr(after, name):
            out.append(f"  accumulator {name}: {getattr(before, name)} → {getattr(after, name)}")
    for b_c, a_c in zip(before.chronic, after.chronic, strict=True):
        out.append(f"  chronic {a_c.dise_codg}: deductible used {b_c.deductible_used_fen} → {a_c.deductible_used_fen},"
                   f" fund paid {b_c.fund_paid_fen} → {a_c.fund_paid_fen}")
    out.append("  recomputed from this explanation: " + ("equal to the recorded amounts" if x.recomputed_equal else
                                                         "DIFFERS (reference data changed since)"))
    return "\n".join(out)


def render_settlement(s) -> str:
    b = s.breakdown
    accounts = any(getattr(b, name) for name in money.ACCOUNTS) or s.balc   # SPEC §10.1: shown when they play
    layers = [(f"{a.name} {a.label}", getattr(b, a.name)) for a in money.BREAKDOWN
              if a.unit == "fen" and (accounts or a.name not in money.ACCOUNTS)]
    if accounts:
        layers.append(("balc 个人账户余额", s.balc))
    status = _enum(s, "status") + (f" on {s.cancel_date}" if s.cancel_date else "") if s.setl_id else "changes nothing"
    if s.dise_codg:
        status += f"  门诊慢特病 chronic disease {s.dise_codg}"
    if s.mid_setl_flag:
        status += "  中途结算 mid-stay"
    head = (f"settlement {s.setl_id or '(pre-settlement)'}  {status}\n"
            f"  visit {s.mdtrt_id} {_enum(s, 'visit_kind')} at {s.fixmedins_code} {s.fixmedins_name}\n"
            f"  person {s.psn_no} {s.psn_name}, insured {s.insuplc_admdvs}, filing {s.filing_id} "
            f"{_enum(s, 'filing_kind')}\n  date {s.setl_date}, policy of {s.policy_effective_from}, "
            f"pay ratio {b.pay_ratio_bp // 100}.{b.pay_ratio_bp % 100:02d}%")
    body = "\n".join(f"  {pad(k, 34)} {yuan(v):>16}" for k, v in layers)
    funds = ""
    if s.clearing_month or s.risk_flags:
        flags = " ".join(_flag_name(f) for f in s.risk_flags) or "none"
        cancel = f", cancellation booked in {s.cancel_clearing_month}" if s.cancel_clearing_month else ""
        funds = f"\n  clearing month {s.clearing_month}{cancel}; risk flags {flags}"
    return f"{head}\n{body}{funds}"


_FUNDS["SettlementExplanation"] = render_explanation


def render_account(a) -> str:
    family = "".join(f"\n  family account {p} (共济): {yuan(b)}" for p, b in zip(a.mulaid_psn_nos, a.mulaid_balc,
                                                                                      strict=True))
    return f"personal account 个人账户 of {a.psn_no}: balance {yuan(a.balc)}{family}"


def render_institutions(r) -> str:
    rows = [f"{i.fixmedins_code}  {i.name}  {i.admdvs} {i.kind} level {i.level}"
            f"{'  inpatient' if i.inpatient else ''}{'  outpatient' if i.outpatient else ''}"
            f"{'  chronic ' + ','.join(i.chronic_diseases) if i.chronic_diseases else ''}" for i in r.institutions]
    more = f"\nnext page: --page-token {r.next_page_token}" if r.next_page_token else ""
    return "\n".join(rows) + more if rows else "no institution matches"


def render_admitted(r) -> str:
    rows = [f"{p.mdtrt_id}  {p.psn_no} {p.psn_name} (insured {p.insuplc_admdvs}) since {p.adm_date}, "
            f"{p.line_count} lines {yuan(p.medfee_sumamt)}" for p in r.patients]
    return "\n".join(rows) if rows else "no admitted cross-province patient"


_FUNDS.update({"AccountResponse": render_account, "ListInstitutionsResponse": render_institutions,
               "ListAdmittedResponse": render_admitted})

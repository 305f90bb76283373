"""Answers as text a clerk reads: amounts in yuan from integer fen, settlements, filings, accumulators.

No floating point: ``yuan`` formats integer fen exactly.  Messages without a
rendering here are printed as JSON.
"""
from __future__ import annotations

import sys
import time


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
        return (f"data {msg.data_dir} (seed {msg.seed}, version {msg.version})\n  {counts}\n"
                f"  ledger seq {msg.ledger_seq}{snap}")
    if name == "SnapshotStatus":
        return f"snapshot at ledger seq {msg.ledger_seq}: {msg.path} ({msg.bytes:,} bytes)"
    return None


def render_accumulators(msg) -> str:
    rows = [(f.name, getattr(msg, f.name)) for f in msg.DESCRIPTOR.fields if f.name not in ("psn_no", "year")]
    body = "\n".join(f"  {k:32} {yuan(v) if k.endswith('_fen') else v}" for k, v in rows)
    return f"accumulators of {msg.psn_no} in {msg.year}\n{body}"


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


def render_settlement(s) -> str:
    b = s.breakdown
    layers = [("medfee_sumamt 医疗费总额", b.medfee_sumamt), ("fulamt_ownpay_amt 全自费", b.fulamt_ownpay_amt),
              ("overlmt_selfpay 超限价自费", b.overlmt_selfpay), ("preselfpay_amt 先行自付", b.preselfpay_amt),
              ("inscp_scp_amt 符合范围", b.inscp_scp_amt), ("act_pay_dedc 起付线", b.act_pay_dedc),
              ("hifp_pay 统筹基金", b.hifp_pay), ("hifmi_pay 居民大病", b.hifmi_pay),
              ("hifob_pay 职工大额", b.hifob_pay), ("maf_pay 医疗救助", b.maf_pay),
              ("fund_pay_sumamt 基金支付合计", b.fund_pay_sumamt), ("psn_cash_pay 个人现金支付", b.psn_cash_pay)]
    status = _enum(s, "status") + (f" on {s.cancel_date}" if s.cancel_date else "") if s.setl_id else "changes nothing"
    head = (f"settlement {s.setl_id or '(pre-settlement)'}  {status}\n"
            f"  visit {s.mdtrt_id} {_enum(s, 'visit_kind')} at {s.fixmedins_code} {s.fixmedins_name}\n"
            f"  person {s.psn_no} {s.psn_name}, insured {s.insuplc_admdvs}, filing {s.filing_id} "
            f"{_enum(s, 'filing_kind')}\n  date {s.setl_date}, policy of {s.policy_effective_from}, "
            f"pay ratio {b.pay_ratio_bp // 100}.{b.pay_ratio_bp % 100:02d}%")
    body = "\n".join(f"  {k:34} {yuan(v):>16}" for k, v in layers)
    return f"{head}\n{body}"

"""`yidi`: generate data, run the gateway, and talk to a running gateway.

    yidi datagen --out data/national --persons 1800000 --seed 2026
    yidi serve --data-dir data/national
    yidi --caller 460000 admit --psn-no ... --institution ... --date 20261122

Client subcommands print readable text, or the response as JSON with --json.
Amounts are shown in yuan from integer fen (no floating point).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import uuid

DEFAULT_TARGET = "127.0.0.1:50051"


# ---------------------------------------------------------------- output
def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def _progress_printer(label: str):
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


def today() -> int:
    d = datetime.date.today()
    return d.year * 10000 + d.month * 100 + d.day


def parse_qty_milli(value) -> int:
    """A quantity as int thousandths, or a decimal string like "3.500"."""
    if isinstance(value, int):
        return value * 1000
    whole, _, frac = str(value).partition(".")
    if len(frac) > 3 or not (whole + frac).isdigit():
        raise SystemExit(f"quantity {value!r}: at most 3 decimals, digits only")
    return int(whole or "0") * 1000 + int((frac + "000")[:3])


def load_fee_lines(path: str):
    """Fee lines from a JSON file: a list of {feedetl_sn, code, name, unit_price_fen, qty | qty_milli}."""
    import orjson

    from ._pb.yidi.v1 import common_pb2 as pb

    with open(path, "rb") as f:
        rows = orjson.loads(f.read())
    lines = []
    for i, row in enumerate(rows, 1):
        qty = row["qty_milli"] if "qty_milli" in row else parse_qty_milli(row["qty"])
        lines.append(pb.FeeLine(feedetl_sn=str(row.get("feedetl_sn", i)), code=row["code"],
                                name=row.get("name", ""), unit_price_fen=row["unit_price_fen"],
                                qty_milli=qty, fee_date=row.get("fee_date", 0)))
    return lines


# --------------------------------------------------------------- client
class Client:
    def __init__(self, args) -> None:
        import grpc

        from ._pb.yidi.v1 import admin_pb2_grpc, filing_pb2_grpc, settlement_pb2_grpc

        self.channel = grpc.insecure_channel(args.target)
        self.metadata = (("x-yidi-caller", args.caller),) if args.caller else ()
        self.filing = filing_pb2_grpc.FilingServiceStub(self.channel)
        self.settlement = settlement_pb2_grpc.SettlementServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def call(self, method, request):
        return method(request, metadata=self.metadata, timeout=30)


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
        rows = [(f.name, getattr(msg, f.name)) for f in msg.DESCRIPTOR.fields if f.name not in ("psn_no", "year")]
        body = "\n".join(f"  {k:32} {yuan(v) if k.endswith('_fen') else v}" for k, v in rows)
        return f"accumulators of {msg.psn_no} in {msg.year}\n{body}"
    if name == "FilingResponse":
        return render_filing(msg.filing)
    if name == "ListFilingsResponse":
        p = msg.person
        head = (f"{p.psn_no} {p.name} certno {p.certno} insured {p.insuplc_admdvs} "
                f"{_enum(p, 'insutype')} {_enum(p, 'person_type')} {_enum(p, 'status')}")
        return "\n".join([head, *(render_filing(f) for f in msg.filings)])
    if name == "ReferenceDataStatus":
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(msg.counts.items()))
        return (f"data {msg.data_dir} (seed {msg.seed}, version {msg.version})\n  {counts}\n"
                f"  ledger seq {msg.ledger_seq}")
    return None


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


# ------------------------------------------------------------- commands
def cmd_datagen(args) -> None:
    from datagen import generate

    start = time.monotonic()
    manifest = generate(args.out, persons=args.persons, seed=args.seed, institutions=args.institutions,
                        progress=_progress_printer("datagen"))
    print(file=sys.stderr)
    print(f"wrote {args.out} in {time.monotonic() - start:.1f} s (seed {manifest['seed']}): "
          + ", ".join(f"{k} {v:,}" for k, v in manifest["counts"].items()))


def cmd_serve(args) -> None:
    from .config import Config
    from .server import run

    config = Config(data_dir=args.data_dir, ledger=args.ledger or "", listen=args.listen)
    if args.max_message_bytes:
        config.max_message_bytes = args.max_message_bytes
    if not os.path.isdir(config.data_dir):
        raise SystemExit(f"no data set at {config.data_dir}: run `yidi datagen --out {config.data_dir}` first")

    def ready(port: int) -> None:
        print(file=sys.stderr)
        print(f"SERVING {config.listen.rsplit(':', 1)[0]}:{port} ledger {config.ledger_path()}", flush=True)

    run(config, ready=ready, progress=_progress_printer("load"))


def _request_id(args) -> str:
    return args.request_id or uuid.uuid4().hex


def _person_id(args) -> dict:
    return {"psn_no": args.psn_no or "", "certno": args.certno or ""}


def cmd_file(args, c: Client):
    from ._pb.yidi.v1 import common_pb2 as pb, filing_pb2 as fpb

    person = pb.Person(psn_no=args.psn_no, certno=args.certno, name=args.name, insuplc_admdvs=args.insuplc,
                       insutype=int(args.insutype), person_type=pb.PersonType.Value("PERSON_TYPE_" + args.person_type.upper()),
                       status=pb.PersonStatus.Value("PERSON_STATUS_" + args.status.upper()),
                       assistance=args.assistance, card_no=args.card_no, card_version=args.card_version)
    filing = pb.Filing(filing_id=args.filing_id, psn_no=args.psn_no,
                       kind=pb.FilingKind.Value("FILING_KIND_" + args.kind.upper()), dest_admdvs=args.dest,
                       fixmedins_codes=[x for x in (args.institutions or "").split(",") if x],
                       valid_from=args.valid_from or today(), valid_to=args.valid_to,
                       status=pb.FilingStatus.Value("FILING_STATUS_ACTIVE"))
    return c.call(c.filing.File, fpb.FileRequest(request_id=_request_id(args), person=person, filing=filing))


def cmd_filings(args, c: Client):
    from ._pb.yidi.v1 import filing_pb2 as fpb

    return c.call(c.filing.ListFilings, fpb.ListFilingsRequest(**_person_id(args)))


def cmd_revoke_filing(args, c: Client):
    from ._pb.yidi.v1 import filing_pb2 as fpb

    return c.call(c.filing.RevokeFiling, fpb.RevokeFilingRequest(request_id=_request_id(args), filing_id=args.filing_id))


def _card(args):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return spb.Card(card_no=args.card_no, card_version=args.card_version or "3.0") if args.card_no else None


def cmd_admit(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.Admit, spb.AdmitRequest(
        request_id=_request_id(args), fixmedins_code=args.institution, adm_date=args.date or today(),
        card=_card(args), **_person_id(args)))


def cmd_fees(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.UploadFees, spb.UploadFeesRequest(
        request_id=_request_id(args), mdtrt_id=args.mdtrt_id, lines=load_fee_lines(args.file)))


def cmd_withdraw_fees(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.WithdrawFees, spb.WithdrawFeesRequest(
        request_id=_request_id(args), mdtrt_id=args.mdtrt_id, feedetl_sns=args.sn or []))


def cmd_cancel_admission(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.CancelAdmission, spb.CancelAdmissionRequest(
        request_id=_request_id(args), mdtrt_id=args.mdtrt_id))


def cmd_presettle(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.PreSettle, spb.PreSettleRequest(mdtrt_id=args.mdtrt_id, setl_date=args.date or today()))


def cmd_settle(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.DischargeSettle, spb.DischargeSettleRequest(
        request_id=_request_id(args), mdtrt_id=args.mdtrt_id, dscg_date=args.date or today()))


def cmd_outpatient(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.OutpatientSettle, spb.OutpatientSettleRequest(
        request_id=_request_id(args), fixmedins_code=args.institution, setl_date=args.date or today(),
        card=_card(args), lines=load_fee_lines(args.file), **_person_id(args)))


def cmd_cancel(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.CancelSettlement, spb.CancelSettlementRequest(
        request_id=_request_id(args), setl_id=args.setl_id, cancel_date=args.date or today()))


def cmd_show(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.GetSettlement, spb.GetSettlementRequest(setl_id=args.setl_id))


def cmd_accum(args, c: Client):
    from ._pb.yidi.v1 import settlement_pb2 as spb

    return c.call(c.settlement.GetAccumulators, spb.GetAccumulatorsRequest(
        psn_no=args.psn_no, year=args.year or today() // 10000))


def cmd_status(args, c: Client):
    from ._pb.yidi.v1 import admin_pb2 as apb

    return c.call(c.admin.GetReferenceDataStatus, apb.GetReferenceDataStatusRequest())


def cmd_load(args, c: Client):
    from ._pb.yidi.v1 import admin_pb2 as apb

    return c.call(c.admin.LoadReferenceData, apb.LoadReferenceDataRequest(
        request_id=_request_id(args), data_dir=os.path.abspath(args.data_dir)))


def cmd_health(args, c: Client):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(c.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yidi", description="Yidi cross-province settlement gateway")
    p.add_argument("--target", default=os.environ.get("YIDI_TARGET", DEFAULT_TARGET), help="gateway HOST:PORT")
    p.add_argument("--caller", default=os.environ.get("YIDI_CALLER", ""),
                   help="calling platform: a province code like 460000, or 'national' (env YIDI_CALLER)")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    p.add_argument("--field", default="", help="print only this response field (dotted path), for scripts")
    p.add_argument("--request-id", default="", help="idempotency key (default: a new random one)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("datagen", help="generate the realistic national data set")
    s.add_argument("--out", default=os.path.join("data", "national"))
    s.add_argument("--persons", type=int, default=1_800_000)
    s.add_argument("--seed", type=int, default=2026)
    s.add_argument("--institutions", type=int, default=None)
    s.set_defaults(fn=cmd_datagen, client=False)

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--data-dir", default=os.path.join("data", "national"))
    s.add_argument("--ledger", default="", help="ledger file (default: yidi-ledger.sqlite beside the data set)")
    s.add_argument("--listen", default=DEFAULT_TARGET)
    s.add_argument("--max-message-bytes", type=int, default=0)
    s.set_defaults(fn=cmd_serve, client=False)

    def client(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.set_defaults(fn=fn, client=True)
        return s

    def person_args(s, required_psn=False):
        s.add_argument("--psn-no", required=required_psn)
        if not required_psn:
            s.add_argument("--certno")

    s = client("file", cmd_file, "file a person for cross-province care (备案)")
    s.add_argument("--psn-no", required=True)
    s.add_argument("--certno", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--insuplc", required=True, help="insured region admdvs, e.g. 210102")
    s.add_argument("--insutype", choices=["310", "390"], default="310")
    s.add_argument("--person-type", choices=["in_service", "retired"], default="in_service")
    s.add_argument("--status", choices=["active", "suspended"], default="active")
    s.add_argument("--assistance", action="store_true")
    s.add_argument("--card-no", required=True, help="social security card number")
    s.add_argument("--card-version", default="3.0")
    s.add_argument("--filing-id", required=True)
    s.add_argument("--kind", required=True, choices=["retired_relocation", "long_term_residence", "stationed_work",
                                                     "referral", "emergency", "other_temporary"])
    s.add_argument("--dest", required=True, help="destination province or city admdvs")
    s.add_argument("--institutions", help="comma-separated designated institution codes")
    s.add_argument("--valid-from", type=int, default=0)
    s.add_argument("--valid-to", type=int, default=0)

    s = client("filings", cmd_filings, "list a person's filings")
    person_args(s)
    s = client("revoke-filing", cmd_revoke_filing, "revoke a filing")
    s.add_argument("--filing-id", required=True)

    for name, fn, help in (("admit", cmd_admit, "admit an inpatient (入院登记)"),
                           ("outpatient", cmd_outpatient, "outpatient one-stop settlement (门诊一站式)")):
        s = client(name, fn, help)
        person_args(s)
        s.add_argument("--institution", required=True, help="fixmedins_code")
        s.add_argument("--date", type=int, default=0, help="yyyymmdd (default today)")
        s.add_argument("--card-no")
        s.add_argument("--card-version")
        if name == "outpatient":
            s.add_argument("--file", required=True, help="fee lines JSON")

    s = client("fees", cmd_fees, "upload fee lines from a JSON file")
    s.add_argument("--mdtrt-id", required=True)
    s.add_argument("--file", required=True)
    s = client("withdraw-fees", cmd_withdraw_fees, "withdraw fee lines (all if none named)")
    s.add_argument("--mdtrt-id", required=True)
    s.add_argument("--sn", action="append")
    s = client("cancel-admission", cmd_cancel_admission, "cancel an admission before settlement")
    s.add_argument("--mdtrt-id", required=True)
    for name, fn, help in (("presettle", cmd_presettle, "pre-settle (changes nothing)"),
                           ("settle", cmd_settle, "discharge and settle (出院结算)")):
        s = client(name, fn, help)
        s.add_argument("--mdtrt-id", required=True)
        s.add_argument("--date", type=int, default=0)
    s = client("cancel", cmd_cancel, "cancel a settlement (结算撤销)")
    s.add_argument("--setl-id", required=True)
    s.add_argument("--date", type=int, default=0)
    s = client("show", cmd_show, "show a settlement")
    s.add_argument("--setl-id", required=True)
    s = client("accum", cmd_accum, "show a person's year accumulators")
    s.add_argument("--psn-no", required=True)
    s.add_argument("--year", type=int, default=0)
    client("status", cmd_status, "reference data status (national operator)")
    s = client("load", cmd_load, "load reference data from a directory (national operator)")
    s.add_argument("--data-dir", required=True)
    client("health", cmd_health, "gRPC health check")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not args.client:
        args.fn(args)
        return
    import grpc

    from .status import reason_of

    client = Client(args)
    try:
        print_message(args.fn(args, client), args.json, args.field)
    except grpc.RpcError as err:
        reason = reason_of(err) or err.code().name
        print(f"refused: {err.code().name} {reason}\n  {err.details()}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

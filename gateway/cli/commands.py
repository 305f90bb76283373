"""The command table of `yidi`: each subcommand's arguments, the request it builds and the RPC it calls.

Client commands are ``Command(name, help, args, rpc="service.Method",
request=builder)``: ``builder(args)`` makes the request message and
``Client`` sends it as the ``--caller``.  ``datagen`` and ``serve`` run
here (``local``); ``health`` calls the standard health service (``call``).
The stubs are imported only when a command runs, so ``yidi datagen`` needs
no gRPC.
"""
from __future__ import annotations

import datetime
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from core import FILING_KINDS, INSUTYPES, PERSON_STATUSES, PERSON_TYPES
from core.problems import CATEGORIES as PROBLEM_CATEGORIES

from .funds import (call_clearing, call_flagged, call_positions, call_prepaid, call_problems,
                    call_reconcile)
from ..config import Config
from ..store.postgresql import safe_url
from .render import print_message, progress_printer

DEFAULT_TARGET = "127.0.0.1:50051"


def arg(*flags: str, **options) -> tuple[tuple[str, ...], dict]:
    """One argparse argument: arg("--psn-no", required=True)."""
    return flags, options


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: tuple = ()
    rpc: str = ""                             # "service.Method" of Client, e.g. "settlement.Admit"
    request: Callable | None = None           # args -> the request message of rpc
    call: Callable | None = None              # (args, Client) -> response, for a call that is not rpc + request
    local: Callable | None = None             # args -> None, for commands that talk to no gateway
    offline: Callable | None = None           # args -> True when it answered without a gateway (status --store)

    def invoke(self, args, client: "Client"):
        """Send this command's request; returns the response message."""
        if self.call is not None:
            return self.call(args, client)
        service, method = self.rpc.split(".")
        return client.call(getattr(getattr(client, service), method), self.request(args))


def client_credentials(args):
    """TLS credentials of the caller (SPEC §9: the certificate names the caller).

    --cert/--key/--ca name the files; else --caller picks the development
    certificate of that caller under --certs (``yidi certs``).  One of them
    is required (``require_caller``): no caller is ever assumed.
    """
    import grpc

    from ..security import certs

    paths = certs.Paths(args.certs)
    cert, key = args.cert or paths.client_cert(args.caller), args.key or paths.client_key(args.caller)
    try:
        return grpc.ssl_channel_credentials(certs.read(args.ca or paths.ca), certs.read(key), certs.read(cert))
    except certs.CertificateError as err:
        raise SystemExit(str(err)) from None


class Client:
    def __init__(self, args) -> None:
        import grpc

        from .._pb.yidi.v1 import admin_pb2_grpc, filing_pb2_grpc, funds_pb2_grpc, problems_pb2_grpc, settlement_pb2_grpc

        if args.insecure:
            self.channel = grpc.insecure_channel(args.target or DEFAULT_TARGET)
        else:
            self.channel = grpc.secure_channel(args.target or DEFAULT_TARGET, client_credentials(args))
        self.metadata = ()
        self.filing = filing_pb2_grpc.FilingServiceStub(self.channel)
        self.settlement = settlement_pb2_grpc.SettlementServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.funds = funds_pb2_grpc.FundsServiceStub(self.channel)
        self.problems = problems_pb2_grpc.ProblemServiceStub(self.channel)

    def call(self, method, request):
        return method(request, metadata=self.metadata, timeout=30)


# ---------------------------------------------------------------- input
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

    from .._pb.yidi.v1 import common_pb2 as pb

    with open(path, "rb") as f:
        rows = orjson.loads(f.read())
    lines = []
    for i, row in enumerate(rows, 1):
        qty = row["qty_milli"] if "qty_milli" in row else parse_qty_milli(row["qty"])
        lines.append(pb.FeeLine(feedetl_sn=str(row.get("feedetl_sn", i)), code=row["code"],
                                name=row.get("name", ""), unit_price_fen=row["unit_price_fen"],
                                qty_milli=qty, fee_date=row.get("fee_date", 0)))
    return lines


def _request_id(args) -> str:
    return args.request_id or uuid.uuid4().hex


def _person_id(args) -> dict:
    """The person oneof: psn_no or certno, whichever was given (setting both would keep only the last)."""
    return {"psn_no": args.psn_no} if args.psn_no else {"certno": args.certno or ""}


def _card(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.Card(card_no=args.card_no, card_version=args.card_version or "3.0") if args.card_no else None


# ---------------------------------------------------------------- local commands
def cmd_datagen(args) -> None:
    from datagen import generate

    start = time.monotonic()
    manifest = generate(args.out, persons=args.persons, seed=args.seed, institutions=args.institutions,
                        progress=progress_printer("datagen"))
    print(file=sys.stderr)
    print(f"wrote {args.out} in {time.monotonic() - start:.1f} s (seed {manifest['seed']}): "
          + ", ".join(f"{k} {v:,}" for k, v in manifest["counts"].items()))


@dataclass(frozen=True)
class ServeOption:
    """One `yidi serve` option: its flag, the Config field it sets, its type and what it is.

    Its default is the environment variable ``YIDI_SERVE_<FLAG>`` (``--log-format`` → ``YIDI_SERVE_LOG_FORMAT``)
    if set, else Config's own default; ``--help`` shows both.
    """

    flag: str
    field: str
    type: type
    help: str
    choices: tuple = ()
    env_alias: str = ""   # a second variable read when YIDI_SERVE_<FLAG> is not set

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "YIDI_SERVE_" + self.dest.upper()

    def default(self):
        raw = os.environ.get(self.env, os.environ.get(self.env_alias) if self.env_alias else None)
        if raw is None:
            return getattr(Config(), self.field) if self.field else ""
        if self.type is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        try:
            return self.type(raw)
        except ValueError:
            raise SystemExit(f"{self.env}={raw[:40]!r}: not a valid {self.type.__name__}") from None

    def argument(self) -> tuple:
        default = self.default()
        if self.field == "store":
            default = safe_url(default)   # a password in YIDI_STORE is never shown
        shown = f"{default!r}" if isinstance(default, str) else f"{default}"
        text = f"{self.help} (default: {shown}; env {self.env})"
        if self.type is bool:
            return arg(self.flag, action="store_true", default=default, help=text)
        return arg(self.flag, type=self.type, default=default, help=text, **({"choices": self.choices} if self.choices else {}))


SERVE_OPTIONS = (
    ServeOption("--data-dir", "data_dir", str, "the reference data set (yidi datagen)"),
    ServeOption("--ledger", "ledger", str, "ledger file; empty: yidi-ledger.sqlite beside the data set"),
    ServeOption("--store", "store", str, "the ledger's store: postgresql://user@host:port/database (password from "
                                         "PGPASSWORD or ~/.pgpass, or in the URL), or a SQLite file; empty: the "
                                         "--ledger file (env also YIDI_STORE)", env_alias="YIDI_STORE"),
    ServeOption("--listen", "listen", str, "host:port of the gRPC listener (port 0: any free port)"),
    ServeOption("--node-id", "node_id", str, "PostgreSQL: this node's name in the partition lease; empty: host "
                                             "name and pid"),
    ServeOption("--advertise", "advertise", str, "PostgreSQL: host:port where other nodes and clients reach this "
                                                 "node; empty: the listen address"),
    ServeOption("--lease-ttl-s", "lease_ttl_s", float, "PostgreSQL: seconds a partition lease lasts unrenewed (the "
                                                       "server's clock); a standby takes it over after that"),
    ServeOption("--lease-renew-s", "lease_renew_s", float, "PostgreSQL: the owner renews its lease this often "
                                                           "(a standby tries to take it as often)"),
    ServeOption("--follow-interval-s", "follow_interval_s", float, "PostgreSQL: a standby reads the owner's new "
                                                                   "records this often"),
    ServeOption("--partitions", "partitions", int, "PostgreSQL: the ledger's partitions by insured province (the "
                                                   "same on every node; 1: the whole ledger)"),
    ServeOption("--partition", "partition", int, "PostgreSQL: the partition this process owns or stands by for "
                                                 "(0..partitions-1); one process per partition a machine serves"),
    ServeOption("--certs", "", str, "development certificates directory (yidi certs); empty: certs/dev"),
    ServeOption("--cert", "tls_cert", str, "server certificate (PEM); empty: <certs>/server.pem"),
    ServeOption("--key", "tls_key", str, "server key (PEM); empty: <certs>/server.key"),
    ServeOption("--ca", "tls_ca", str, "the platform CA that signs client certificates; empty: <certs>/ca.pem"),
    ServeOption("--owner-address", "owner_address", str, "send mutating calls to the gateway node at this host:port "
                                                         "(the owner of their partition), over mTLS with this node's "
                                                         "certificate; empty: perform them here"),
    ServeOption("--node-cert", "node_cert", str, "this node's certificate yidi://node/<name> (yidi certs --nodes), "
                                                 "presented to the owner; empty: <certs>/nodes/node-a.pem"),
    ServeOption("--node-key", "node_key", str, "this node's key; empty: <certs>/nodes/node-a.key"),
    ServeOption("--seal-key", "seal_key", str, "the ledger's seal key, outside the data directory (`yidi keys` "
                                               "makes one); empty: <certs>/seal.key"),
    ServeOption("--witness", "witness", str, "a directory on another volume that receives the sealed chain head "
                                             "after every commit; a ledger behind it is refused at start; empty: none"),
    ServeOption("--insecure", "insecure", bool, "plaintext instead of TLS, loopback only; every Yidi RPC is then "
                                                "UNAUTHENTICATED"),
    ServeOption("--insecure-caller", "insecure_caller", str, "with --insecure, for benchmarks only: the caller every "
                                                             "plaintext call is taken to be"),
    ServeOption("--audit-log", "audit_log", str, "audit log, JSON lines; empty: <ledger>.audit.jsonl"),
    ServeOption("--snapshots", "snapshots", str, "snapshot directory; empty: <ledger>.snapshots"),
    ServeOption("--metrics-listen", "metrics_listen", str, "serve Prometheus /metrics on host:port "
                                                           "(e.g. 127.0.0.1:9464); empty: none"),
    ServeOption("--health-listen", "health_listen", str, "plaintext gRPC health for an orchestrator's probe on a "
                                                         "loopback host:port (e.g. 127.0.0.1:50052); answers even when "
                                                         "the event loop is stalled, then NOT_SERVING; empty: none"),
    ServeOption("--loop-stall-s", "loop_stall_s", float, "an event loop silent this long is stalled: NOT_SERVING "
                                                         "on the health port, a problem report"),
    ServeOption("--loop-stall-exit-s", "loop_stall_exit_s", float, "silent this long: exit so the supervisor "
                                                                   "restarts the gateway (0: never)"),
    ServeOption("--log-format", "log_format", str, "application log lines", choices=("text", "json")),
    ServeOption("--log-level", "log_level", str, "least level logged (debug: also every successful call)",
                choices=("debug", "info", "warning", "error")),
    ServeOption("--max-message-bytes", "max_message_bytes", int, "largest request (MESSAGE_TOO_LARGE beyond)"),
    ServeOption("--snapshot-every-records", "snapshot_every_records", int, "write a snapshot after this many records"),
    ServeOption("--idempotency-cache-keys", "idempotency_cache_keys", int, "recent idempotency keys kept in memory"),
    ServeOption("--max-concurrent-rpcs", "max_concurrent_rpcs", int, "Yidi RPCs in flight on the gateway; "
                                                                      "beyond, OVERLOADED (0: no limit)"),
    ServeOption("--max-queue-wait-ms", "max_queue_wait_ms", float, "a call that queued longer in front of the "
                                                                   "handler is refused OVERLOADED (0: no limit)"),
    ServeOption("--overload-probe-ms", "overload_probe_ms", float, "while calls queue, measure the queue with a "
                                                                   "probe this often"),
    ServeOption("--max-inflight-per-caller", "max_inflight_per_caller", int, "Yidi RPCs in flight per caller"),
    ServeOption("--rate-per-caller-per-s", "rate_per_caller_per_s", float, "calls per second per caller (token bucket)"),
    ServeOption("--rate-burst-per-caller", "rate_burst_per_caller", int, "burst of the per-caller token bucket"),
    ServeOption("--ledger-max-bytes", "ledger_max_bytes", int, "cap the ledger's size (0: none); past it, writes "
                                                              "fail as on a full disk"),
    ServeOption("--keepalive-min-ping-interval-ms", "keepalive_min_ping_interval_ms", int,
                "clients pinging more often get GOAWAY"),
    ServeOption("--storage-probe-interval-s", "storage_probe_interval_s", float,
                "test-write interval while the ledger cannot be written"),
    ServeOption("--shutdown-grace-s", "shutdown_grace_s", float, "seconds in-flight calls get to finish on SIGTERM"),
)


def cmd_voucher(args) -> None:
    """A development electronic-voucher token (SPEC §10.5) from the data set's keys; the key is never printed."""
    from datagen.voucher import issue

    if not 1 <= args.minutes <= 24 * 60:
        raise SystemExit("--minutes must be 1..1440")
    try:
        print(issue(args.data_dir, args.psn_no, args.minutes))
    except (KeyError, OSError) as err:
        raise SystemExit(f"no voucher for {args.psn_no}: {err}") from None


def cmd_serve(args) -> None:
    from ..security import certs
    from ..operations.logs import Progress
    from ..transport.server import run

    config = Config()
    for option in SERVE_OPTIONS:
        if option.field:
            setattr(config, option.field, getattr(args, option.dest))
    paths = certs.Paths(args.certs or os.path.join("certs", "dev"))
    config.tls_cert, config.tls_key = config.tls_cert or paths.server_cert, config.tls_key or paths.server_key
    config.tls_ca = config.tls_ca or paths.ca
    config.seal_key = config.seal_key or paths.seal_key
    config.node_cert = config.node_cert or paths.node_cert(certs.DEV_NODES[0])
    config.node_key = config.node_key or paths.node_key(certs.DEV_NODES[0])
    if not os.path.isdir(config.data_dir):
        raise SystemExit(f"no data set at {config.data_dir}: run `yidi datagen --out {config.data_dir}` first")
    host = config.listen.rsplit(":", 1)[0]

    def listening(port: int) -> None:
        print(f"LISTENING {host}:{port}", flush=True)

    progress = Progress("load", interactive=False if config.log_format == "json" else None)

    def ports(metrics_port: int, health_port: int) -> str:
        metrics = f" metrics http://{config.metrics_listen.rsplit(':', 1)[0]}:{metrics_port}/metrics" if metrics_port else ""
        health = f" health {config.health_listen.rsplit(':', 1)[0]}:{health_port}" if health_port else ""
        return metrics + health

    def ready(port: int, metrics_port: int, health_port: int) -> None:
        progress.done()
        print(f"SERVING {host}:{port} ledger {safe_url(config.store_url())}{ports(metrics_port, health_port)}",
              flush=True)

    def standby(port: int, metrics_port: int, health_port: int, holder) -> None:
        progress.done()
        print(f"STANDBY {host}:{port} ledger {safe_url(config.store_url())}{ports(metrics_port, health_port)} "
              f"owner {holder.address or '?'} (node {holder.owner})", flush=True)

    run(config, ready=ready, progress=progress, listening=listening, standby=standby)


def cmd_certs(args) -> None:
    from ..security import certs

    nodes = certs.DEV_NODES if args.nodes is None else tuple(n.strip() for n in args.nodes.split(",") if n.strip())
    try:
        paths = certs.write_dev_certs(args.out, nodes=nodes)
    except ValueError as err:
        raise SystemExit(f"--nodes: {err}") from None
    print(f"wrote a development CA, a server certificate (localhost, 127.0.0.1, ::1), "
          f"{len(certs.dev_callers())} client certificates (31 provinces and national) and {len(nodes)} node "
          f"certificates ({', '.join(nodes)}) to {paths.directory}")


def cmd_keys(args) -> None:
    from ..store.seal import write_key

    try:
        key = write_key(args.out)
    except FileExistsError:
        raise SystemExit(f"{args.out} exists: a seal key is never overwritten (a ledger sealed with it could not be "
                         "opened without it)") from None
    print(f"wrote a seal key (id {key.key_id}) to {args.out}, readable by its owner only; keep it outside the data "
          "directory (README: where production keeps it)")


def cmd_verify_ledger(args) -> None:
    """Exit 0: proved; 1 (``NOT OK: ...``): the ledger is not what was written; 2: it could not be checked."""
    from ..store.chain import LedgerCorrupt
    from ..store.seal import SealKey
    from ..store import is_postgresql
    from ..store.sqlite.verify import verify_ledger

    try:
        key = SealKey.read(args.key) if args.key else None
        if is_postgresql(args.ledger):   # snapshots are kept in the database
            from ..store.postgresql.verify import verify_ledger as verify_postgresql

            print(verify_postgresql(args.ledger, key, args.witness, live=args.live))
            return
        print(verify_ledger(args.ledger, args.snapshots or args.ledger + ".snapshots", key, args.witness,
                            live=args.live))
    except LedgerCorrupt as err:
        raise SystemExit(f"NOT OK: {err}") from None
    except Exception as err:  # one line, whatever else is wrong
        print(f"cannot verify: {err}", file=sys.stderr)
        raise SystemExit(2) from None


# ---------------------------------------------------------------- requests
def file_request(args):
    from .._pb.yidi.v1 import common_pb2 as pb, filing_pb2 as fpb

    person = pb.Person(psn_no=args.psn_no, certno=args.certno, name=args.name, insuplc_admdvs=args.insuplc,
                       insutype=int(args.insutype), person_type=pb.PersonType.Value("PERSON_TYPE_" + args.person_type.upper()),
                       status=pb.PersonStatus.Value("PERSON_STATUS_" + args.status.upper()),
                       assistance=args.assistance, card_no=args.card_no, card_version=args.card_version)
    filing = pb.Filing(filing_id=args.filing_id, psn_no=args.psn_no,
                       kind=pb.FilingKind.Value("FILING_KIND_" + args.kind.upper()), dest_admdvs=args.dest,
                       fixmedins_codes=[x for x in (args.institutions or "").split(",") if x],
                       valid_from=args.valid_from or today(), valid_to=args.valid_to,
                       status=pb.FilingStatus.Value("FILING_STATUS_ACTIVE"))
    return fpb.FileRequest(request_id=_request_id(args), person=person, filing=filing)


def filings_request(args):
    from .._pb.yidi.v1 import filing_pb2 as fpb

    return fpb.ListFilingsRequest(**_person_id(args))


def revoke_filing_request(args):
    from .._pb.yidi.v1 import filing_pb2 as fpb

    return fpb.RevokeFilingRequest(request_id=_request_id(args), filing_id=args.filing_id)


def _voucher(args) -> dict:
    """SPEC §10.5: --voucher TOKEN presents an electronic voucher (mdtrt_cert_type 01) instead of a number."""
    return {"mdtrt_cert_type": "01", "mdtrt_cert_no": args.voucher} if args.voucher else _person_id(args)


def admit_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.AdmitRequest(request_id=_request_id(args), fixmedins_code=args.institution,
                            adm_date=args.date or today(), card=_card(args), emergency=args.emergency,
                            **_voucher(args))


def outpatient_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.OutpatientSettleRequest(
        request_id=_request_id(args), fixmedins_code=args.institution, setl_date=args.date or today(),
        card=_card(args), lines=load_fee_lines(args.file), acct_used_flag=args.acct, acct_mulaid_flag=args.mulaid,
        med_type=14 if args.disease else 0, dise_codg=args.disease or "", **_voucher(args))


def account_request(args):
    from .._pb.yidi.v1 import filing_pb2 as fpb

    return fpb.GetAccountRequest(**_person_id(args))


def adjust_account_request(args):
    from .._pb.yidi.v1 import filing_pb2 as fpb

    return fpb.AdjustAccountRequest(request_id=_request_id(args), psn_no=args.psn_no, amount_fen=args.amount_fen,
                                    reason=args.reason)


def institutions_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.ListInstitutionsRequest(admdvs=args.admdvs or "", kind=args.kind or "", inpatient=args.inpatient,
                                       outpatient=args.outpatient, dise_codg=args.disease or "",
                                       page_size=args.page_size, page_token=args.page_token or "")


def admitted_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.ListAdmittedRequest(fixmedins_code=args.institution, page_size=args.page_size,
                                   page_token=args.page_token or "")


def fees_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.UploadFeesRequest(request_id=_request_id(args), mdtrt_id=args.mdtrt_id, lines=load_fee_lines(args.file))


def withdraw_fees_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.WithdrawFeesRequest(request_id=_request_id(args), mdtrt_id=args.mdtrt_id, feedetl_sns=args.sn or [])


def cancel_admission_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.CancelAdmissionRequest(request_id=_request_id(args), mdtrt_id=args.mdtrt_id)


def presettle_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.PreSettleRequest(mdtrt_id=args.mdtrt_id, setl_date=args.date or today())


def settle_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.DischargeSettleRequest(request_id=_request_id(args), mdtrt_id=args.mdtrt_id,
                                      dscg_date=args.date or today(), acct_used_flag=args.acct,
                                      acct_mulaid_flag=args.mulaid, mid_setl_flag=args.mid)


def cancel_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.CancelSettlementRequest(request_id=_request_id(args), setl_id=args.setl_id,
                                       cancel_date=args.date or today())


def reverse_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.ReverseRequest(request_id=_request_id(args), original_request_id=args.original_request_id,
                              reverse_date=args.date or today())


def show_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.GetSettlementRequest(setl_id=args.setl_id)


def call_show(args, c):
    method = c.settlement.GetSettlementExplanation if args.explain else c.settlement.GetSettlement
    return c.call(method, show_request(args))


def accum_request(args):
    from .._pb.yidi.v1 import settlement_pb2 as spb

    return spb.GetAccumulatorsRequest(psn_no=args.psn_no, year=args.year or today() // 10000)


def status_request(args):
    from .._pb.yidi.v1 import admin_pb2 as apb

    return apb.GetReferenceDataStatusRequest()


def status_of_leases(args) -> bool:
    """With --store: every partition's lease in that PostgreSQL ledger (owner node, its address, token, seconds
    until it expires by the server's clock), read from the database; no gateway is called."""
    if not args.store:
        return False
    from ..store import is_postgresql

    if not is_postgresql(args.store):
        raise SystemExit(f"yidi status --store: {safe_url(args.store)} is not a postgresql:// URL (a SQLite ledger "
                         "has one node and no leases)")
    import psycopg

    from ..store.postgresql.lease import leases

    try:
        with psycopg.connect(args.store, connect_timeout=10) as conn:
            rows = leases(conn)
    except psycopg.errors.UndefinedTable:
        raise SystemExit(f"{safe_url(args.store)} holds no Yidi ledger yet (no leases table): start a gateway node "
                         "on it (yidi serve --store …)") from None
    except psycopg.Error as err:
        raise SystemExit(f"cannot read the leases of {safe_url(args.store)}: "
                         f"{str(err).strip().splitlines()[0]}") from None
    print_leases(rows, args.json)
    return True


def print_leases(rows, as_json: bool) -> None:
    if as_json:
        import dataclasses
        import json

        print(json.dumps({"leases": [dataclasses.asdict(r) for r in rows]}, ensure_ascii=False))
        return
    if not rows:
        print("no partition leases: no node has run on this ledger yet")
        return
    print(f"{'partition':>9}  {'owner':<16} {'address':<22} {'token':>6}  expires")
    for r in rows:
        if r.expires_in_s is None:
            when = "released"
        elif r.expired:
            when = f"expired {-r.expires_in_s:.1f} s ago"
        else:
            when = f"in {r.expires_in_s:.1f} s"
        print(f"{r.part:>9}  {r.owner or '-':<16} {r.address or '-':<22} {r.token:>6}  {when}")


def load_request(args):
    from .._pb.yidi.v1 import admin_pb2 as apb

    return apb.LoadReferenceDataRequest(request_id=_request_id(args), data_dir=os.path.abspath(args.data_dir))


def snapshot_request(args):
    from .._pb.yidi.v1 import admin_pb2 as apb

    return apb.TakeSnapshotRequest()


def cmd_simulate_month(args) -> None:
    from .simulate import main as simulate

    raise SystemExit(simulate(args))


def call_health(args, c: Client):
    """The standard gRPC health service (any caller's certificate will do; none on the plaintext health port);
    exits 1 unless SERVING, for probes."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(c.channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:   # a probe reads the exit status
        print_message(answer, args.json, args.field)
        raise SystemExit(1)
    return answer


# ---------------------------------------------------------------- the table
PERSON = (arg("--psn-no"), arg("--certno"))
VISIT_AT = (*PERSON, arg("--institution", required=True, help="fixmedins_code"),
            arg("--date", type=int, default=0, help="yyyymmdd (default today)"), arg("--card-no"), arg("--card-version"))
MDTRT = arg("--mdtrt-id", required=True)
ACCOUNT_FLAGS = (arg("--acct", action="store_true", help="the personal account pays its share (acct_used_flag)"),
                 arg("--mulaid", action="store_true", help="then the family accounts (acct_mulaid_flag, 共济)"))

FILE_ARGS = (
    arg("--psn-no", required=True),
    arg("--certno", required=True),
    arg("--name", required=True),
    arg("--insuplc", required=True, help="insured region admdvs, e.g. 210102"),
    arg("--insutype", choices=INSUTYPES, default="310"),
    arg("--person-type", choices=PERSON_TYPES, default="in_service"),
    arg("--status", choices=PERSON_STATUSES, default="active"),
    arg("--assistance", action="store_true"),
    arg("--card-no", required=True, help="social security card number"),
    arg("--card-version", default="3.0"),
    arg("--filing-id", required=True),
    arg("--kind", required=True, choices=FILING_KINDS),
    arg("--dest", required=True, help="destination province or city admdvs"),
    arg("--institutions", help="comma-separated designated institution codes"),
    arg("--valid-from", type=int, default=0),
    arg("--valid-to", type=int, default=0),
)

COMMANDS: tuple[Command, ...] = (
    Command("datagen", "generate the realistic national data set", (
        arg("--out", default=os.path.join("data", "national")),
        arg("--persons", type=int, default=1_800_000),
        arg("--seed", type=int, default=2026),
        arg("--institutions", type=int, default=None),
    ), local=cmd_datagen),
    Command("voucher", "issue a development electronic-voucher token (医保电子凭证) for a person of the data set", (
        arg("--psn-no", required=True),
        arg("--minutes", type=int, default=10),
        arg("--data-dir", default=os.path.join("data", "national")),
    ), local=cmd_voucher),
    Command("serve", "run the gateway (every option also from YIDI_SERVE_* environment variables)",
            tuple(option.argument() for option in SERVE_OPTIONS), local=cmd_serve),
    Command("certs", "create development certificates: a CA, the server's, one per province and national, one per "
                     "gateway node", (
        arg("--out", default=os.path.join("certs", "dev")),
        arg("--nodes", default=None, help="comma-separated gateway node names, a certificate yidi://node/<name> "
                                          "for each (serverAuth and clientAuth); default: node-a,node-b"),
    ), local=cmd_certs),
    Command("keys", "create a seal key for the ledger (gateway/store/seal.py); never overwrites one", (
        arg("--out", required=True, help="the key file to create (keep it outside the data directory)"),
    ), local=cmd_keys),
    Command("verify-ledger", "prove a whole ledger: every record, the keyed chain, the derived rows, the seals", (
        arg("ledger", help="the ledger file, or postgresql://user@host:port/database (password from PGPASSWORD or "
                           "~/.pgpass)"),
        arg("--key", default="", help="the seal key (without it only checksums and row counts are checked)"),
        arg("--snapshots", default="", help="snapshot directory (default: <ledger>.snapshots)"),
        arg("--witness", default="", help="the witness directory, if the gateway keeps one"),
        arg("--live", action="store_true", help="beside a running gateway: its head file, witness and newer "
                                                "snapshots may be ahead of the consistent view checked"),
    ), local=cmd_verify_ledger),
    Command("file", "file a person for cross-province care (备案)", FILE_ARGS, "filing.File", file_request),
    Command("filings", "list a person's filings", PERSON, "filing.ListFilings", filings_request),
    Command("revoke-filing", "revoke a filing", (arg("--filing-id", required=True),),
            "filing.RevokeFiling", revoke_filing_request),
    Command("admit", "admit an inpatient (入院登记)",
            (*VISIT_AT, arg("--voucher", help="electronic-voucher token (医保电子凭证)"),
             arg("--emergency", action="store_true", help="急诊抢救: admitted with an implied emergency filing")),
            "settlement.Admit", admit_request),
    Command("outpatient", "outpatient one-stop settlement (门诊一站式); --disease: a chronic-disease visit (门诊慢特病)",
            (*VISIT_AT, arg("--file", required=True, help="fee lines JSON"), *ACCOUNT_FLAGS,
             arg("--disease", help="chronic disease code (med_type 14), e.g. M01600"),
             arg("--voucher", help="electronic-voucher token (医保电子凭证)")),
            "settlement.OutpatientSettle", outpatient_request),
    Command("fees", "upload fee lines from a JSON file", (MDTRT, arg("--file", required=True)),
            "settlement.UploadFees", fees_request),
    Command("withdraw-fees", "withdraw fee lines (all if none named)", (MDTRT, arg("--sn", action="append")),
            "settlement.WithdrawFees", withdraw_fees_request),
    Command("cancel-admission", "cancel an admission before settlement", (MDTRT,),
            "settlement.CancelAdmission", cancel_admission_request),
    Command("presettle", "pre-settle (changes nothing)", (MDTRT, arg("--date", type=int, default=0)),
            "settlement.PreSettle", presettle_request),
    Command("settle", "discharge and settle (出院结算); --mid: a mid-stay settlement (中途结算)",
            (MDTRT, arg("--date", type=int, default=0), *ACCOUNT_FLAGS, arg("--mid", action="store_true")),
            "settlement.DischargeSettle", settle_request),
    Command("cancel", "cancel a settlement (结算撤销)",
            (arg("--setl-id", required=True), arg("--date", type=int, default=0)),
            "settlement.CancelSettlement", cancel_request),
    Command("reverse", "reverse a request whose outcome is unknown (冲正)",
            (arg("--original-request-id", required=True), arg("--date", type=int, default=0)),
            "settlement.Reverse", reverse_request),
    Command("show", "show a settlement (--explain: why it paid what it paid, SPEC §10.7)",
            (arg("--setl-id", required=True), arg("--explain", action="store_true")), call=call_show),
    Command("account", "a personal account's balance and family accounts (个人账户, insured province)", PERSON,
            "filing.GetAccount", account_request),
    Command("adjust-account", "credit (+) or debit (−) a personal account (insured province)",
            (arg("--psn-no", required=True), arg("--amount-fen", type=int, required=True),
             arg("--reason", required=True)), "filing.AdjustAccount", adjust_account_request),
    Command("institutions", "designated institutions (定点医药机构), filtered and paged",
            (arg("--admdvs"), arg("--kind", choices=("hospital", "clinic", "pharmacy")),
             arg("--inpatient", action="store_true"), arg("--outpatient", action="store_true"),
             arg("--disease", help="open for this chronic disease"), arg("--page-size", type=int, default=0),
             arg("--page-token")), "settlement.ListInstitutions", institutions_request),
    Command("admitted", "an institution's admitted cross-province patients (在院)",
            (arg("--institution", required=True), arg("--page-size", type=int, default=0), arg("--page-token")),
            "settlement.ListAdmitted", admitted_request),
    Command("accum", "show a person's year accumulators",
            (arg("--psn-no", required=True), arg("--year", type=int, default=0)),
            "settlement.GetAccumulators", accum_request),
    Command("status", "a gateway's reference data, ledger and node role (national operator); with --store: every "
            "partition's lease in that PostgreSQL ledger",
            (arg("--store", default="", help="postgresql://… : list the partition leases (owner node, address, "
                                             "token, expiry) from the database instead of asking a gateway"),),
            "admin.GetReferenceDataStatus", status_request, offline=status_of_leases),
    Command("load", "load reference data from a directory (national operator)", (arg("--data-dir", required=True),),
            "admin.LoadReferenceData", load_request),
    Command("snapshot", "write a snapshot now, so a restart replays only what follows (national operator)", (),
            "admin.TakeSnapshot", snapshot_request),
    Command("health", "gRPC health check", call=call_health),
    # Month-end operations (SPEC §8): README "Month-end operations".
    Command("prepaid", "set or top up an insured province's prepaid amount (预付金, national operator)", (
        arg("action", choices=("set", "top-up")),
        arg("--province", required=True, help="the insured province, e.g. 230000"),
        arg("--amount-fen", type=int, required=True, help="set: the amount; top-up: what to add"),
        arg("--yellow-bp", type=int, default=0, help="set: the yellow line (default 7000 = 70%%)"),
        arg("--red-bp", type=int, default=0, help="set: the red line (default 9000 = 90%%)"),
    ), call=call_prepaid),
    Command("positions", "prepaid positions (预付金) and their warning levels", (
        arg("--province", help="one province (a province may read only its own); default: all (national)"),
    ), call=call_positions),
    Command("clearing", "close, reopen, confirm or report a clearing month (清算)", (
        arg("action", choices=("close", "reopen", "confirm", "report")),
        arg("--month", type=int, required=True, help="yyyymm"),
        arg("--province", help="confirm: the province (default: the caller); report: what concerns it"),
        arg("--institutions", action="store_true", help="report: also per institution"),
        arg("--charts", default="", help="report: write the flow heat map and net-position bars (PNG) here"),
    ), call=call_clearing),
    Command("reconcile", "reconcile an institution's settlements with the platform (对账)", (
        arg("--institution", required=True, help="fixmedins_code"),
        arg("--from", dest="date_from", type=int, required=True, help="yyyymmdd"),
        arg("--to", dest="date_to", type=int, required=True, help="yyyymmdd"),
        arg("--insutype", choices=INSUTYPES),
        arg("--file", required=True, help="the province's books: JSON lines of {setl_id, medfee_sumamt, "
                                          "fund_pay_sumamt, psn_cash_pay, cancelled}"),
        arg("--detail", action="store_true", help="compare settlement by settlement even if the totals match"),
    ), call=call_reconcile),
    Command("flagged", "settlements with risk flags at an institution (SPEC §7)", (
        arg("--institution", required=True), arg("--from", dest="date_from", type=int, required=True),
        arg("--to", dest="date_to", type=int, required=True),
        arg("--flag", action="append", choices=("long_stay", "high_cost", "on_site_check", "same_day_repeat")),
        arg("--limit", type=int, default=0),
    ), call=call_flagged),
    Command("problems", "problem reports (报错处理): list, show, report, assign, comment, resolve", (
        arg("action", nargs="?", default="list", choices=("list", "show", "report", "assign", "comment", "resolve")),
        arg("--province", help="list: one province's reports (default: all, national)"),
        arg("--state", choices=("open", "resolved")),
        arg("--after", help="list: the last problem_id of the previous page"),
        arg("--limit", type=int, default=0),
        arg("--id", help="the problem_id (show, assign, comment, resolve)"),
        arg("--setl-id"), arg("--mdtrt-id"),
        arg("--category", choices=PROBLEM_CATEGORIES, default="other"),
        arg("--text", help="report: what is wrong; assign: to whom; comment; resolve: the resolution"),
    ), call=call_problems),
    Command("simulate-month", "drive a realistic month through a gateway over gRPC and check the books", (
        arg("--seed", type=int, default=1),
        arg("--settlements", type=int, default=20_000),
        arg("--data-dir", default=os.path.join("data", "national"), help="the data set the cases are drawn from"),
        arg("--month", type=int, default=202611, help="yyyymm (the generated filings are valid around 2026-11)"),
        arg("--concurrency", type=int, default=32, help="requests in flight"),
        arg("--charts", default="", help="write the month's clearing pictures (PNG) here"),
        arg("--ledger", default="", help="the started gateway's ledger (default: a temporary one)"),
    ), local=cmd_simulate_month),
)

"""`yidi`: generate data, run the gateway, and talk to a running gateway.

    yidi datagen --out data/national --persons 1800000 --seed 2026
    yidi serve --data-dir data/national
    yidi --caller 460000 admit --psn-no ... --institution ... --date 20261122

Client subcommands print readable text, or the response as JSON with --json.
Amounts are shown in yuan from integer fen (no floating point).

The subcommands are the table in ``commands.py``; ``render.py`` turns
answers into text.
"""
from __future__ import annotations

import argparse
import os
import sys

from .commands import COMMANDS, DEFAULT_TARGET, Client
from .render import print_message

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yidi", description="Yidi cross-province settlement gateway")
    p.add_argument("--version", action="version", version=f"yidi {version()}")
    p.add_argument("--target", default=os.environ.get("YIDI_TARGET", ""),
                   help=f"gateway HOST:PORT (default {DEFAULT_TARGET}; simulate-month starts its own unless given)")
    p.add_argument("--caller", default=os.environ.get("YIDI_CALLER", ""),
                   help="calling platform: a province code like 460000, or 'national' (env YIDI_CALLER); "
                        "picks that caller's development client certificate under --certs; required by every "
                        "command that calls the gateway unless --cert/--key are given")
    p.add_argument("--certs", default=os.environ.get("YIDI_CERTS", os.path.join("certs", "dev")),
                   help="development certificates directory (yidi certs; env YIDI_CERTS)")
    p.add_argument("--cert", default=os.environ.get("YIDI_CERT", ""), help="client certificate (overrides --caller)")
    p.add_argument("--key", default=os.environ.get("YIDI_KEY", ""), help="client key")
    p.add_argument("--ca", default=os.environ.get("YIDI_CA", ""), help="CA certificate of the gateway")
    p.add_argument("--insecure", action="store_true", help="plaintext (a gateway run with --insecure, loopback only)")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    p.add_argument("--field", default="", help="print only this response field (dotted path), for scripts")
    p.add_argument("--request-id", default="", help="idempotency key (default: a new random one)")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        s = sub.add_parser(command.name, help=command.help)
        for flags, options in command.args:
            s.add_argument(*flags, **options)
        s.set_defaults(run=command)
    return p


def require_caller(args: argparse.Namespace) -> None:
    """A command that calls the gateway says who is calling: no identity is assumed, least of all the
    national operator's.  --cert/--key name it by a certificate; a plaintext channel presents none."""
    if args.cert and not args.key:
        raise SystemExit("yidi: --cert needs --key (the client certificate's private key)")
    if not (args.caller or args.cert or args.insecure):
        raise SystemExit(f"yidi {args.command}: --caller is required (a province code like 460000, or national; "
                         "env YIDI_CALLER), or --cert and --key")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    command = args.run
    if command.local is not None:
        command.local(args)
        return
    if command.offline is not None and command.offline(args):
        return
    require_caller(args)
    import grpc

    from ..transport.status import reason_of

    client = Client(args)
    try:
        print_message(command.invoke(args, client), args.json, args.field)
    except grpc.RpcError as err:
        reason = reason_of(err)
        if reason is None:   # not the gateway's refusal: the call did not reach it, or gRPC gave up
            raise SystemExit(unreached(err, args.target or DEFAULT_TARGET)) from None
        print(f"refused: {err.code().name} {reason}\n  {err.details()}", file=sys.stderr)
        raise SystemExit(1) from None


def unreached(err, target: str) -> str:
    """One line for a call that got no answer from a gateway (no ErrorInfo): what happened and what to check."""
    import grpc

    code = err.code()
    if code is grpc.StatusCode.UNAVAILABLE:
        return (f"cannot reach the gateway at {target} ({err.details()}): is it running (make run), and are "
                "--target and the certificates (--certs, --cert/--key/--ca) right?")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from the gateway at {target} in time ({err.details()}); it may be overloaded or stalled"
    return f"the call to {target} failed: {code.name}: {err.details()}"


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("yidi")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"

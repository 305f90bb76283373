"""`yidi` commands for month-end operations (SPEC §8): positions, clearing, reconciliation, problem reports.

Each is a ``call(args, client)`` for the command table in ``commands.py``;
the answers are rendered by ``render.py`` and the clearing charts drawn by
``charts.py``.
"""
from __future__ import annotations

import sys
import uuid

RECONCILE_ITEMS_PER_MESSAGE = 20_000   # ~0.6 MB per stream message, well under the 4 MiB limit


def _rid(args) -> str:
    return args.request_id or uuid.uuid4().hex


def call_prepaid(args, c):
    """set | top-up an insured province's prepaid amount (national operator)."""
    from .._pb.yidi.v1 import funds_pb2 as fdpb

    if args.action == "set":
        return c.call(c.funds.SetPrepaid, fdpb.SetPrepaidRequest(
            request_id=_rid(args), province=args.province, amount_fen=args.amount_fen, yellow_bp=args.yellow_bp,
            red_bp=args.red_bp))
    return c.call(c.funds.TopUpPrepaid, fdpb.TopUpPrepaidRequest(request_id=_rid(args), province=args.province,
                                                                 amount_fen=args.amount_fen))


def call_positions(args, c):
    from .._pb.yidi.v1 import funds_pb2 as fdpb

    return c.call(c.funds.GetPositions, fdpb.GetPositionsRequest(province=args.province or ""))


def call_clearing(args, c):
    """close | reopen | confirm | report a clearing month; report --charts DIR also draws its pictures."""
    from .._pb.yidi.v1 import funds_pb2 as fdpb

    if args.action in ("close", "reopen"):
        rpc = c.funds.CloseMonth if args.action == "close" else c.funds.ReopenMonth
        return c.call(rpc, fdpb.ClearingMonthRequest(request_id=_rid(args), month=args.month))
    if args.action == "confirm":
        return c.call(c.funds.ConfirmStatement, fdpb.ConfirmStatementRequest(
            request_id=_rid(args), month=args.month, province=args.province or args.caller))
    report = c.call(c.funds.GetClearingReport, fdpb.GetClearingReportRequest(
        month=args.month, province=args.province or "", with_institutions=args.institutions))
    if args.charts:
        from .charts import draw_month

        for path in draw_month(report, args.charts):
            print(f"wrote {path}", file=sys.stderr)
    return report


def read_books(path: str) -> list[dict]:
    """A province's books: JSON lines of {setl_id, medfee_sumamt, fund_pay_sumamt, psn_cash_pay, cancelled} and,
    where personal accounts paid (SPEC §10.1), acct_pay_sumamt."""
    import orjson

    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def call_reconcile(args, c):
    """对账: totals first; the detail (streamed) on a mismatch or when --detail is given."""
    from .._pb.yidi.v1 import funds_pb2 as fdpb
    from .render import print_message

    span = fdpb.ReconcileRange(fixmedins_code=args.institution, date_from=args.date_from, date_to=args.date_to,
                               insutype=int(args.insutype or 0))
    rows = read_books(args.file)
    live = [r for r in rows if not r.get("cancelled")]
    figures = fdpb.ReconcileFigures(count=len(live), medfee_sumamt=sum(r["medfee_sumamt"] for r in live),
                                    fund_pay_sumamt=sum(r["fund_pay_sumamt"] for r in live),
                                    psn_cash_pay=sum(r["psn_cash_pay"] for r in live),
                                    acct_pay_sumamt=sum(r.get("acct_pay_sumamt", 0) for r in live))
    totals = c.call(c.funds.ReconcileTotals, fdpb.ReconcileTotalsRequest(range=span, figures=figures))
    if totals.match and not args.detail:
        return totals
    print_message(totals, args.json)
    items = sorted((fdpb.ReconcileItem(setl_id=r["setl_id"], fund_pay_sumamt=r["fund_pay_sumamt"],
                                       cancelled=bool(r.get("cancelled")), acct_pay_sumamt=r.get("acct_pay_sumamt"))
                    for r in rows), key=lambda x: x.setl_id)
    return c.call(c.funds.ReconcileDetail, detail_stream(span, items))


def detail_stream(span, items, per_message: int = RECONCILE_ITEMS_PER_MESSAGE):
    """The detail request stream: the range in the first message, the sorted items in chunks."""
    from .._pb.yidi.v1 import funds_pb2 as fdpb

    yield fdpb.ReconcileDetailRequest(range=span, items=items[:per_message])
    for start in range(per_message, len(items), per_message):
        yield fdpb.ReconcileDetailRequest(items=items[start:start + per_message])


def call_flagged(args, c):
    from .._pb.yidi.v1 import common_pb2 as pb, funds_pb2 as fdpb

    flags = [pb.RiskFlag.Value("RISK_FLAG_" + f.upper()) for f in args.flag or ()]
    span = fdpb.ReconcileRange(fixmedins_code=args.institution, date_from=args.date_from, date_to=args.date_to)
    return c.call(c.funds.ListFlagged, fdpb.ListFlaggedRequest(range=span, flags=flags, limit=args.limit))


def call_problems(args, c):
    """list | show | report | assign | comment | resolve problem reports (报错处理)."""
    from .._pb.yidi.v1 import problems_pb2 as ppb

    if args.action == "list":
        state = ppb.ProblemState.Value("PROBLEM_STATE_" + args.state.upper()) if args.state else 0
        return c.call(c.problems.ListProblems, ppb.ListProblemsRequest(
            province=args.province or "", state=state, after_problem_id=args.after or "", limit=args.limit))
    if args.action == "show":
        return c.call(c.problems.GetProblem, ppb.GetProblemRequest(problem_id=args.id))
    if args.action == "report":
        target = {"setl_id": args.setl_id} if args.setl_id else {"mdtrt_id": args.mdtrt_id or ""}
        return c.call(c.problems.ReportProblem, ppb.ReportProblemRequest(
            request_id=_rid(args), category=ppb.ProblemCategory.Value("PROBLEM_CATEGORY_" + args.category.upper()),
            text=args.text or "", **target))
    rpc = {"assign": c.problems.AssignProblem, "comment": c.problems.CommentProblem,
           "resolve": c.problems.ResolveProblem}[args.action]
    return c.call(rpc, ppb.UpdateProblemRequest(request_id=_rid(args), problem_id=args.id, text=args.text or ""))

"""Errors by kind, and the one table of reason codes.

Three kinds, kept apart as asyncpg keeps them apart:

* ``RequestError`` — the caller asked for something the rules refuse or sent
  something malformed (``PERSON_NOT_FILED``, ``INVALID_DATE``,
  ``PERMISSION_DENIED`` ...).  Retrying the same request will not help; the
  message tells the clerk what to do instead.
* ``OperatingError`` — the gateway cannot serve the request now
  (``NOT_READY``, ``OVERLOADED`` ...).  Retrying later with the same
  ``request_id`` is the right thing to do.
* ``InvariantError`` — a bug: a state the rules make impossible.  It is not a
  ``YidiError``: the gateway answers it ``INTERNAL`` with a correlation id,
  logs it and counts it.  Never raised for anything a caller can cause, and
  never an ``assert`` (those vanish under ``python -O``).

Both refusal kinds carry a reason code (the ``Reason`` enum of
``protos/yidi/v1/common.proto``; ``ErrorInfo.reason`` is its name), a gRPC
status code and a message a counter clerk can read aloud (Chinese, with the
English reason code beside it).  ``REASONS`` is the one table of reasons:
each one's status code, kind, and its one wording (a template) in Chinese
and in English; services never invent their own.  Status codes are given by
name (``grpc.StatusCode`` names) so that ``core`` does not depend on grpc.

``YidiError(reason, **params)`` builds the subclass of the reason's kind and
its message from the reason's template, so a raise site names the reason and
what the message needs: ``YidiError("VISIT_NOT_FOUND", mdtrt_id=m)``.  The
parameters are also the refusal's machine-readable metadata; ``field`` names
the request field at fault (a google.rpc.BadRequest) where one is.
"""
from __future__ import annotations

from typing import NamedTuple

CALLER = "caller"        # RequestError
OPERATING = "operating"  # OperatingError


class Reason(NamedTuple):
    """A reason code: its gRPC status, its kind, and what the clerk and a program are told.

    ``message`` is the clerk's message, in Chinese, a ``str.format`` template of
    the refusal's parameters (the raise site passes them by name; they are also
    the ErrorInfo metadata, bounded and masked by gateway/transport/status.py).
    ``english`` says what the reason means and what to do, for programs and
    their authors (a google.rpc.LocalizedMessage beside the Chinese).
    """

    status: str   # grpc.StatusCode name
    kind: str     # CALLER or OPERATING
    message: str
    english: str


def _r(status: str, message: str, english: str, kind: str = CALLER) -> Reason:
    return Reason(status, kind, message, english)


_RETRY = "本次请求未办理，请稍后使用相同的请求ID重试"

# Every reason, in the order and with the names of the Reason enum of protos/yidi/v1/common.proto
# (tests/core/test_reasons.py), each with its one wording.
REASONS: dict[str, Reason] = {
    # SPEC §4 eligibility, in the order they are checked
    "PERSON_NOT_FILED": _r(
        "FAILED_PRECONDITION",
        "参保人（{person}）没有跨省异地就医备案记录，暂不能直接结算。请参保人或家属联系参保地医保经办机构，"
        "或通过国家医保服务平台 App、小程序等线上渠道办理备案，备案即时生效；已入院的，可在出院结算前补办备案后直接结算。",
        "The person has no cross-province filing. The insured province can file online, effective at once (up to "
        "discharge settlement); then retry with the same request_id."),
    "INSURANCE_SUSPENDED": _r(
        "FAILED_PRECONDITION",
        "参保人（人员编号 {psn_no}）在参保地的参保状态为暂停，暂不能享受医保待遇，"
        "请参保人联系参保地医保经办机构恢复参保后再结算。",
        "The person's insurance is suspended; the insured province must restore it first."),
    "CARD_INVALID": _r(
        "FAILED_PRECONDITION",
        "所持医保卡（社保卡）{problem}，请核对是否本人卡、是否已换卡（旧版卡请到参保地换领新版卡）；"
        "也可使用医保电子凭证或身份证件办理。",
        "The card number or version presented is not accepted; check the card or settle without it."),
    "INSTITUTION_UNKNOWN": _r(
        "NOT_FOUND", "定点医药机构编码 {fixmedins_code} 不在跨省直接结算机构库中，请核对机构编码。",
        "The institution is not in the cross-province direct-settlement list; check fixmedins_code."),
    "NOT_CROSS_PROVINCE": _r(
        "FAILED_PRECONDITION",
        "参保地 {insured} 与就医机构 {institution} 所在地 {treatment} 同属 {province}，不属于跨省异地就医，"
        "请按省内就医结算办法办理。",
        "The institution is in the person's own insured province: settle locally, not cross-province."),
    "INSTITUTION_NOT_ENABLED": _r(
        "FAILED_PRECONDITION",
        "就医机构 {fixmedins_code}（{institution}）未开通跨省异地{visit}费用直接结算，本次{visit}费用不能直接结算；"
        "请选择已开通的定点机构，或先行垫付后回参保地报销。",
        "The institution is not open for cross-province settlement of this kind of visit."),
    "NOT_FILED_FOR_DESTINATION": _r(
        "FAILED_PRECONDITION",
        "参保人在 {on} 没有覆盖就医地 {region} 的有效备案。已有备案：{filings}。"
        "请参保地为其办理或变更跨省异地就医备案（线上办理即时生效）后再直接结算。",
        "No filing of the person covers this treatment region on this date; the insured province can file or revise "
        "one (the message lists the current filings)."),
    "INSTITUTION_NOT_DESIGNATED": _r(
        "FAILED_PRECONDITION",
        "就医机构 {fixmedins_code}（{institution}）不是参保人备案指定的就医机构。{designated}。"
        "请到备案指定的机构就医，或由参保地变更备案的指定机构后再直接结算。",
        "The person's filing names other institutions (listed in the message); the insured province can revise the "
        "filing."),
    "DUPLICATE_ADMISSION": _r(
        "ALREADY_EXISTS",
        "参保人（人员编号 {psn_no}）已有未出院的跨省异地住院登记，不能重复办理入院登记；"
        "请先办理原住院的出院结算或撤销原入院登记。",
        "The person already has an open inpatient stay; discharge or cancel it first."),
    # SPEC §3 / §5 policy
    "POLICY_MISSING": _r(
        "FAILED_PRECONDITION",
        "参保地统筹区 {region} 险种 {insutype} 在 {on} 没有生效的{benefit}待遇政策，暂不能{settle}；"
        "请联系国家平台运维核实参保地政策数据。",
        "The insured region has no policy in force on this date; the national operator must load one."),
    # SPEC §6 idempotency and lifecycle
    "IDEMPOTENCY_KEY_REUSED": _r(
        "ALREADY_EXISTS", "请求ID {request_id} 已用于另一笔不同的请求，本次请求未处理。请为新业务使用新的请求ID。",
        "This request_id was used before for a different request; use a new request_id."),
    "VISIT_NOT_FOUND": _r(
        "NOT_FOUND", "就诊记录 {mdtrt_id} 不存在，或不在调用方可办理的范围内，请核对就诊ID。",
        "No such visit (mdtrt_id) for this caller."),
    "VISIT_NOT_OPEN": _r(
        "FAILED_PRECONDITION", "就诊 {mdtrt_id} 已撤销入院登记，不能再办理业务。",
        "The admission was cancelled; admit the patient again."),
    "VISIT_ALREADY_SETTLED": _r(
        "FAILED_PRECONDITION", "就诊 {mdtrt_id} 已结算（结算ID {setl_id}），不能再{action}；如需更正，请先撤销该结算。",
        "The visit is settled; cancel the settlement first to change it."),
    "VISIT_KIND_MISMATCH": _r(
        "FAILED_PRECONDITION", "就诊 {mdtrt_id} 为门诊就诊，门诊费用随一站式结算一次上传。",
        "This call is for the other kind of visit (inpatient or outpatient)."),
    "FEE_LINE_CONFLICT": _r(
        "ALREADY_EXISTS", "费用明细流水号 {feedetl_sn} {problem}。",
        "A fee line with this feedetl_sn was uploaded before with other content; use a new serial number or withdraw "
        "the old line."),
    "FEE_LINE_NOT_FOUND": _r(
        "NOT_FOUND", "费用明细流水号 {feedetl_sn} 未上传过，{consequence}。",
        "No fee line with this feedetl_sn on the visit."),
    "NO_FEE_LINES": _r(
        "FAILED_PRECONDITION", "该就诊没有（本次可结算的）费用明细，请先上传费用明细再结算。",
        "There are no fee lines to settle; upload them first."),
    "SETTLEMENT_NOT_FOUND": _r(
        "NOT_FOUND", "结算记录 {setl_id} 不存在，或不在调用方可办理的范围内，请核对结算ID。",
        "No such settlement (setl_id) for this caller."),
    "SETTLEMENT_ALREADY_CANCELLED": _r(
        "FAILED_PRECONDITION", "结算 {setl_id} 已于 {cancel_date} 撤销。", "The settlement is cancelled already."),
    "FILING_NOT_FOUND": _r(
        "NOT_FOUND", "备案编号 {filing_id} 不存在，或不属于调用方省份的参保人，请核对。",
        "No such filing for this caller."),
    "FILING_CONFLICT": _r(
        "ALREADY_EXISTS", "备案 {filing_id} {problem}；变更备案请使用备案变更，改变人员或备案类型请撤销后重新备案。",
        "A filing with this filing_id exists with other content; revise it instead."),
    "PERSON_NOT_FOUND": _r(
        "NOT_FOUND", "查无此人，或其不是调用方可查询的参保人，请核对人员编号或身份证号。",
        "No such person for this caller."),
    "PERSON_CONFLICT": _r(
        "FAILED_PRECONDITION", "{problem}，请核对人员信息。", "psn_no and certno name different persons; send one of them."),
    "DATE_BEFORE_ADMISSION": _r(
        "FAILED_PRECONDITION", "{what} {date} 早于入院日期 {adm_date}，请核对。",
        "The date is before the admission date; correct it."),
    # malformed input (changes nothing).  These share one frame: what was sent (named, with its value where it
    # helps) and the rule it breaks, e.g. "明细 3 的单价 -5 分" + "不合理：应在 0 到 10000000000 分之间".
    "INVALID_ARGUMENT": _r(
        "INVALID_ARGUMENT", "{what}{problem}。",
        "A field is malformed or out of bounds (BadRequest names it); correct the request."),
    "INVALID_CERTNO": _r(
        "INVALID_ARGUMENT", "{what}{problem}。",
        "The resident ID number must be 18 characters with a valid GB 11643 check character."),
    "INVALID_PRICE": _r(
        "INVALID_ARGUMENT", "{what}{problem}。", "A unit price is out of range (0 to 10,000,000,000 fen per unit)."),
    "INVALID_QUANTITY": _r(
        "INVALID_ARGUMENT", "{what}{problem}。",
        "A quantity is out of range (thousandths of a unit, above 0; below 0 only on a refund line)."),
    "INVALID_DATE": _r(
        "INVALID_ARGUMENT", "{what}{problem}。",
        "A date is not a calendar date yyyymmdd in 19000101-21001231 (months: yyyymm)."),
    "INVALID_ENUM": _r(
        "INVALID_ARGUMENT", "{what}{problem}。", "An enum value is outside its list; see the .proto file."),
    "INVALID_CODE": _r(
        "INVALID_ARGUMENT", "{what}{problem}。", "A code (region, catalogue item or institution) is malformed."),
    "INVALID_REQUEST_ID": _r(
        "INVALID_ARGUMENT", "{what}{problem}。",
        "request_id must be 1-40 printable ASCII characters without spaces."),
    "TOO_MANY_LINES": _r(
        "INVALID_ARGUMENT", "{what}的费用明细不能超过 {limit} 条，本次 {count} 条。",
        "Too many fee lines for one visit or settlement (at most 1000)."),
    "MESSAGE_TOO_LARGE": _r(
        "RESOURCE_EXHAUSTED", "请求报文 {size} 字节，超过上限 {limit} 字节。请分批上传费用明细。",
        "The request is larger than the gateway accepts; send it in smaller parts."),
    # the gateway cannot serve now: retry later with the same request_id
    "OVERLOADED": _r(
        "RESOURCE_EXHAUSTED", "{why}，本次请求未处理。请 {retry_after_ms} 毫秒后使用相同的请求ID重试。",
        "The gateway or this caller is at its limit; nothing was done. Retry after RetryInfo's delay with the same "
        "request_id.", OPERATING),
    "NOT_READY": _r(
        "UNAVAILABLE", "{why}，" + _RETRY + "。", "The gateway is loading its data; retry shortly with the same request_id.",
        OPERATING),
    # callers and reference data
    "UNAUTHENTICATED": _r(
        "UNAUTHENTICATED", "无法识别调用方：{why}。",
        "The caller is not identified: present a client certificate of the platform CA with one yidi:// URI name."),
    "PERMISSION_DENIED": _r(
        "PERMISSION_DENIED", "调用方 {caller} 无权{action}。",
        "This caller may not do this (who may do what: docs/domain.md, section 9)."),
    "REFERENCE_DATA_INVALID": _r(
        "INVALID_ARGUMENT", "基础数据未加载：{where}{problem}。网关继续使用原有数据。",
        "The reference data was rejected (the message names file, line and reason); the gateway keeps serving the "
        "data it had."),
    # a bug (InvariantError or any unexpected exception), answered with a correlation id
    "INTERNAL": _r(
        "INTERNAL", "结算网关内部错误（差错编号 {correlation_id}），已记录。请使用相同的请求ID重试。",
        "A bug in the gateway, logged and reported under the correlation id; retry with the same request_id.",
        OPERATING),
    # SPEC §8 funds and problem reports
    "CLEARING_MONTH_CLOSED": _r(
        "FAILED_PRECONDITION", "清算月份 {month} 已关闭，不能重复关闭。", "The clearing month is closed already."),
    "CLEARING_MONTH_OPEN": _r(
        "FAILED_PRECONDITION", "清算月份 {month} 尚未关闭：关闭后才能{action}。",
        "The clearing month is still open; the national operator must close it first."),
    "CLEARING_MONTH_CONFIRMED": _r(
        "FAILED_PRECONDITION", "清算月份 {month} 的清算单已由 {provinces} 确认{consequence}。",
        "A province has confirmed this month (it can no longer be reopened), or this province confirmed it already."),
    "PROBLEM_NOT_FOUND": _r(
        "NOT_FOUND", "问题报告 {problem_id} 不存在，或不涉及调用方省份，请核对问题编号。",
        "No such problem report for this caller."),
    "PROBLEM_RESOLVED": _r(
        "FAILED_PRECONDITION", "问题报告 {problem_id} 已处理完毕，只能追加意见。",
        "The problem report is resolved; it only takes comments."),
    "INVALID_AMOUNT": _r(
        "INVALID_ARGUMENT", "{what}{problem}。", "An amount of money is out of range."),
    # batch and stream settlement
    "BATCH_TOO_LARGE": _r(
        "INVALID_ARGUMENT", "一次批量结算最多 {limit} 笔，本次 {count} 笔，未处理。请分批提交。",
        "Too many items in one SettleBatch (at most 1000); nothing was performed."),
    # the ledger cannot be written (full disk, failing fsync): retry later with the same request_id
    "STORAGE_UNAVAILABLE": _r(
        "UNAVAILABLE", "结算网关账本暂时无法写入（磁盘已满或存储故障），本次请求结果未知。"
                       "请稍后使用相同的请求ID重试：已办理的将原样返回，未办理的将办理一次。",
        "The gateway cannot write its ledger now; the outcome is unknown. Retry with the same request_id.", OPERATING),
    # SPEC §6 冲正: the request was reversed by its caller before it arrived; nothing was done
    "REQUEST_REVERSED": _r(
        "FAILED_PRECONDITION",
        "请求ID {request_id} 已由调用方冲正，冲正后的请求不再办理，本次请求未处理。如需办理，请使用新的请求ID。",
        "This request_id was reversed before the request arrived; nothing was done."),
    # the caller's deadline passed before the request was performed; nothing was done
    "DEADLINE_EXCEEDED": _r(
        "DEADLINE_EXCEEDED", "调用方设置的超时时间已过，本次请求未办理。请使用相同的请求ID并设置更长的超时重试。",
        "The call's deadline passed before it was performed; nothing was done. Retry with a longer deadline and the "
        "same request_id.", OPERATING),
    # SPEC §10 the national interface
    "ACCOUNT_INSUFFICIENT": _r(
        "FAILED_PRECONDITION", "个人账户余额 {balance} 分，不足以扣减 {amount} 分，未调整。",
        "The personal account's balance is too low for this debit."),
    "DISEASE_NOT_RECOGNISED": _r(
        "FAILED_PRECONDITION",
        "参保人未经参保地认定门诊慢特病「{dise_codg}」，不能按门诊慢特病结算。请先由参保地经办机构办理病种认定"
        "（已认定：{recognised}），或按普通门诊结算。",
        "The insured province has not recognised this chronic disease for the person; it must do so first."),
    "INSTITUTION_NOT_ENABLED_FOR_DISEASE": _r(
        "FAILED_PRECONDITION",
        "{institution} 未开通门诊慢特病「{dise_codg}」的跨省直接结算，请到已开通该病种的定点医疗机构就医，或按普通门诊结算。",
        "The institution is not open for cross-province settlement of this chronic disease."),
    "FEE_DATE_SETTLED": _r(
        "FAILED_PRECONDITION",
        "费用明细 {feedetl_sn} 的费用日期 {fee_date} 不晚于本次住院中途结算的日期 {mid_date}，该期间已结算，不能再上传；"
        "请核对费用日期。",
        "A fee line is dated on or before a mid-stay settlement of this stay; date it later."),
    "NOT_LATEST_SETTLEMENT": _r(
        "FAILED_PRECONDITION",
        "结算 {setl_id} 是中途结算，本次住院其后已有结算（{latest}）。请先撤销最近一次结算，再按顺序撤销。",
        "Only the stay's latest settlement can be cancelled; cancel the later ones first."),
    "REFUND_EXCEEDS_ORIGINAL": _r(
        "FAILED_PRECONDITION",
        "原费用明细 {feedetl_sn} 的退费数量合计超过原数量（净数量 {net_qty_milli}，千分之一单位），请核对退费明细。",
        "The refund would take the original line's quantity below zero."),
    "LINE_ALREADY_SETTLED": _r(
        "FAILED_PRECONDITION", "费用明细流水号 {feedetl_sn} 已结算，不能{action}；如需更正，请先撤销该结算。",
        "The line was settled; cancel that settlement before refunding it."),
    "CREDENTIAL_INVALID": _r(
        "INVALID_ARGUMENT", "医保电子凭证{problem}，请患者在手机上刷新电子凭证后重新出示。",
        "The electronic voucher has expired or is not signed by the insured province; ask the patient to show a fresh "
        "one."),
    "EXPLANATION_UNAVAILABLE": _r(
        "FAILED_PRECONDITION",
        "结算 {setl_id} 由早期版本办理，未记录计算明细所需的累计信息，无法出具结算说明；结算金额以结算单为准。",
        "This settlement was recorded before the ledger kept what an explanation needs."),
    # the ledger failed a proof (a record, a derived row or a seal does not match): nothing is served from it
    "LEDGER_DAMAGED": _r(
        "UNAVAILABLE", "结算网关账本校验未通过，为免错付已暂停办理全部业务，并已自动登记差错。" + _RETRY +
                       "；如持续出现请联系国家平台运维。",
        "The gateway's ledger failed a proof; it serves nothing from it until an operator restores it. Nothing was "
        "done: retry later with the same request_id.", OPERATING),
    # gateway nodes (docs/operations.md, Gateway nodes): a call forwarded from the node that took it to the owner
    # of its partition carries its original caller, which only a node's certificate may name
    "FORWARDING_REFUSED": _r(
        "UNAUTHENTICATED", "无法识别调用方：{why}。",
        "Only a gateway node's certificate may name the original caller of a forwarded call (yidi-forwarded-for), "
        "and a node's call must name one; nothing was done."),
    "OWNER_UNAVAILABLE": _r(
        "UNAVAILABLE", "负责该业务的结算网关节点暂时无法连接，本次请求结果未知。请 {retry_after_ms} 毫秒后使用相同的请求ID重试："
                       "已办理的将原样返回，未办理的将办理一次。",
        "The gateway node that owns this call's partition cannot be reached; the outcome is unknown. Retry after "
        "RetryInfo's delay with the same request_id.", OPERATING),
    # a gateway node on PostgreSQL that does not hold the partition's lease (a standby): nothing was done
    "NOT_PARTITION_OWNER": _r(
        "UNAVAILABLE", "本节点不是账本分区 {part} 的主节点（当前主节点：{owner}），本次请求未办理。"
                       "请改连主节点，或稍后使用相同的请求ID重试。",
        "This gateway node does not own the ledger partition (a standby, or its lease ran out); nothing was done. "
        "Call the owner named in the metadata, or retry shortly with the same request_id.", OPERATING),
    # a ledger split by insured province (core/partition.py): one node performs a stream, for one partition
    "WRONG_PARTITION": _r(
        "FAILED_PRECONDITION", "该项属于账本分区 {part}，而办理本流式结算的节点负责分区 {mine}，本项未办理。"
                               "请将该项单独提交或改用批量结算提交（任一节点均会转交）。",
        "This item concerns another ledger partition (insured province) than the node performing its stream; "
        "nothing was done for it. Send it on its own or in a SettleBatch (any node forwards it)."),
    # a ledger split by insured province: the key is claimed by another partition's owner, not yet recorded
    "REQUEST_IN_PROGRESS": _r(
        "UNAVAILABLE", "请求ID {request_id} 的同一请求正在另一账本分区办理中，本次请求未办理。"
                       "请 {retry_after_ms} 毫秒后使用相同的请求ID重试，将原样返回其结果。",
        "The same request under this request_id is being performed in another ledger partition right now; nothing "
        "was done here. Retry after RetryInfo's delay with the same request_id for its answer.", OPERATING),
}

DOMAIN = "yidi.gov.cn"

# Parameters that only word a message (Chinese phrases: what was sent, the rule, a list of filings ...); every
# other parameter (identifiers, codes, numbers, ``field``) is also the refusal's machine-readable metadata.
WORDING = frozenset({"what", "problem", "why", "action", "consequence", "person", "designated", "filings",
                     "benefit", "settle", "where", "institution", "insured", "treatment", "province", "provinces",
                     "region", "visit", "on", "recognised", "latest"})


class YidiError(Exception):
    """A refusal: the request was understood and said no.  Changes nothing.

    ``YidiError(reason, **params)`` returns a ``RequestError`` or an
    ``OperatingError`` according to the reason's kind, its message the
    reason's template filled with ``params``.
    """

    __slots__ = ("reason", "message", "metadata")

    def __new__(cls, reason: str, /, **params: object):
        if cls is YidiError:
            info = REASONS.get(reason)
            if info is None:
                raise InvariantError(f"unknown reason code {reason!r}")
            cls = OperatingError if info.kind == OPERATING else RequestError
        return super().__new__(cls)

    def __init__(self, reason: str, /, **params: object) -> None:
        info = REASONS.get(reason)
        if info is None:
            raise InvariantError(f"unknown reason code {reason!r}")
        try:
            message = info.message.format_map(params)
        except KeyError as missing:
            raise InvariantError(f"{reason} needs the parameter {missing}") from None
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        # machine-readable context for ErrorInfo.metadata (strings only)
        self.metadata = {k: str(v) for k, v in params.items() if k not in WORDING}

    def __reduce__(self):
        return (_rebuild, (self.reason, self.message, self.metadata))

    @property
    def status_name(self) -> str:
        return REASONS[self.reason].status

    @property
    def kind(self) -> str:
        return REASONS[self.reason].kind

    @property
    def english(self) -> str:
        return REASONS[self.reason].english

    def clerk_message(self) -> str:
        """The message shown at the counter: Chinese text with the reason code beside it."""
        return f"{self.message} [{self.reason}]"


class RequestError(YidiError):
    """The caller's mistake, or a rule that says no (typed reason, 4xx-like status)."""

    __slots__ = ()


class OperatingError(YidiError):
    """The gateway cannot serve now (NOT_READY, OVERLOADED ...): retry later with the same key."""

    __slots__ = ()


class InvariantError(Exception):
    """A bug: a state the rules make impossible.  Answered INTERNAL, logged with a correlation id."""


def _rebuild(reason: str, message: str, metadata: dict) -> YidiError:
    """A refusal carried across a process boundary (pickle): as it was made, wording included."""
    err = YidiError.__new__(YidiError, reason)
    Exception.__init__(err, f"{reason}: {message}")
    err.reason, err.message, err.metadata = reason, message, metadata
    return err


def invariant(condition: object, what: str) -> None:
    """Raise InvariantError unless ``condition`` holds (an assert that survives ``python -O``)."""
    if not condition:
        raise InvariantError(what)


class LoadError(Exception):
    """Reference data rejected: names the file, the line number and the reason."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason

"""Refusals as gRPC statuses: the code from core.errors.REASONS and the clerk's message (Chinese, reason
beside it), with details a program can act on: a google.rpc.ErrorInfo (the reason), a LocalizedMessage
in English (core.errors.REASONS), a BadRequest naming the field of an INVALID_ARGUMENT refusal when the
refusal names one (its ``field`` metadata), and a RetryInfo when the refusal gives retry advice.
"""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from core.errors import DOMAIN, REASONS, YidiError

from ..security.privacy import mask_text


# Whatever a refusal carries is bounded, so no input is ever echoed back (or logged) unbounded and
# the trailers stay far below gRPC's metadata size limit.
MAX_MESSAGE_CHARS = 1000
MAX_METADATA_VALUE_CHARS = 64
ENGLISH_LOCALE = "en-US"


def _pack(message) -> any_pb2.Any:
    """A detail serialized deterministically (ErrorInfo's metadata map in key order), so one refusal is always
    the same bytes."""
    detail = any_pb2.Any()
    detail.Pack(message, deterministic=True)
    return detail


def status_proto(err: YidiError) -> status_pb2.Status:
    """A refusal as a google.rpc.Status: code, the clerk's message, ErrorInfo with the reason."""
    code = getattr(grpc.StatusCode, REASONS[err.reason].status)
    metadata = {k[:MAX_METADATA_VALUE_CHARS]: mask_text(v[:MAX_METADATA_VALUE_CHARS]) for k, v in err.metadata.items()}
    message = mask_text(err.clerk_message())
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS - 20] + f"… [{err.reason}]"
    details = [_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=metadata)),
               _pack(error_details_pb2.LocalizedMessage(locale=ENGLISH_LOCALE, message=err.english))]
    if code is grpc.StatusCode.INVALID_ARGUMENT and metadata.get("field"):
        violations = [error_details_pb2.BadRequest.FieldViolation(field=name, description=message)
                      for name in metadata["field"].split(",")]
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    retry_ms = metadata.get("retry_after_ms", "")
    if retry_ms.isdigit():
        delay = duration_pb2.Duration(seconds=int(retry_ms) // 1000, nanos=int(retry_ms) % 1000 * 1_000_000)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def to_status(err: YidiError) -> grpc.Status:
    """A refusal as the trailers of a failed call."""
    return rpc_status.to_status(status_proto(err))


def detail_of(error: grpc.RpcError, kind: type):
    """The detail of type kind (ErrorInfo, BadRequest, LocalizedMessage ...) a failed call carries (client side)."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # trailers that do not match the status: not one of ours
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            found = kind()
            detail.Unpack(found)
            return found
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo carried by a failed call (client side), if any."""
    return detail_of(error, error_details_pb2.ErrorInfo)


def reason_of(error: grpc.RpcError) -> str | None:
    """The ErrorInfo reason carried by a failed call (client side), if any."""
    info = error_info(error)
    return None if info is None else info.reason

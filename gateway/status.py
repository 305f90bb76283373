"""Refusals as gRPC statuses: the code from core.errors.REASONS, the reason in a
google.rpc.ErrorInfo detail, and the clerk's message (Chinese, reason beside it).
"""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from core.errors import DOMAIN, REASONS, YidiError


def status_proto(err: YidiError) -> status_pb2.Status:
    """A refusal as a google.rpc.Status: code, the clerk's message, ErrorInfo with the reason."""
    code = getattr(grpc.StatusCode, REASONS[err.reason].status)
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code.value[0], message=err.clerk_message(), details=[detail])


def to_status(err: YidiError) -> grpc.Status:
    """A refusal as the trailers of a failed call."""
    return rpc_status.to_status(status_proto(err))


def reason_of(error: grpc.RpcError) -> str | None:
    """The ErrorInfo reason carried by a failed call (client side), if any."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None

"""Reason codes are part of the contract: the proto enum and the core's table agree."""
from __future__ import annotations

import grpc

from core.errors import REASONS, OperatingError, RequestError, YidiError
from gateway._pb.yidi.v1 import common_pb2 as pb


def test_the_proto_enum_names_every_reason_of_the_core_in_order():
    names = [v.name for v in pb.Reason.DESCRIPTOR.values if v.number != 0]
    assert names == list(REASONS)
    assert [v.number for v in pb.Reason.DESCRIPTOR.values] == list(range(len(REASONS) + 1))


def test_every_reason_has_a_grpc_status_and_a_kind():
    for reason, info in REASONS.items():
        assert isinstance(getattr(grpc.StatusCode, info.status), grpc.StatusCode), reason
        err = YidiError(reason, "x")
        assert isinstance(err, OperatingError if info.kind == "operating" else RequestError)
        assert err.clerk_message().endswith(f"[{reason}]")

"""Reason codes are part of the contract: the proto enum and the core's table agree."""
from __future__ import annotations

import glob
import os
import re
import string

import grpc
import pytest

from core.errors import REASONS, WORDING, InvariantError, OperatingError, RequestError, YidiError
from gateway_harness import ROOT
from gateway._pb.yidi.v1 import common_pb2 as pb


def test_the_proto_enum_names_every_reason_of_the_core_in_order():
    names = [v.name for v in pb.Reason.DESCRIPTOR.values if v.number != 0]
    assert names == list(REASONS)
    assert [v.number for v in pb.Reason.DESCRIPTOR.values] == list(range(len(REASONS) + 1))


def test_every_reason_has_a_grpc_status_a_kind_and_one_wording():
    for reason, info in REASONS.items():
        assert isinstance(getattr(grpc.StatusCode, info.status), grpc.StatusCode), reason
        params = {name: f"<{name}>" for _, name, _, _ in string.Formatter().parse(info.message) if name}
        err = YidiError(reason, **params)
        assert isinstance(err, OperatingError if info.kind == "operating" else RequestError)
        assert err.clerk_message() == info.message.format(**params) + f" [{reason}]"
        assert err.metadata == {k: v for k, v in params.items() if k not in WORDING}   # the rest is metadata


def test_a_refusal_without_what_its_wording_needs_is_a_bug():
    with pytest.raises(InvariantError, match="needs the parameter 'mdtrt_id'"):
        YidiError("VISIT_NOT_FOUND")
    with pytest.raises(TypeError):
        YidiError("VISIT_NOT_FOUND", "a message of its own")   # no raise site words a reason itself


def test_no_raise_site_words_a_reason_itself():
    """Every message comes from its reason's template in core.errors: no site passes a text of its own."""
    sites = []
    for pattern in ("core/*.py", "core/*.pxi", "core/*.pyx", "gateway/**/*.py"):
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            sites += [f"{path}: {m.group(0)}" for m in re.finditer(r'YidiError\(\s*[A-Za-z_"]+\s*,\s*f?"', text)]
    assert sites == []

"""Test helpers over a real gateway: the subprocess and client of gateway.testing, and filing a test person.

The server listens on 127.0.0.1 port 0 and prints ``SERVING host:port``;
tests talk to it over real gRPC on loopback.
"""
from __future__ import annotations

import os

from datagen.spec_fixture import make_certno
from gateway._pb.yidi.v1 import common_pb2 as pb, filing_pb2 as fpb
from gateway.testing import Client, Gateway, start_gateway

__all__ = ["ROOT", "Client", "Gateway", "start_gateway", "file_person"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def file_person(client: Client, psn_no: str, certno17: str, *, filing_id: str = "", kind: str = "long_term_residence",
                dest: str = "460000", codes=(), valid_to: int = 0, **person_fields) -> fpb.FilingResponse:
    """File a test person insured in 沈阳市和平区 (210102), as 辽宁 (the caller) would.

    The filing starts 20260101; its id defaults to "F-" + psn_no, the request id is "file-" + psn_no.
    ``person_fields`` override the Person message's fields (person_type, assistance, status ...).
    """
    person = dict(psn_no=psn_no, certno=make_certno(certno17), name="测试人", insuplc_admdvs="210102",
                  insutype=pb.INSUTYPE_EMPLOYEE, person_type=pb.PERSON_TYPE_IN_SERVICE,
                  status=pb.PERSON_STATUS_ACTIVE, card_no="K" + psn_no[-8:], card_version="3.0")
    person.update(person_fields)
    filing = pb.Filing(filing_id=filing_id or "F-" + psn_no, psn_no=psn_no,
                       kind=getattr(pb, "FILING_KIND_" + kind.upper()), dest_admdvs=dest, fixmedins_codes=list(codes),
                       valid_from=20260101, valid_to=valid_to, status=pb.FILING_STATUS_ACTIVE)
    return client(client.filing.File, fpb.FileRequest(request_id="file-" + psn_no, person=pb.Person(**person),
                                                       filing=filing))

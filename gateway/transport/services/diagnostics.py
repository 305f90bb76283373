"""DiagnosticsService: an empty call on the same stack as every other RPC."""
from __future__ import annotations

from ..._pb.yidi.v1 import diagnostics_pb2 as dpb

_EMPTY = dpb.PingResponse().SerializeToString()


class DiagnosticsService:
    def __init__(self, gw) -> None:
        self.gw = gw

    def methods(self):
        return {"Ping": self.ping}

    async def ping(self, _req: dpb.PingRequest, _caller: str) -> bytes:
        return _EMPTY

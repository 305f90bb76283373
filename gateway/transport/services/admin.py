"""AdminService: the national operator's reference data and snapshots (translation only)."""
from __future__ import annotations

import os

from core import commands as cmd
from core.errors import LoadError, YidiError

from .. import convert
from ...app import Gateway
from ..._pb.yidi.v1 import admin_pb2 as apb
from .base import request_digest


class AdminService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {"LoadReferenceData": self.load, "GetReferenceDataStatus": self.status,
                "TakeSnapshot": self.take_snapshot}

    async def load(self, req: apb.LoadReferenceDataRequest, caller: str):
        if not req.data_dir or not os.path.isdir(req.data_dir):
            raise YidiError("INVALID_ARGUMENT", what=f"基础数据目录「{req.data_dir[:200]}」", problem="不存在",
                            field="data_dir")
        command = cmd.LoadReferenceData(request_id=req.request_id, data_dir=req.data_dir)
        try:
            return await self.gw.execute(caller, command, request_digest(req))
        except LoadError as err:
            raise YidiError("REFERENCE_DATA_INVALID", where=f"{err.file} 第 {err.line} 行：", problem=err.reason,
                            file=err.file, line=err.line) from None
        except OSError as err:  # a file that is a directory, unreadable, vanished mid-load ...
            name = os.path.basename(str(err.filename or ""))[:100]
            raise YidiError("REFERENCE_DATA_INVALID", where=f"无法读取 {name}：", problem=err.strerror, file=name) from None

    async def status(self, _req: apb.GetReferenceDataStatusRequest, _caller: str):
        status = convert.reference_status_pb(self.gw.status())
        status.node_role, owned = self.gw.role()
        status.owned_partitions.extend(owned)
        if self.gw.ownership is not None:
            status.node_id = self.gw.ownership.keeper.owner
        return status

    async def take_snapshot(self, _req: apb.TakeSnapshotRequest, _caller: str):
        seq, path, size = await self.gw.take_snapshot()
        return apb.SnapshotStatus(ledger_seq=seq, path=path, bytes=size)

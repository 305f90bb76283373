"""AdminService: the national operator's reference data."""
from __future__ import annotations

import os

from core.errors import LoadError, YidiError

from ..app import Gateway
from ..auth import current_caller, require_national
from .._pb.yidi.v1 import admin_pb2 as apb


class AdminService:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def methods(self):
        return {"LoadReferenceData": self.load, "GetReferenceDataStatus": self.status}

    async def load(self, req: apb.LoadReferenceDataRequest):
        require_national(current_caller(), "加载基础数据")
        if not req.data_dir or not os.path.isdir(req.data_dir):
            raise YidiError("INVALID_ARGUMENT", f"基础数据目录「{req.data_dir}」不存在。")
        try:
            return await self.gw.reload_reference(req.data_dir, req)
        except LoadError as err:
            raise YidiError(
                "REFERENCE_DATA_INVALID",
                f"基础数据未加载：{err.file} 第 {err.line} 行：{err.reason}。网关继续使用原有数据。",
                file=err.file, line=err.line,
            ) from None

    async def status(self, req: apb.GetReferenceDataStatusRequest):
        require_national(current_caller(), "查询基础数据状态")
        self.gw.require_ready()
        return self.gw.respond_status()

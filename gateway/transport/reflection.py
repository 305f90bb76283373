"""gRPC server reflection, v1 and v1alpha, answered from the contract's own descriptors.

grpcio-reflection serves only ``grpc.reflection.v1alpha`` (generic tools ask
for v1 first), rebuilds file descriptors from the runtime pool (which has no
comments, so a reflected type carries none) and cannot find a method by its
full name (``describe yidi.v1.SettlementService.OutpatientSettle`` fails:
grpc/grpc#34743).  This servicer answers both versions (their messages are
the same on the wire, so v1alpha's generated classes serve v1 too) from the
descriptor set that ``setup.py`` writes with source info
(``gateway/_pb/contract.binpb``), and it indexes every service, method,
message and enum by full name.
"""
from __future__ import annotations

import os
from typing import AsyncIterator

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as pb

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
CONTRACT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_pb", "contract.binpb")
_V1ALPHA_FILE = "grpc_reflection/v1alpha/reflection.proto"


class Catalog:
    """File descriptors by name, and the file that defines each symbol."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.files = {f.name: f for f in files}
        self.symbols: dict[str, str] = {}
        for f in files:
            prefix = f.package + "." if f.package else ""
            for service in f.service:
                self.symbols[prefix + service.name] = f.name
                for method in service.method:
                    self.symbols[f"{prefix}{service.name}.{method.name}"] = f.name
            self._index_types(f.name, prefix, f.message_type, f.enum_type)

    def _index_types(self, file: str, prefix: str, messages, enums) -> None:
        for enum in enums:
            self.symbols[prefix + enum.name] = file
        for message in messages:
            self.symbols[prefix + message.name] = file
            self._index_types(file, f"{prefix}{message.name}.", message.nested_type, message.enum_type)

    def with_dependencies(self, name: str) -> list[bytes]:
        """The file and everything it imports, serialized, the file first."""
        seen: dict[str, bytes] = {}
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen or current not in self.files:
                continue
            seen[current] = self.files[current].SerializeToString()
            todo.extend(self.files[current].dependency)
        return list(seen.values())


def reflection_files(contract_path: str = CONTRACT) -> list[descriptor_pb2.FileDescriptorProto]:
    """The contract's files (with comments) and the reflection service's own, as v1alpha and v1."""
    with open(contract_path, "rb") as f:
        files = list(descriptor_pb2.FileDescriptorSet.FromString(f.read()).file)
    alpha = descriptor_pb2.FileDescriptorProto()
    descriptor_pool.Default().FindFileByName(_V1ALPHA_FILE).CopyToProto(alpha)
    v1 = descriptor_pb2.FileDescriptorProto()
    v1.CopyFrom(alpha)
    v1.name, v1.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    for field in (f for message in v1.message_type for f in message.field):
        field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
    for method in v1.service[0].method:
        method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
        method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    return [*files, alpha, v1]


class ReflectionServicer:
    """ServerReflectionInfo for both versions; ``services`` are the names listed."""

    def __init__(self, services: list[str], files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.services = sorted({*services, *SERVICE_NAMES})
        self.catalog = Catalog(files)

    def answer(self, request: pb.ServerReflectionRequest) -> pb.ServerReflectionResponse:
        kind = request.WhichOneof("message_request")
        if kind == "list_services":
            return pb.ServerReflectionResponse(original_request=request, list_services_response=pb.ListServiceResponse(
                service=[pb.ServiceResponse(name=name) for name in self.services]))
        if kind == "file_by_filename":
            name = request.file_by_filename
        elif kind == "file_containing_symbol":
            name = self.catalog.symbols.get(request.file_containing_symbol.lstrip("."), "")
        elif kind == "all_extension_numbers_of_type" and \
                request.all_extension_numbers_of_type.lstrip(".") in self.catalog.symbols:
            # The contract declares no extensions.
            return pb.ServerReflectionResponse(original_request=request,
                                               all_extension_numbers_response=pb.ExtensionNumberResponse(
                                                   base_type_name=request.all_extension_numbers_of_type))
        else:
            name = ""
        if name not in self.catalog.files:
            return pb.ServerReflectionResponse(original_request=request, error_response=pb.ErrorResponse(
                error_code=grpc.StatusCode.NOT_FOUND.value[0], error_message="not found"))
        return pb.ServerReflectionResponse(original_request=request, file_descriptor_response=pb.FileDescriptorResponse(
            file_descriptor_proto=self.catalog.with_dependencies(name)))

    async def info(self, requests: AsyncIterator[pb.ServerReflectionRequest], context) -> AsyncIterator:
        async for request in requests:
            yield self.answer(request)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        method = grpc.stream_stream_rpc_method_handler(self.info, request_deserializer=pb.ServerReflectionRequest.FromString,
                                                       response_serializer=pb.ServerReflectionResponse.SerializeToString)
        return [grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": method}) for name in SERVICE_NAMES]


def enable(server: grpc.aio.Server, services: list[str]) -> None:
    """Serve reflection v1 and v1alpha on server, listing services (and the health and reflection services)."""
    server.add_generic_rpc_handlers(tuple(ReflectionServicer(services, reflection_files()).handlers()))

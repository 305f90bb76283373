"""Bounds on every request, from the protobuf descriptors, checked before any rule runs.

Every string field of every request message (nested ones included) is at
most ``MAX_STRING_BYTES`` UTF-8 bytes and every repeated field at most
``MAX_LIST_ITEMS`` items; the message as a whole is bounded by
``Config.max_message_bytes`` before it is decoded.  The tighter rules of each
field (identifiers 1–40 characters, names 600 bytes, amounts, dates) are the
core's (``core/validate.pxi``); this layer only guarantees that nothing
unbounded reaches it, and it is derived from the descriptors so an RPC added
later is covered without a line here.  A refusal names the field and the
limit, never the value.

A ``oneof`` (e.g. ``psn_no`` | ``certno``) keeps only the member set last
when the wire carries several, silently.  ``OneofGuard`` parses such a
request a second time with a twin message type whose oneof members are plain
fields, and refuses a request that carries two of them (``INVALID_ARGUMENT``)
instead of settling one person and ignoring the other.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from core.errors import YidiError

MAX_STRING_BYTES = 1024     # any string field of a request (paths, names, identifiers ...)
MAX_LIST_ITEMS = 1000       # any repeated field of a request (fee lines, sns, institution codes ...)
# A message this short cannot hold a string or a list past the limits: the walk is skipped.
_SHORT = min(MAX_STRING_BYTES, 2 * MAX_LIST_ITEMS)


def check(message: Message, raw_len: int) -> None:
    """INVALID_ARGUMENT if any string or list of the message is past its limit."""
    if raw_len <= _SHORT:
        return
    _walk(message, "")


def _walk(message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.is_repeated:
            if len(value) > MAX_LIST_ITEMS:
                raise YidiError("INVALID_ARGUMENT", what=f"字段 {name}",
                                problem=f"有 {len(value)} 项，超过上限 {MAX_LIST_ITEMS} 项",
                                field=name)
            items = value.values() if field.message_type is not None and field.message_type.GetOptions().map_entry \
                else value
        else:
            items = (value,)
        for item in items:
            _check_value(field, item, name)


def _check_value(field: FieldDescriptor, value, name: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        if len(value) > MAX_STRING_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES:
            raise YidiError("INVALID_ARGUMENT", what=f"字段 {name}", problem=f"超过上限 {MAX_STRING_BYTES} 字节", field=name)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        if len(value) > MAX_STRING_BYTES:
            raise YidiError("INVALID_ARGUMENT", what=f"字段 {name}", problem=f"超过上限 {MAX_STRING_BYTES} 字节", field=name)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        _walk(value, name + ".")


class OneofGuard:
    """Refuses a request whose wire bytes carry two members of one oneof (protobuf would keep the last)."""

    def __init__(self, descriptor) -> None:
        self.groups = [[f.name for f in o.fields] for o in descriptor.oneofs if not _synthetic(o)]
        self.twin = _twin(descriptor) if self.groups else None

    def check(self, raw: bytes) -> None:
        if self.twin is None:
            return
        try:
            flat = self.twin.FromString(raw)
        except DecodeError:
            return  # the real decode has already accepted it; nothing more to learn
        for names in self.groups:
            present = [n for n in names if _present(flat, n)]
            if len(present) > 1:
                raise YidiError("INVALID_ARGUMENT", what=" 与 ".join(present),
                                problem=f"只能提供其中一个（本次请求同时提供了 {len(present)} 个）", field=",".join(present))


def _synthetic(oneof) -> bool:
    """A proto3 ``optional`` field's own oneof, not a real choice."""
    return len(oneof.fields) == 1 and getattr(oneof.fields[0], "has_presence", False) and oneof.name.startswith("_")


def _present(flat: Message, name: str) -> bool:
    """Set on the wire to something other than its default (an empty psn_no names no one)."""
    return getattr(flat, name) not in ("", 0, b"", False)


_POOL = descriptor_pool.DescriptorPool()
_TWINS: dict[str, type[Message]] = {}


def _twin(descriptor) -> type[Message]:
    """A flat copy of the message type: oneofs dissolved, nested messages as bytes, enums as int32.

    Same field numbers, so it parses the same wire bytes; it is only asked which members are present.
    """
    if descriptor.full_name in _TWINS:
        return _TWINS[descriptor.full_name]
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    proto.name = descriptor.name + "Twin"
    for f in proto.field:
        f.ClearField("oneof_index")
        f.ClearField("proto3_optional")
        if f.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            f.type = FieldDescriptor.TYPE_BYTES
            f.ClearField("type_name")
        elif f.type == FieldDescriptor.TYPE_ENUM:
            f.type = FieldDescriptor.TYPE_INT32
            f.ClearField("type_name")
    del proto.oneof_decl[:]
    del proto.nested_type[:]
    del proto.enum_type[:]
    file = descriptor_pb2.FileDescriptorProto(name=f"yidi_twin/{descriptor.full_name}.proto", package="yidi_twin",
                                              syntax="proto3")
    file.message_type.add().CopyFrom(proto)
    _POOL.Add(file)
    cls = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"yidi_twin.{proto.name}"))
    _TWINS[descriptor.full_name] = cls
    return cls


_GUARDS: dict[str, OneofGuard] = {}


def oneof_guard(descriptor) -> OneofGuard:
    """The guard of a message type, made once."""
    guard = _GUARDS.get(descriptor.full_name)
    if guard is None:
        guard = _GUARDS[descriptor.full_name] = OneofGuard(descriptor)
    return guard

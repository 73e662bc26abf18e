"""The private protobuf descriptor pool that every generated runtime-API module registers in.

Why it exists: the official Dapr SDK's generated modules register `dapr.proto.runtime.v1.*` in
protobuf's default pool, and that pool refuses a second file defining the same full names
("duplicate symbol", a TypeError at import, whichever side is imported first). Our own
`dapr.proto.*` modules therefore register here instead (codegen rewrites the one line of each
`*_pb2.py` that picks the pool), and both load in one process. Nothing changes on the wire.

The cost: a message field of a well-known type (`google.protobuf.Any`, `Struct`) holds this pool's
class, not `any_pb2.Any` / `struct_pb2.Struct`. Build such values with the `Any` / `Struct` classes
below, a dict, or in place (`request.data.value = b"..."`, `event.extensions.update({...})`).
Servicers still return `google.protobuf.empty_pb2.Empty()`: the generated stubs serialize with it.
"""

from __future__ import annotations

from typing import cast

from google.protobuf import any_pb2, descriptor_pool, empty_pb2, message_factory, struct_pb2
from google.protobuf.message import Message

POOL = descriptor_pool.DescriptorPool()

# The well-known files our .proto sources import must be in the pool before they are added.
for _well_known in (any_pb2, empty_pb2, struct_pb2):
    POOL.AddSerializedFile(_well_known.DESCRIPTOR.serialized_pb)


def message_class(full_name: str) -> type[Message]:
    """The class of a message registered in POOL (the same class its fields' values have)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


# Typed as the default-pool classes: the same API, and what the generated .pyi stubs name for these fields.
Any = cast("type[any_pb2.Any]", message_class("google.protobuf.Any"))
Struct = cast("type[struct_pb2.Struct]", message_class("google.protobuf.Struct"))

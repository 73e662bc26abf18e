"""The runtime API's generated modules: in step with the `.proto` sources, shaped as the reference says,
wire-compatible where Layotto and Dapr are, and loadable next to the official Dapr SDK.

Why: the `*_pb2*.py` files are generated at install time and never committed, so nothing else notices
a stale or wrong generation; and field numbers are the whole contract with existing clients. Expected
shapes below are transcribed from shared/reference/runtime-api.md (§1.2-1.4, §2.1-2.4, §2.10).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, empty_pb2, json_format
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from host.grpc import codegen, pool
from host.grpc.proto.dapr.proto.common.v1 import common_pb2 as dapr_common
from host.grpc.proto.dapr.proto.runtime.v1 import appcallback_pb2 as dapr_callback
from host.grpc.proto.dapr.proto.runtime.v1 import dapr_pb2, dapr_pb2_grpc
from host.grpc.proto.spec.proto.runtime.v1 import appcallback_pb2 as layotto_callback
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2, runtime_pb2_grpc

IN_CI = os.environ.get("CI") == "true"
REPO = Path(__file__).resolve().parents[2]
CALL_TIMEOUT = 5.0


def require_package(name: str, purpose: str) -> None:
    """Skip (or, in CI, fail) when a test-only package is missing, like tests/services.py does for services."""
    if importlib.util.find_spec(name) is None:
        message = f"`{name}` is not installed ({purpose})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def installed_file(relative: Path) -> Path:
    """Where the imported package holds the generated file `relative` (host/grpc/proto/.../x_pb2.py[i])."""
    module_path = relative.with_name(relative.name.split(".")[0])
    module = importlib.import_module(".".join(module_path.parts))
    assert module.__file__ is not None
    return Path(module.__file__).with_name(relative.name)


# ---- generated code vs. sources


def embedded_descriptor(pb2_source: str) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto a generated `*_pb2.py` registers (the literal passed to AddSerializedFile)."""
    for node in ast.walk(ast.parse(pb2_source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "AddSerializedFile":
            literal = node.args[0]
            assert isinstance(literal, ast.Constant) and isinstance(literal.value, bytes)
            return descriptor_pb2.FileDescriptorProto.FromString(literal.value)
    raise AssertionError("no AddSerializedFile call in generated code")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sources compiled now, by the same codegen setup.py runs."""
    require_package("grpc_tools", "grpcio-tools regenerates the modules to compare with the installed ones")
    out = tmp_path_factory.mktemp("codegen")
    codegen.generate(out)
    return out


def test_installed_modules_describe_the_current_sources(fresh: Path) -> None:
    # Independent of the protoc version: what the imported modules registered is what the sources define.
    pb2_files = [path for path in codegen.expected_outputs() if path.name.endswith("_pb2.py")]
    assert len(pb2_files) == len(codegen.proto_sources()) == 5
    for relative in pb2_files:
        module = importlib.import_module(".".join(relative.with_suffix("").parts))
        registered = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        expected = embedded_descriptor((fresh / relative).read_text(encoding="utf-8"))
        assert registered == expected, f"{relative} is stale: run `python -m host.grpc.codegen` or reinstall"
        assert module.DESCRIPTOR.pool is pool.POOL


def test_installed_files_are_byte_identical_to_a_fresh_generation(fresh: Path) -> None:
    stale = [str(relative) for relative in codegen.expected_outputs()
             if installed_file(relative).read_bytes() != (fresh / relative).read_bytes()]
    assert not stale, (f"generated files differ from what this grpcio-tools makes of the sources: {stale}; "
                       "run `python -m host.grpc.codegen` (or reinstall)")


def test_codegen_moves_each_module_to_the_private_pool_and_removes_leftovers(tmp_path: Path) -> None:
    require_package("grpc_tools", "grpcio-tools runs the generation under test")
    leftover = tmp_path / codegen.PROTO_DIR / "spec" / "removed_pb2.py"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("# from a .proto that no longer exists\n")
    written = codegen.generate(tmp_path)
    assert not leftover.exists()
    assert sorted(path.relative_to(tmp_path) for path in written) == sorted(codegen.expected_outputs())
    for path in written:
        text = path.read_text(encoding="utf-8")
        if path.name.endswith("_pb2.py"):
            assert "_descriptor_pool.Default()" not in text and "_HOST_POOL.AddSerializedFile(" in text
        if path.name.endswith("_pb2_grpc.py"):
            assert text.startswith("# mypy: ignore-errors\n")


def test_codegen_refuses_generated_code_of_an_unexpected_shape(tmp_path: Path) -> None:
    odd = tmp_path / "odd_pb2.py"
    odd.write_text("DESCRIPTOR = something_else()\n")
    with pytest.raises(codegen.CodegenError):
        codegen._use_private_pool(odd)


# ---- services (reference §1.2, §1.4, §2.1, §2.7, §2.8 and the task's method list)

UNARY, SERVER_STREAM, BIDI = "unary", "server-stream", "bidi"


def methods(service: ServiceDescriptor) -> dict[str, tuple[str, str, str]]:
    def kind(client: bool, server: bool) -> str:
        return BIDI if client and server else SERVER_STREAM if server else "client-stream" if client else UNARY
    return {m.name: (kind(m.client_streaming, m.server_streaming), m.input_type.full_name, m.output_type.full_name)
            for m in service.methods}


def expect(package: str, table: dict[str, tuple[str, str, str]]) -> dict[str, tuple[str, str, str]]:
    """Qualifies unqualified message names in `table` with `package`."""
    def full(name: str) -> str:
        return name if "." in name else f"{package}.{name}"
    return {rpc: (kind, full(request), full(response)) for rpc, (kind, request, response) in table.items()}


EMPTY = "google.protobuf.Empty"
LAYOTTO_RUNTIME = expect("spec.proto.runtime.v1", {
    "SayHello": (UNARY, "SayHelloRequest", "SayHelloResponse"),
    "InvokeService": (UNARY, "InvokeServiceRequest", "InvokeResponse"),
    "GetConfiguration": (UNARY, "GetConfigurationRequest", "GetConfigurationResponse"),
    "SaveConfiguration": (UNARY, "SaveConfigurationRequest", EMPTY),
    "DeleteConfiguration": (UNARY, "DeleteConfigurationRequest", EMPTY),
    "SubscribeConfiguration": (BIDI, "SubscribeConfigurationRequest", "SubscribeConfigurationResponse"),
    "TryLock": (UNARY, "TryLockRequest", "TryLockResponse"),
    "Unlock": (UNARY, "UnlockRequest", "UnlockResponse"),
    "LockKeepAlive": (UNARY, "LockKeepAliveRequest", "LockKeepAliveResponse"),
    "GetNextId": (UNARY, "GetNextIdRequest", "GetNextIdResponse"),
    "GetState": (UNARY, "GetStateRequest", "GetStateResponse"),
    "GetBulkState": (UNARY, "GetBulkStateRequest", "GetBulkStateResponse"),
    "SaveState": (UNARY, "SaveStateRequest", EMPTY),
    "DeleteState": (UNARY, "DeleteStateRequest", EMPTY),
    "DeleteBulkState": (UNARY, "DeleteBulkStateRequest", EMPTY),
    "ExecuteStateTransaction": (UNARY, "ExecuteStateTransactionRequest", EMPTY),
    "PublishEvent": (UNARY, "PublishEventRequest", EMPTY),
    "SubscribeTopicEvents": (BIDI, "SubscribeTopicEventsRequest", "SubscribeTopicEventsResponse"),
    "InvokeBinding": (UNARY, "InvokeBindingRequest", "InvokeBindingResponse"),
    "GetSecret": (UNARY, "GetSecretRequest", "GetSecretResponse"),
    "GetBulkSecret": (UNARY, "GetBulkSecretRequest", "GetBulkSecretResponse"),
})
LAYOTTO_APP_CALLBACK = expect("spec.proto.runtime.v1", {
    "ListTopicSubscriptions": (UNARY, EMPTY, "ListTopicSubscriptionsResponse"),
    "OnTopicEvent": (UNARY, "TopicEventRequest", "TopicEventResponse"),
})
DAPR_INVOKE_RESPONSE = "dapr.proto.common.v1.InvokeResponse"
DAPR = expect("dapr.proto.runtime.v1", {
    "InvokeService": (UNARY, "InvokeServiceRequest", DAPR_INVOKE_RESPONSE),
    "GetState": (UNARY, "GetStateRequest", "GetStateResponse"),
    "GetBulkState": (UNARY, "GetBulkStateRequest", "GetBulkStateResponse"),
    "SaveState": (UNARY, "SaveStateRequest", EMPTY),
    "QueryStateAlpha1": (UNARY, "QueryStateRequest", "QueryStateResponse"),
    "DeleteState": (UNARY, "DeleteStateRequest", EMPTY),
    "DeleteBulkState": (UNARY, "DeleteBulkStateRequest", EMPTY),
    "ExecuteStateTransaction": (UNARY, "ExecuteStateTransactionRequest", EMPTY),
    "PublishEvent": (UNARY, "PublishEventRequest", EMPTY),
    "BulkPublishEvent": (UNARY, "BulkPublishRequest", "BulkPublishResponse"),
    "BulkPublishEventAlpha1": (UNARY, "BulkPublishRequest", "BulkPublishResponse"),
    "SubscribeTopicEventsAlpha1": (BIDI, "SubscribeTopicEventsRequestAlpha1", "SubscribeTopicEventsResponseAlpha1"),
    "InvokeBinding": (UNARY, "InvokeBindingRequest", "InvokeBindingResponse"),
    "GetSecret": (UNARY, "GetSecretRequest", "GetSecretResponse"),
    "GetBulkSecret": (UNARY, "GetBulkSecretRequest", "GetBulkSecretResponse"),
    "GetConfiguration": (UNARY, "GetConfigurationRequest", "GetConfigurationResponse"),
    "GetConfigurationAlpha1": (UNARY, "GetConfigurationRequest", "GetConfigurationResponse"),
    "SubscribeConfiguration": (SERVER_STREAM, "SubscribeConfigurationRequest", "SubscribeConfigurationResponse"),
    "SubscribeConfigurationAlpha1": (SERVER_STREAM, "SubscribeConfigurationRequest",
                                     "SubscribeConfigurationResponse"),
    "UnsubscribeConfiguration": (UNARY, "UnsubscribeConfigurationRequest", "UnsubscribeConfigurationResponse"),
    "UnsubscribeConfigurationAlpha1": (UNARY, "UnsubscribeConfigurationRequest",
                                       "UnsubscribeConfigurationResponse"),
    "TryLockAlpha1": (UNARY, "TryLockRequest", "TryLockResponse"),
    "UnlockAlpha1": (UNARY, "UnlockRequest", "UnlockResponse"),
    "GetMetadata": (UNARY, "GetMetadataRequest", "GetMetadataResponse"),
    "SetMetadata": (UNARY, "SetMetadataRequest", EMPTY),
    "Shutdown": (UNARY, "ShutdownRequest", EMPTY),
})
DAPR_APP_CALLBACK = expect("dapr.proto.runtime.v1", {
    "OnInvoke": (UNARY, "dapr.proto.common.v1.InvokeRequest", DAPR_INVOKE_RESPONSE),
    "ListTopicSubscriptions": (UNARY, EMPTY, "ListTopicSubscriptionsResponse"),
    "OnTopicEvent": (UNARY, "TopicEventRequest", "TopicEventResponse"),
    "ListInputBindings": (UNARY, EMPTY, "ListInputBindingsResponse"),
    "OnBindingEvent": (UNARY, "BindingEventRequest", "BindingEventResponse"),
})


@pytest.mark.parametrize(("service", "expected"), [
    (runtime_pb2.DESCRIPTOR.services_by_name["Runtime"], LAYOTTO_RUNTIME),
    (layotto_callback.DESCRIPTOR.services_by_name["AppCallback"], LAYOTTO_APP_CALLBACK),
    (dapr_pb2.DESCRIPTOR.services_by_name["Dapr"], DAPR),
    (dapr_callback.DESCRIPTOR.services_by_name["AppCallback"], DAPR_APP_CALLBACK),
    (dapr_callback.DESCRIPTOR.services_by_name["AppCallbackHealthCheck"],
     {"HealthCheck": (UNARY, EMPTY, "dapr.proto.runtime.v1.HealthCheckResponse")}),
], ids=["layotto-Runtime", "layotto-AppCallback", "Dapr", "dapr-AppCallback", "dapr-AppCallbackHealthCheck"])
def test_services_have_the_documented_rpcs(service: ServiceDescriptor, expected: dict[str, Any]) -> None:
    actual = methods(service)
    assert {rpc: actual.get(rpc) for rpc in expected} == expected


# ---- field numbers spot-checked against the reference

TYPE_NAMES = {FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BYTES: "bytes",
              FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_INT64: "int64",
              FieldDescriptor.TYPE_UINT64: "uint64", FieldDescriptor.TYPE_BOOL: "bool"}
MAP = "map<string, string>"


# Descriptors typed Any: with types-protobuf they are a union of the Python and upb classes.
def type_of(field: Any) -> str:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        return f"map<{type_of(message.fields_by_name['key'])}, {type_of(message.fields_by_name['value'])}>"
    base = message.full_name if message is not None else \
        field.enum_type.full_name if field.enum_type is not None else TYPE_NAMES[field.type]
    return ("repeated " if field.is_repeated else "") + base


def fields(message: type[Message]) -> dict[int, tuple[str, str]]:
    return {field.number: (field.name, type_of(field)) for field in message.DESCRIPTOR.fields}


def enum_values(message: type[Message], enum: str) -> dict[str, int]:
    return {value.name: value.number for value in message.DESCRIPTOR.enum_types_by_name[enum].values}


CE_FIELDS = {1: ("id", "string"), 2: ("source", "string"), 3: ("type", "string"), 4: ("spec_version", "string"),
             5: ("data_content_type", "string"), 6: ("topic", "string"), 7: ("data", "bytes"),
             8: ("pubsub_name", "string")}
REFERENCE_FIELDS: list[tuple[type[Message], dict[int, tuple[str, str]]]] = [
    # "InvokeServiceRequest { 1 id string; 3 message ... }. There is no field 2."
    (runtime_pb2.InvokeServiceRequest, {1: ("id", "string"),
                                        3: ("message", "spec.proto.runtime.v1.CommonInvokeRequest")}),
    (dapr_pb2.InvokeServiceRequest, {1: ("id", "string"), 3: ("message", "dapr.proto.common.v1.InvokeRequest")}),
    # TopicEventRequest: Layotto's field 9 is unused and 10 is a map; Dapr's 9 is path, 10 a Struct.
    (layotto_callback.TopicEventRequest, {**CE_FIELDS, 10: ("metadata", MAP)}),
    (dapr_callback.TopicEventRequest, {**CE_FIELDS, 9: ("path", "string"),
                                       10: ("extensions", "google.protobuf.Struct")}),
    (layotto_callback.TopicSubscription, {1: ("pubsub_name", "string"), 2: ("topic", "string"), 3: ("metadata", MAP)}),
    (dapr_callback.TopicSubscription, {1: ("pubsub_name", "string"), 2: ("topic", "string"), 3: ("metadata", MAP),
                                       5: ("routes", "dapr.proto.runtime.v1.TopicRoutes"),
                                       6: ("dead_letter_topic", "string"),
                                       7: ("bulk_subscribe", "dapr.proto.runtime.v1.BulkSubscribeConfig")}),
    # Configuration: the one wire-incompatible API.
    (runtime_pb2.GetConfigurationRequest, {1: ("store_name", "string"), 2: ("app_id", "string"),
                                           3: ("group", "string"), 4: ("label", "string"),
                                           5: ("keys", "repeated string"), 6: ("metadata", MAP),
                                           7: ("subscribe_update", "bool")}),
    (dapr_pb2.GetConfigurationRequest, {1: ("store_name", "string"), 2: ("keys", "repeated string"),
                                        3: ("metadata", MAP)}),
    (runtime_pb2.ConfigurationItem, {1: ("key", "string"), 2: ("content", "string"), 3: ("group", "string"),
                                     4: ("label", "string"), 5: ("tags", MAP), 6: ("metadata", MAP)}),
    (dapr_common.ConfigurationItem, {1: ("value", "string"), 2: ("version", "string"), 3: ("metadata", MAP)}),
    (dapr_pb2.SubscribeConfigurationResponse, {
        1: ("id", "string"), 2: ("items", "map<string, dapr.proto.common.v1.ConfigurationItem>")}),
    # Lock: same numbers, field 4 named differently.
    (runtime_pb2.TryLockRequest, {1: ("store_name", "string"), 2: ("resource_id", "string"),
                                  3: ("lock_owner", "string"), 4: ("expire", "int32")}),
    (dapr_pb2.TryLockRequest, {1: ("store_name", "string"), 2: ("resource_id", "string"),
                               3: ("lock_owner", "string"), 4: ("expiry_in_seconds", "int32")}),
    (runtime_pb2.GetNextIdRequest, {1: ("store_name", "string"), 2: ("key", "string"),
                                    3: ("options", "spec.proto.runtime.v1.SequencerOptions"), 4: ("metadata", MAP)}),
    (runtime_pb2.GetNextIdResponse, {1: ("next_id", "int64")}),
    # State: the camelCase names are the real proto names.
    (dapr_pb2.ExecuteStateTransactionRequest, {
        1: ("storeName", "string"), 2: ("operations", "repeated dapr.proto.runtime.v1.TransactionalStateOperation"),
        3: ("metadata", MAP)}),
    (dapr_pb2.TransactionalStateOperation, {1: ("operationType", "string"),
                                            2: ("request", "dapr.proto.common.v1.StateItem")}),
    (dapr_common.StateItem, {1: ("key", "string"), 2: ("value", "bytes"), 3: ("etag", "dapr.proto.common.v1.Etag"),
                             4: ("metadata", MAP), 5: ("options", "dapr.proto.common.v1.StateOptions")}),
    (dapr_pb2.GetStateRequest, {1: ("store_name", "string"), 2: ("key", "string"),
                                3: ("consistency", "dapr.proto.common.v1.StateOptions.StateConsistency"),
                                4: ("metadata", MAP)}),
    (dapr_pb2.BulkPublishRequestEntry, {1: ("entry_id", "string"), 2: ("event", "bytes"),
                                        3: ("content_type", "string"), 4: ("metadata", MAP)}),
    (dapr_common.StreamPayload, {1: ("data", "bytes"), 2: ("seq", "uint64")}),
    (dapr_pb2.UnsubscribeConfigurationResponse, {1: ("ok", "bool"), 2: ("message", "string")}),
]


@pytest.mark.parametrize(("message", "expected"), REFERENCE_FIELDS,
                         ids=[f"{m.DESCRIPTOR.full_name}" for m, _ in REFERENCE_FIELDS])
def test_fields_match_the_reference(message: type[Message], expected: dict[int, tuple[str, str]]) -> None:
    assert fields(message) == expected


def test_enums_match_the_reference() -> None:
    assert enum_values(runtime_pb2.UnlockResponse, "Status") == {
        "SUCCESS": 0, "LOCK_UNEXIST": 1, "LOCK_BELONG_TO_OTHERS": 2, "INTERNAL_ERROR": 3}
    assert enum_values(dapr_pb2.UnlockResponse, "Status") == {
        "SUCCESS": 0, "LOCK_DOES_NOT_EXIST": 1, "LOCK_BELONGS_TO_OTHERS": 2, "INTERNAL_ERROR": 3}
    for response in (layotto_callback.TopicEventResponse, dapr_callback.TopicEventResponse):
        assert enum_values(response, "TopicEventResponseStatus") == {"SUCCESS": 0, "RETRY": 1, "DROP": 2}
    assert enum_values(runtime_pb2.SequencerOptions, "AutoIncrement") == {"WEAK": 0, "STRONG": 1}
    verbs = ["NONE", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
    for extension in (runtime_pb2.HTTPExtension, dapr_common.HTTPExtension):
        assert enum_values(extension, "Verb") == {verb: number for number, verb in enumerate(verbs)}
    # proto3 `optional`: the SDK's dead_letter_topic has presence (same wire as a plain string).
    for initial in (runtime_pb2.SubscribeTopicEventsRequestInitial, dapr_pb2.SubscribeTopicEventsRequestInitialAlpha1):
        assert initial.DESCRIPTOR.fields_by_name["dead_letter_topic"].has_presence


# ---- Layotto vs Dapr on the wire (§2.10)


def wire_shape(message: Any) -> dict[int, Any]:
    """Field number -> (wire type, repeated, nested shape): what decoding depends on, without any names."""
    shape: dict[int, Any] = {}
    for field in message.fields:
        nested: Any = None
        if field.message_type is not None:
            full_name = field.message_type.full_name
            nested = full_name if full_name.startswith("google.protobuf.") else wire_shape(field.message_type)
        elif field.enum_type is not None:
            nested = sorted(value.number for value in field.enum_type.values)
        shape[field.number] = (field.type, field.is_repeated, nested)
    return shape


SAME_WIRE: list[tuple[type[Message], type[Message]]] = [
    (dapr_pb2.GetStateRequest, runtime_pb2.GetStateRequest), (dapr_pb2.GetStateResponse, runtime_pb2.GetStateResponse),
    (dapr_pb2.GetBulkStateRequest, runtime_pb2.GetBulkStateRequest),
    (dapr_pb2.GetBulkStateResponse, runtime_pb2.GetBulkStateResponse),
    (dapr_pb2.SaveStateRequest, runtime_pb2.SaveStateRequest),
    (dapr_pb2.DeleteStateRequest, runtime_pb2.DeleteStateRequest),
    (dapr_pb2.DeleteBulkStateRequest, runtime_pb2.DeleteBulkStateRequest),
    (dapr_pb2.ExecuteStateTransactionRequest, runtime_pb2.ExecuteStateTransactionRequest),
    (dapr_pb2.PublishEventRequest, runtime_pb2.PublishEventRequest),
    (dapr_pb2.InvokeServiceRequest, runtime_pb2.InvokeServiceRequest),
    (dapr_common.InvokeResponse, runtime_pb2.InvokeResponse),
    (dapr_pb2.InvokeBindingRequest, runtime_pb2.InvokeBindingRequest),
    (dapr_pb2.InvokeBindingResponse, runtime_pb2.InvokeBindingResponse),
    (dapr_pb2.GetSecretRequest, runtime_pb2.GetSecretRequest),
    (dapr_pb2.GetSecretResponse, runtime_pb2.GetSecretResponse),
    (dapr_pb2.GetBulkSecretRequest, runtime_pb2.GetBulkSecretRequest),
    (dapr_pb2.GetBulkSecretResponse, runtime_pb2.GetBulkSecretResponse),
    (dapr_pb2.TryLockRequest, runtime_pb2.TryLockRequest), (dapr_pb2.TryLockResponse, runtime_pb2.TryLockResponse),
    (dapr_pb2.UnlockRequest, runtime_pb2.UnlockRequest), (dapr_pb2.UnlockResponse, runtime_pb2.UnlockResponse),
    (dapr_pb2.SubscribeTopicEventsRequestAlpha1, runtime_pb2.SubscribeTopicEventsRequest),
    (dapr_callback.TopicEventResponse, layotto_callback.TopicEventResponse),
]
DIFFERENT_WIRE: list[tuple[type[Message], type[Message]]] = [
    (dapr_callback.TopicEventRequest, layotto_callback.TopicEventRequest),
    (dapr_pb2.SubscribeTopicEventsResponseAlpha1, runtime_pb2.SubscribeTopicEventsResponse),  # carries the above
    (dapr_pb2.GetConfigurationRequest, runtime_pb2.GetConfigurationRequest),
    (dapr_pb2.SubscribeConfigurationResponse, runtime_pb2.SubscribeConfigurationResponse),
    (dapr_callback.TopicSubscription, layotto_callback.TopicSubscription),
]


@pytest.mark.parametrize(("dapr", "layotto"), SAME_WIRE, ids=[d.DESCRIPTOR.name for d, _ in SAME_WIRE])
def test_documented_identical_messages_have_identical_wire_shapes(dapr: type[Message],
                                                                  layotto: type[Message]) -> None:
    assert wire_shape(dapr.DESCRIPTOR) == wire_shape(layotto.DESCRIPTOR)


@pytest.mark.parametrize(("dapr", "layotto"), DIFFERENT_WIRE, ids=[d.DESCRIPTOR.name for d, _ in DIFFERENT_WIRE])
def test_documented_incompatible_messages_differ_on_the_wire(dapr: type[Message], layotto: type[Message]) -> None:
    assert wire_shape(dapr.DESCRIPTOR) != wire_shape(layotto.DESCRIPTOR)


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def state_items(module: Any) -> list[Any]:
    return [module.StateItem(key="k1", value=b"\x00v1", etag=module.Etag(value="7"), metadata={"ttlInSeconds": "5"},
                             options=module.StateOptions(concurrency=1, consistency=2)),
            module.StateItem(key="k2", value=b"v2")]


DAPR_SAMPLES: list[Message] = [
    dapr_pb2.GetStateRequest(store_name="s", key="k", consistency=dapr_common.StateOptions.CONSISTENCY_STRONG,
                             metadata={"partitionKey": "p"}),
    dapr_pb2.GetStateResponse(data=b"\xffdata", etag="3", metadata={"m": "v"}),
    dapr_pb2.GetBulkStateRequest(store_name="s", keys=["a", "b"], parallelism=4, metadata={"m": "v"}),
    dapr_pb2.GetBulkStateResponse(items=[dapr_pb2.BulkStateItem(key="a", data=b"1", etag="1", metadata={"x": "y"}),
                                         dapr_pb2.BulkStateItem(key="b", error="boom")]),
    dapr_pb2.SaveStateRequest(store_name="s", states=state_items(dapr_common)),
    dapr_pb2.DeleteStateRequest(store_name="s", key="k", etag=dapr_common.Etag(value="9"),
                                options=dapr_common.StateOptions(concurrency=dapr_common.StateOptions.CONCURRENCY_LAST_WRITE),
                                metadata={"m": "v"}),
    dapr_pb2.DeleteBulkStateRequest(store_name="s", states=state_items(dapr_common)),
    dapr_pb2.ExecuteStateTransactionRequest(storeName="s", metadata={"m": "v"}, operations=[
        dapr_pb2.TransactionalStateOperation(operationType="upsert", request=state_items(dapr_common)[0]),
        dapr_pb2.TransactionalStateOperation(operationType="delete", request=dapr_common.StateItem(key="k2"))]),
    dapr_pb2.PublishEventRequest(pubsub_name="p", topic="t", data=b"{}", data_content_type="application/json",
                                 metadata={"rawPayload": "true"}),
    dapr_pb2.GetBulkSecretResponse(data={"a": dapr_pb2.SecretResponse(secrets={"k": "v"})}),
    dapr_pb2.TryLockRequest(store_name="l", resource_id="r", lock_owner="o", expiry_in_seconds=30),
]


@pytest.mark.parametrize("sample", DAPR_SAMPLES, ids=[s.DESCRIPTOR.name for s in DAPR_SAMPLES])
def test_dapr_bytes_parse_identically_as_layotto_messages(sample: Message) -> None:
    layotto_class = getattr(runtime_pb2, sample.DESCRIPTOR.name)
    wire = sample.SerializeToString(deterministic=True)
    parsed = layotto_class.FromString(wire)
    assert parsed.SerializeToString(deterministic=True) == wire
    expected = as_dict(sample)
    if "expiry_in_seconds" in expected:  # the one documented rename (§2.10)
        expected["expire"] = expected.pop("expiry_in_seconds")
    assert as_dict(parsed) == expected


def test_invoke_bytes_cross_both_ways() -> None:
    # Any cannot go through MessageToDict with an empty type_url (what the SDK sends), so compare fields.
    dapr_request = dapr_pb2.InvokeServiceRequest(id="app2", message=dapr_common.InvokeRequest(
        method="orders/1", data=pool.Any(value=b"payload"), content_type="text/plain",
        http_extension=dapr_common.HTTPExtension(verb=dapr_common.HTTPExtension.POST, querystring="a=1&b=2")))
    layotto_request = runtime_pb2.InvokeServiceRequest.FromString(dapr_request.SerializeToString())
    message = layotto_request.message
    assert (layotto_request.id, message.method, message.data.type_url, message.data.value, message.content_type) \
        == ("app2", "orders/1", "", b"payload", "text/plain")
    assert (message.http_extension.verb, message.http_extension.querystring) == (runtime_pb2.HTTPExtension.POST,
                                                                                 "a=1&b=2")
    back = dapr_pb2.InvokeServiceRequest.FromString(layotto_request.SerializeToString())
    assert back == dapr_request
    response = runtime_pb2.InvokeResponse(data=pool.Any(value=b"ok"), content_type="application/json")
    assert dapr_common.InvokeResponse.FromString(response.SerializeToString()).data.value == b"ok"


def test_well_known_fields_hold_the_private_pool_classes() -> None:
    event = dapr_callback.TopicEventRequest(id="1")
    event.extensions.update({"traceid": "00-ab", "ttl": 5})
    assert type(event.extensions) is pool.Struct
    assert type(dapr_common.InvokeRequest().data) is pool.Any
    assert event.extensions["ttl"] == 5


# ---- next to the official Dapr SDK (needs dapr==1.19.0 installed for tests)

COEXIST = textwrap.dedent("""
    import sys
    def ours():
        from host.grpc.proto.dapr.proto.runtime.v1 import dapr_pb2, dapr_pb2_grpc
        from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2_grpc
        return dapr_pb2
    def sdk():
        import dapr.clients
        from dapr.proto import api_v1  # the SDK client's own message namespace
        return api_v1
    first, second = (ours, sdk) if sys.argv[1] == "ours-first" else (sdk, ours)
    modules = {f.__name__: f() for f in (first, second)}
    wire = modules["sdk"].GetStateRequest(store_name="s", key="k", metadata={"a": "b"}).SerializeToString()
    print(modules["ours"].GetStateRequest.FromString(wire).metadata["a"])
""")


@pytest.mark.parametrize("order", ["ours-first", "sdk-first"])
def test_sdk_and_our_modules_import_in_one_process(order: str) -> None:
    require_package("dapr", "the official Dapr Python SDK, dapr==1.19.0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", COEXIST, order], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "b"


def test_the_default_pool_would_reject_our_dapr_files() -> None:
    # Why host.grpc.pool exists: registering our file where the SDK's live is refused.
    require_package("dapr", "the official Dapr Python SDK, dapr==1.19.0")
    import dapr.proto  # noqa: F401  (fills the default pool)
    from google.protobuf import descriptor_pool

    with pytest.raises(TypeError, match="dapr.proto"):
        descriptor_pool.Default().AddSerializedFile(dapr_common.DESCRIPTOR.serialized_pb)


class Recorder:
    """Remembers requests so the test can look at what arrived."""

    def __init__(self) -> None:
        self.requests: list[Message] = []


class DaprServicer(dapr_pb2_grpc.DaprServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def SaveState(self, request: dapr_pb2.SaveStateRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.recorder.requests.append(request)
        return empty_pb2.Empty()

    def GetState(self, request: dapr_pb2.GetStateRequest, context: grpc.ServicerContext) -> dapr_pb2.GetStateResponse:
        self.recorder.requests.append(request)
        return dapr_pb2.GetStateResponse(data=b"value-of-" + request.key.encode(), etag="4")

    def SubscribeConfigurationAlpha1(
            self, request: dapr_pb2.SubscribeConfigurationRequest,
            context: grpc.ServicerContext) -> Iterator[dapr_pb2.SubscribeConfigurationResponse]:
        yield dapr_pb2.SubscribeConfigurationResponse(id="sub-1")
        yield dapr_pb2.SubscribeConfigurationResponse(
            id="sub-1", items={key: dapr_common.ConfigurationItem(value="v", version="1") for key in request.keys})


class RuntimeServicer(runtime_pb2_grpc.RuntimeServicer):
    def TryLock(self, request: runtime_pb2.TryLockRequest,
                context: grpc.ServicerContext) -> runtime_pb2.TryLockResponse:
        return runtime_pb2.TryLockResponse(success=request.expire == 30)


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    dapr_pb2_grpc.add_DaprServicer_to_server(DaprServicer(recorder), grpc_server)
    runtime_pb2_grpc.add_RuntimeServicer_to_server(RuntimeServicer(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield f"127.0.0.1:{port}", recorder
    finally:
        grpc_server.stop(grace=None)


def test_sdk_stubs_talk_to_our_servicers_in_the_same_process(server: tuple[str, Recorder]) -> None:
    require_package("dapr", "the official Dapr Python SDK, dapr==1.19.0")
    # The names the SDK's own DaprGrpcClient uses.
    from dapr.proto import api_service_v1 as sdk_grpc
    from dapr.proto import api_v1 as sdk_dapr
    from dapr.proto import common_v1 as sdk_common

    address, recorder = server
    with grpc.insecure_channel(address) as channel:
        sdk_stub = sdk_grpc.DaprStub(channel)
        sdk_stub.SaveState(sdk_dapr.SaveStateRequest(store_name="store", states=[
            sdk_common.StateItem(key="k", value=b"v", etag=sdk_common.Etag(value="2"), metadata={"m": "1"})]),
            timeout=CALL_TIMEOUT)
        got = sdk_stub.GetState(sdk_dapr.GetStateRequest(store_name="store", key="k"), timeout=CALL_TIMEOUT)
        stream = sdk_stub.SubscribeConfigurationAlpha1(
            sdk_dapr.SubscribeConfigurationRequest(store_name="cfg", keys=["a", "b"]), timeout=CALL_TIMEOUT)
        updates = list(stream)
        # The same port serves Layotto's service, routed by the full method path (the only name on the wire);
        # the request is the SDK's TryLockRequest: field 4 is `expiry_in_seconds` there, `expire` here.
        try_lock = channel.unary_unary("/spec.proto.runtime.v1.Runtime/TryLock",
                                       request_serializer=sdk_dapr.TryLockRequest.SerializeToString,
                                       response_deserializer=runtime_pb2.TryLockResponse.FromString)
        locked = try_lock(sdk_dapr.TryLockRequest(store_name="l", resource_id="r", lock_owner="o",
                                                  expiry_in_seconds=30), timeout=CALL_TIMEOUT)
    assert isinstance(got, sdk_dapr.GetStateResponse) and (got.data, got.etag) == (b"value-of-k", "4")
    saved, read = recorder.requests
    assert isinstance(saved, dapr_pb2.SaveStateRequest)
    assert (saved.states[0].key, saved.states[0].value, saved.states[0].etag.value, dict(saved.states[0].metadata)) \
        == ("k", b"v", "2", {"m": "1"})
    assert isinstance(read, dapr_pb2.GetStateRequest) and read.key == "k"
    assert [update.id for update in updates] == ["sub-1", "sub-1"]
    assert sorted(updates[1].items) == ["a", "b"] and updates[1].items["a"].value == "v"
    assert locked.success

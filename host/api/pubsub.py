"""The publish API (Layotto's and Dapr's PublishEvent, Dapr's BulkPublishEvent) over the host's
pub/sub components: the data is wrapped in Dapr's CloudEvent envelope (source = this host's app
id), exactly as functions' `proxy_publish_event` does, so any subscriber reads either the same way.

Metadata `rawPayload=true` publishes the data as it is, without an envelope (Dapr's switch); any
other metadata key is refused with InvalidArgument naming it. Calls block: run them off the loop.
Streaming subscriptions are `streams` (host/api/topics.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from host.api._components import PUBSUB, mapped, named, no_metadata
from host.api.errors import ApiError, Code, invalid
from host.api.observed import component_call, first_argument
from host.api.topics import TopicStreams
from host.components.catalog import Components
from host.components.pubsub.cloudevents import envelope
from host.lazy import lazy_module
from host.tracing.current import end_call, event_context

if TYPE_CHECKING:
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
else:  # protobuf and the generated messages (~10-20 ms to import) at the first runtime API call (issue 16)
    pb = lazy_module("host.grpc.proto.spec.proto.runtime.v1.runtime_pb2")

RAW_PAYLOAD = "rawPayload"


def _raw(metadata: Mapping[str, str], where: str) -> bool:
    no_metadata(metadata, where, (RAW_PAYLOAD,))
    value = metadata.get(RAW_PAYLOAD, "false").strip().lower()
    if value not in ("true", "false"):
        raise invalid(f"{where} metadata {RAW_PAYLOAD!r} must be 'true' or 'false', got {metadata[RAW_PAYLOAD]!r}")
    return value == "true"


def _pubsub_name(request: pb.PublishEventRequest, *_: str) -> str:
    return request.pubsub_name


class PubSubApi:
    def __init__(self, components: Components):
        self.components = components
        self.streams = TopicStreams(components.app_id, self._pubsub)  # streaming subscriptions

    def _pubsub(self, name: str, topic: str) -> Any:
        pubsub = named(self.components, PUBSUB, name)
        if not topic:
            raise ApiError(Code.INVALID_ARGUMENT, f"the topic is empty (pubsub {name!r})",
                           error_code="ERR_TOPIC_NAME_EMPTY", http_status=404)
        return pubsub

    def message(self, pubsub_name: str, topic: str, data: bytes, content_type: str, raw: bool,
                traceparent: str = "", tracestate: str = "") -> bytes:
        """What is stored for one event: its CloudEvent envelope, or the data itself when raw."""
        if raw:
            return data
        with mapped(f"publishing to topic {topic!r} of pubsub {pubsub_name!r}", "ERR_PUBSUB_CLOUD_EVENTS_SER"):
            return envelope(data, content_type, topic=topic, pubsub_name=pubsub_name,
                            source=self.components.app_id, traceparent=traceparent, tracestate=tracestate)

    @component_call("pubsub", _pubsub_name)
    def publish(self, request: pb.PublishEventRequest, traceparent: str = "", tracestate: str = "") -> None:
        pubsub = self._pubsub(request.pubsub_name, request.topic)
        raw = _raw(request.metadata, "PublishEventRequest")
        span = None
        if not traceparent:  # a function's publish through the runtime API: its request's trace (issue 14)
            traceparent, tracestate, span = event_context(request.pubsub_name, request.topic)
        event = self.message(request.pubsub_name, request.topic, bytes(request.data), request.data_content_type,
                             raw, traceparent, tracestate)
        try:
            with mapped(f"publishing to topic {request.topic!r} of pubsub {request.pubsub_name!r}",
                        "ERR_PUBSUB_PUBLISH_MESSAGE"):
                pubsub.publish(request.topic, event)
        except ApiError as error:
            end_call(span, error.message)
            raise
        end_call(span)

    @component_call("pubsub", first_argument)
    def publish_bulk(self, pubsub_name: str, topic: str, entries: list[tuple[str, bytes, str, Mapping[str, str]]],
                     metadata: Mapping[str, str]) -> list[tuple[str, str]]:
        """Dapr's BulkPublishEvent: (entry_id, event, content_type, metadata) each; returns the
        (entry_id, error) of the entries that failed (each entry is published on its own)."""
        pubsub = self._pubsub(pubsub_name, topic)
        raw_all = _raw(metadata, "BulkPublishRequest")
        seen: set[str] = set()
        messages: list[tuple[str, bytes]] = []
        for index, (entry_id, data, content_type, entry_metadata) in enumerate(entries):
            where = f"entries[{index}]"
            if not entry_id:
                raise invalid(f"{where}.entry_id is empty")
            if entry_id in seen:
                raise invalid(f"{where}.entry_id {entry_id!r} is used twice")
            seen.add(entry_id)
            raw = _raw(entry_metadata, where) or raw_all
            messages.append((entry_id, self.message(pubsub_name, topic, data, content_type, raw)))
        failed: list[tuple[str, str]] = []
        for entry_id, event in messages:
            try:
                with mapped(f"publishing to topic {topic!r} of pubsub {pubsub_name!r}", "ERR_PUBSUB_PUBLISH_MESSAGE"):
                    pubsub.publish(topic, event)
            except ApiError as error:
                failed.append((entry_id, error.message))
        return failed

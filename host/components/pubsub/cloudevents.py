"""CloudEvents 1.0 as Dapr uses them for pub/sub: the JSON envelope a publish stores (so Dapr and
Layotto subscribers on the same broker read our messages and we read theirs), parsing it back with
Dapr's rules for the data, and the HTTP binary-binding headers for handing an event to a function
as an HTTP request. No third-party library: the format is small and Dapr's variant has quirks
(`data_base64`, `topic`/`pubsubname`/`traceid` attributes) a generic SDK does not know.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from host.components.errors import InvalidRequest

EVENT_TYPE = "com.dapr.event.sent"  # Dapr's; Layotto writes com.runtime.event.sent
SPEC_VERSION = "1.0"
DEFAULT_CONTENT_TYPE = "text/plain"  # Dapr's default when the publisher gives none
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"

_REQUIRED = ("id", "source", "type", "specversion")
_NAMED = frozenset((*_REQUIRED, "datacontenttype", "topic", "pubsubname", "data", "data_base64"))
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]+")  # the spec's names (it also caps them at 20; tolerated)
# Characters a ce- header value may carry as they are (HTTP binding 3.1.3.2): printable ASCII
# except space, '"' and '%', which are percent-encoded with everything else (as UTF-8).
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def media_type(content_type: str) -> str:
    """`Application/JSON; charset=utf-8` -> `application/json`."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    """application/json and every `+json` type (cloudevents+json, ld+json, ...), and text/json."""
    kind = media_type(content_type)
    return kind in ("application/json", "text/json") or kind.endswith("+json")


def is_text(content_type: str) -> bool:
    """Types whose data is text, stored as a JSON string rather than base64."""
    kind = media_type(content_type)
    return (kind.startswith("text/") or kind.endswith("+xml") or kind.endswith("/xml")
            or kind in ("application/x-www-form-urlencoded", "application/javascript", "application/yaml",
                        "application/x-yaml", "application/graphql"))


def _now() -> str:
    """RFC 3339 in UTC with seconds, as Go's time.RFC3339 writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _put_data(event: dict[str, Any], data: bytes, content_type: str) -> None:
    """JSON data as a JSON value, text as a string, anything else (or bytes that are not what their
    type says, such as invalid JSON or invalid UTF-8) as `data_base64`, so parse() gives back the
    exact bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and is_json(content_type):
        try:
            event["data"] = json.loads(text)
            return
        except ValueError:
            pass
    elif text is not None and is_text(content_type):
        event["data"] = text
        return
    event["data_base64"] = base64.b64encode(data).decode("ascii")


def envelope(data: bytes, content_type: str, *, topic: str, pubsub_name: str, source: str,
             event_id: str | None = None, traceparent: str = "", tracestate: str = "") -> bytes:
    """The CloudEvent JSON a publish stores. Data that already is a CloudEvent (content type
    application/cloudevents+json) keeps its own attributes; topic and pubsubname are set to where
    it is published, missing required attributes and trace context are filled in."""
    content_type = content_type or DEFAULT_CONTENT_TYPE
    if media_type(content_type) == CLOUDEVENTS_CONTENT_TYPE:
        event = _decode_object(data)
        event.setdefault("id", event_id or str(uuid.uuid4()))
        event.setdefault("source", source)
        event.setdefault("type", EVENT_TYPE)
        event.setdefault("specversion", SPEC_VERSION)
        event["topic"], event["pubsubname"] = topic, pubsub_name
        if traceparent:
            event.setdefault("traceid", traceparent)
            event.setdefault("traceparent", traceparent)
        if tracestate:
            event.setdefault("tracestate", tracestate)
    else:
        event = {"id": event_id or str(uuid.uuid4()), "source": source, "type": EVENT_TYPE,
                 "specversion": SPEC_VERSION, "datacontenttype": content_type, "topic": topic,
                 "pubsubname": pubsub_name, "time": _now()}
        if traceparent:  # Dapr writes the W3C traceparent under both names
            event["traceid"] = event["traceparent"] = traceparent
        if tracestate:
            event["tracestate"] = tracestate
        _put_data(event, bytes(data), content_type)
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def _decode_object(raw: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"not a CloudEvent: not JSON ({error})") from None
    if not isinstance(decoded, dict):
        raise InvalidRequest(f"not a CloudEvent: a JSON {type(decoded).__name__}, not an object")
    return decoded


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    else:  # a structured extension: not CloudEvents-typed, carried as compact JSON
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return quote(text, safe=_HEADER_SAFE)


@dataclass(frozen=True)
class CloudEvent:
    id: str
    source: str
    type: str
    specversion: str
    datacontenttype: str
    topic: str
    pubsubname: str
    data: bytes
    extensions: dict[str, Any] = field(default_factory=dict)  # every other attribute (time, traceparent...)

    def binary_headers(self) -> list[tuple[str, str]]:
        """The CloudEvents HTTP binary binding: one `ce-<attribute>` header per attribute, the
        data content type as `content-type`; the body is `data`."""
        headers = [("ce-id", self.id), ("ce-source", self.source), ("ce-type", self.type),
                   ("ce-specversion", self.specversion)]
        headers = [(name, _header_value(value)) for name, value in headers]
        if self.topic:
            headers.append(("ce-topic", _header_value(self.topic)))
        if self.pubsubname:
            headers.append(("ce-pubsubname", _header_value(self.pubsubname)))
        for name, value in self.extensions.items():
            # Only names that can be header tokens; values that are null carry nothing.
            if value is not None and _ATTRIBUTE_NAME.fullmatch(name):
                headers.append((f"ce-{name}", _header_value(value)))
        if self.datacontenttype:
            headers.append(("content-type", self.datacontenttype))
        return headers


def _data(event: dict[str, Any], content_type: str) -> bytes:
    """Dapr's rule: data_base64 decoded; else string data as UTF-8 for non-JSON types; JSON types
    (and non-string data of any type) re-serialised compactly; no data is empty."""
    encoded = event.get("data_base64")
    if encoded is not None:
        if not isinstance(encoded, str):
            raise InvalidRequest("not a CloudEvent: data_base64 is not a string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("not a CloudEvent: data_base64 is not base64") from None
    data = event.get("data")
    if data is None:
        return b""
    if isinstance(data, str) and not is_json(content_type):
        return data.encode("utf-8")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse(raw: bytes) -> CloudEvent:
    """A stored CloudEvent JSON; InvalidRequest when it is not a JSON object with the required
    attributes (id, source, type, specversion) as strings."""
    event = _decode_object(raw)
    missing = [name for name in _REQUIRED if not isinstance(event.get(name), str) or not event[name]]
    if missing:
        raise InvalidRequest(f"not a CloudEvent: {', '.join(missing)} missing or not a string")
    content_type = event.get("datacontenttype") or ""
    if not isinstance(content_type, str):
        raise InvalidRequest("not a CloudEvent: datacontenttype is not a string")
    topic, pubsub_name = event.get("topic") or "", event.get("pubsubname") or ""
    if not isinstance(topic, str) or not isinstance(pubsub_name, str):
        raise InvalidRequest("not a CloudEvent: topic and pubsubname must be strings")
    return CloudEvent(id=event["id"], source=event["source"], type=event["type"], specversion=event["specversion"],
                      datacontenttype=content_type, topic=topic, pubsubname=pubsub_name,
                      data=_data(event, content_type),
                      extensions={name: value for name, value in event.items() if name not in _NAMED})

"""The CloudEvents envelope as Dapr writes it (so Dapr/Layotto subscribers read what this host
publishes), parsing it back with Dapr's data rules, and the HTTP binary-binding headers a function
receives. Expected values come from the CloudEvents 1.0 spec and Dapr's documented envelope, not
from running the code."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from host.components.errors import InvalidRequest
from host.components.pubsub.cloudevents import CloudEvent, envelope, parse

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def wrap(data: bytes, content_type: str, **options: str) -> dict:
    raw = envelope(data, content_type, topic="orders", pubsub_name="pubsub", source="app-1", **options)
    return json.loads(raw)


def test_text_data_is_a_string_with_every_dapr_attribute() -> None:
    event = wrap("héllo".encode(), "text/plain", traceparent=TRACEPARENT, tracestate="k=v")
    assert uuid.UUID(event.pop("id")).version == 4
    stamped = datetime.strptime(event.pop("time"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - stamped) < timedelta(seconds=5)
    assert event == {"source": "app-1", "type": "com.dapr.event.sent", "specversion": "1.0",
                     "datacontenttype": "text/plain", "topic": "orders", "pubsubname": "pubsub",
                     "traceid": TRACEPARENT, "traceparent": TRACEPARENT, "tracestate": "k=v", "data": "héllo"}


def test_empty_content_type_defaults_to_text_plain_and_no_trace_without_one() -> None:
    event = wrap(b"plain", "", event_id="fixed-id")
    assert (event["id"], event["datacontenttype"], event["data"]) == ("fixed-id", "text/plain", "plain")
    assert not {"traceid", "traceparent", "tracestate", "data_base64"} & event.keys()


def test_json_data_is_a_json_value() -> None:
    event = wrap(b'{"order": 7, "items": ["a", "b"]}', "application/json; charset=utf-8")
    assert event["data"] == {"order": 7, "items": ["a", "b"]}
    assert event["datacontenttype"] == "application/json; charset=utf-8"
    assert "data_base64" not in event
    assert wrap(b"[1, 2]", "application/vnd.api+json")["data"] == [1, 2]  # any +json type


@pytest.mark.parametrize(("data", "content_type"), [
    (b"\x00\x01\xfe\xff", "application/octet-stream"),
    (b"\x89PNG\r\n", "image/png"),
    (b"\xff\xfe not utf-8", "text/plain"),  # text/* but not text
    (b"{not json", "application/json"),  # JSON type but not JSON: kept exact
])
def test_binary_data_is_base64(data: bytes, content_type: str) -> None:
    event = wrap(data, content_type)
    assert "data" not in event
    assert base64.b64decode(event["data_base64"]) == data
    assert parse(json.dumps(event).encode()).data == data


def test_an_existing_cloudevent_is_merged_not_wrapped() -> None:
    own = {"specversion": "1.0", "id": "evt-1", "source": "upstream", "type": "order.created",
           "datacontenttype": "application/json", "data": {"n": 1}, "subject": "o/1", "topic": "elsewhere",
           "traceparent": "00-own-trace"}
    event = wrap(json.dumps(own).encode(), "application/cloudevents+json", traceparent=TRACEPARENT)
    assert event == {**own, "topic": "orders", "pubsubname": "pubsub", "traceid": TRACEPARENT}


def test_a_partial_cloudevent_gets_the_required_attributes() -> None:
    event = wrap(b'{"data": "x", "custom": true}', "application/cloudevents+json", event_id="id-9")
    assert event == {"data": "x", "custom": True, "id": "id-9", "source": "app-1", "type": "com.dapr.event.sent",
                     "specversion": "1.0", "topic": "orders", "pubsubname": "pubsub"}


def test_a_cloudevent_content_type_needs_a_json_object() -> None:
    with pytest.raises(InvalidRequest):
        envelope(b"[1]", "application/cloudevents+json", topic="t", pubsub_name="p", source="s")


@pytest.mark.parametrize(("data", "content_type", "expected"), [
    (b"h\xc3\xa9llo", "text/plain", b"h\xc3\xa9llo"),
    (b'{ "a" : [1, 2] }', "application/json", b'{"a":[1,2]}'),  # re-serialised compactly
    (b'"just a string"', "application/json", b'"just a string"'),
    (b"<a>1</a>", "application/xml", b"<a>1</a>"),
    (b"\x00\x01", "application/octet-stream", b"\x00\x01"),
    (b"", "text/plain", b""),
])
def test_parse_round_trip(data: bytes, content_type: str, expected: bytes) -> None:
    raw = envelope(data, content_type, topic="orders", pubsub_name="pubsub", source="app-1", event_id="e-1",
                   traceparent=TRACEPARENT)
    event = parse(raw)
    assert (event.id, event.source, event.type, event.specversion, event.datacontenttype, event.topic,
            event.pubsubname, event.data) == ("e-1", "app-1", "com.dapr.event.sent", "1.0", content_type,
                                              "orders", "pubsub", expected)
    assert set(event.extensions) == {"time", "traceid", "traceparent"}
    assert event.extensions["traceparent"] == TRACEPARENT


def test_parse_keeps_foreign_attributes_as_extensions() -> None:
    raw = json.dumps({"specversion": "1.0", "id": "1", "source": "layotto", "type": "com.runtime.event.sent",
                      "data": {"k": [1]}, "expiration": "2030-01-01T00:00:00Z", "count": 3}).encode()
    event = parse(raw)
    assert (event.datacontenttype, event.topic, event.pubsubname, event.data) == ("", "", "", b'{"k":[1]}')
    assert event.extensions == {"expiration": "2030-01-01T00:00:00Z", "count": 3}


@pytest.mark.parametrize("raw", [
    b"plain bytes", b"\xff\xfe", b"[1, 2]", b'"a string"', b"{}",
    b'{"id": "1", "source": "s", "type": "t"}',  # no specversion
    b'{"id": 1, "source": "s", "type": "t", "specversion": "1.0"}',  # id not a string
    b'{"id": "1", "source": "s", "type": "t", "specversion": "1.0", "data_base64": "@@not base64@@"}',
])
def test_non_cloudevents_are_invalid_requests(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse(raw)


def test_binary_headers() -> None:
    event = parse(envelope(b'{"n": 1}', "application/json", topic="orders", pubsub_name="pubsub",
                           source="app-1", event_id="e-7", traceparent=TRACEPARENT, tracestate="k=v"))
    headers = dict(event.binary_headers())
    assert len(headers) == len(event.binary_headers())  # no header twice
    assert headers == {"ce-id": "e-7", "ce-source": "app-1", "ce-type": "com.dapr.event.sent",
                       "ce-specversion": "1.0", "ce-topic": "orders", "ce-pubsubname": "pubsub",
                       "ce-time": event.extensions["time"], "ce-traceid": TRACEPARENT,
                       "ce-traceparent": TRACEPARENT, "ce-tracestate": "k=v", "content-type": "application/json"}


def test_binary_header_values_are_percent_encoded() -> None:
    event = CloudEvent(id="a b", source="s", type="t", specversion="1.0", datacontenttype="", topic="",
                       pubsubname="", data=b"", extensions={"note": 'é "q" 100%', "flag": True, "n": 2,
                                                            "Bad_Name": "x", "gone": None})
    assert event.binary_headers() == [("ce-id", "a%20b"), ("ce-source", "s"), ("ce-type", "t"),
                                      ("ce-specversion", "1.0"), ("ce-note", "%C3%A9%20%22q%22%20100%25"),
                                      ("ce-flag", "true"), ("ce-n", "2")]

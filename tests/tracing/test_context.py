"""The hand-written W3C parts (host/tracing/w3c.py, context.py) and the `[tracing]` settings with
the standard OTEL_* environment (host/tracing/setup.py)."""

from __future__ import annotations

import pytest

from abi import HttpRequest
from host.config import ConfigError, validate_config
from host.config.model import TracingConfig
from host.tracing import context
from host.tracing.context import context_of, event_headers, incoming
from host.tracing.setup import export_settings
from host.tracing.w3c import clean_tracestate, parse_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_parse_traceparent() -> None:
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-01") == (TRACE_ID, PARENT_ID, 1)
    assert parse_traceparent(f" 00-{TRACE_ID}-{PARENT_ID}-00\t") == (TRACE_ID, PARENT_ID, 0)  # OWS
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-09-what-comes-later") == (TRACE_ID, PARENT_ID, 9)
    for bad in (f"00-{TRACE_ID}-{PARENT_ID}-0g", f"00-{TRACE_ID}-{PARENT_ID}-01-", f"cc-{TRACE_ID}-{PARENT_ID}-01x",
                f"0-{TRACE_ID}-{PARENT_ID}-01", "", "00", f"00-{TRACE_ID.upper()}-{PARENT_ID}-01"):
        assert parse_traceparent(bad) is None, bad


def test_tracestate_is_joined_and_bounded() -> None:
    assert clean_tracestate(["a=1, b=2", "", "c=3"]) == "a=1,b=2,c=3"
    assert clean_tracestate([",".join(f"k{i}=v" for i in range(40))]).count(",") == 31  # 32 members at most
    long = ["x" * 300, "y" * 300]
    assert clean_tracestate([",".join(long)]) == long[0]  # whole members within 512 characters
    assert clean_tracestate(["ok=1,bad=\x01"]) == "ok=1"


def test_context_is_made_once_and_children_name_this_hop() -> None:
    request = HttpRequest.build("GET", "/", [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
                                             ("tracestate", "a=1"), ("tracestate", "b=2")])
    first = context_of(request)
    assert context_of(request) is first
    assert (first.trace_id, first.parent_id, first.sampled, first.tracestate) == (TRACE_ID, PARENT_ID, True, "a=1,b=2")
    assert first.span_id != PARENT_ID
    assert first.headers() == [("traceparent", f"00-{TRACE_ID}-{first.span_id}-01"), ("tracestate", "a=1,b=2")]


def test_new_traces_follow_the_root_ratio() -> None:
    try:
        context.set_root_ratio(0.0)
        assert not any(incoming([]).sampled for _ in range(50))
        context.set_root_ratio(1.0)
        assert all(incoming([]).sampled for _ in range(50))
        context.set_root_ratio(0.5)
        sampled = sum(incoming([]).sampled for _ in range(2000))
        assert 800 < sampled < 1200
        unsampled_caller = [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00")]
        assert not incoming(unsampled_caller).sampled  # the caller's decision stands
    finally:
        context.set_root_ratio(0.0)


def test_event_headers() -> None:
    both = [("traceparent", "00-x"), ("tracestate", "a=1")]
    assert event_headers({"traceparent": "00-x", "tracestate": "a=1"}) == both
    assert event_headers({"tracestate": "a=1"}) == [] and event_headers({"traceparent": 7}) == []


def test_settings_from_config_and_the_otel_environment() -> None:
    off = TracingConfig()
    assert export_settings(off, "app", {}) is None  # nothing configured: no export
    from_env = export_settings(off, "app", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                                            "OTEL_SERVICE_NAME": "svc"})
    assert from_env is not None and (from_env.endpoint, from_env.service_name) == ("http://collector:4317", "svc")
    traces_first = export_settings(off, "app", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1",
                                                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2"})
    assert traces_first is not None and traces_first.endpoint == "http://b:2"
    configured = TracingConfig(otlp_endpoint="https://c:3", sample_ratio=0.25)
    settings = export_settings(configured, "app", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1"})
    assert settings is not None and (settings.endpoint, settings.service_name, settings.sample_ratio) == (
        "https://c:3", "app", 0.25)  # the file wins over the environment; the app id names the service
    assert export_settings(configured, "app", {"OTEL_SDK_DISABLED": "true"}) is None  # the kill switch
    assert export_settings(TracingConfig(otlp_endpoint="http://c:3", enabled=False), "app", {}) is None
    with pytest.raises(ConfigError, match="grpc only"):
        export_settings(configured, "app", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    with pytest.raises(ConfigError, match="expected http"):
        export_settings(off, "app", {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"})


def test_tracing_section_is_validated() -> None:
    config = validate_config({"tracing": {"otlp_endpoint": "http://127.0.0.1:4317", "sample_ratio": 0.1}})
    assert config.tracing.sample_ratio == 0.1
    for bad, field in (({"sample_ratio": 2}, "tracing.sample_ratio"), ({"otlp_endpoint": "127.0.0.1:4317"},
                       "tracing.otlp_endpoint"), ({"exporter": "jaeger"}, "tracing.exporter"),
                       ({"protocol": "http/json"}, "tracing.protocol")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            validate_config({"tracing": bad})


def test_the_sdks_dropped_span_warnings_are_summarised() -> None:
    import logging

    from host.tracing.spans import _DropWarnings

    quiet = _DropWarnings(interval_s=60)

    def record(message: str) -> logging.LogRecord:
        return logging.makeLogRecord({"msg": message, "args": ("Span",)})

    first = record("Queue full, dropping %s.")
    assert quiet.filter(first) and first.getMessage().startswith("span queue full: 1 span(s) dropped")
    assert not quiet.filter(record("Queue full, dropping %s.")) and not quiet.filter(record("Queue full, dropping %s."))
    assert quiet.filter(record("Exporter failed %s"))  # anything else passes
    quiet._next = 0.0  # the interval is over
    summary = record("Queue full, dropping %s.")
    assert quiet.filter(summary) and "3 span(s)" in summary.getMessage()  # the two held back, and this one

"""Turning span export on and off for this process, from `[tracing]` and the standard
OpenTelemetry environment variables (as Spin reads them):

- `OTEL_SDK_DISABLED=true` turns export off, whatever the config says;
- the endpoint is `[tracing] otlp_endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
  `OTEL_EXPORTER_OTLP_ENDPOINT`; none means no export;
- the protocol must be grpc (`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` naming another is refused);
- the service name is `[tracing] service_name`, else `OTEL_SERVICE_NAME`, else the app id; export
  headers are `[tracing] headers`, else the exporter reads `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`.

W3C context propagation does not depend on any of this: it always runs (host/tracing/context.py).
Export is process-wide, like logging: the App that installed it removes it when it stops.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from host.config.errors import ConfigError
from host.config.model import TracingConfig
from host.tracing import context, spans

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSettings:
    endpoint: str
    service_name: str
    sample_ratio: float = 1.0
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    delay_ms: int = 1000  # the batch processor's wait before an export


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def export_settings(config: TracingConfig, app_id: str,
                    environ: Mapping[str, str] = os.environ) -> ExportSettings | None:
    """What to export to, or None when spans are not exported."""
    if not config.enabled or _true(environ.get("OTEL_SDK_DISABLED")):
        return None
    endpoint = (config.otlp_endpoint or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if not endpoint:
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != "grpc":
                raise ConfigError(f"{name}={protocol!r}: this host exports OTLP over grpc only")
            break
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"tracing endpoint {endpoint!r}: expected http://HOST:PORT or https://HOST:PORT")
    service = config.service_name or environ.get("OTEL_SERVICE_NAME", "").strip() or app_id
    return ExportSettings(endpoint, service, config.sample_ratio, dict(config.headers), config.timeout_ms / 1000,
                          config.batch_delay_ms)


class Installed:
    """Export as installed by one App; `remove` undoes it (only if it is still the process's)."""

    def __init__(self, recorder: spans.Spans):
        self.recorder = recorder

    def flush(self, timeout_s: float = 5.0) -> bool:
        return self.recorder.flush(timeout_s)

    def remove(self) -> None:
        if spans.ACTIVE is self.recorder:
            spans.ACTIVE = None
            context.set_root_ratio(0.0)
        self.recorder.shutdown()


def install(config: TracingConfig, app_id: str, environ: Mapping[str, str] = os.environ) -> Installed | None:
    settings = export_settings(config, app_id, environ)
    if settings is None:
        return None
    recorder = spans.Spans(settings)
    if spans.ACTIVE is not None:
        log.warning("tracing: another exporter was installed in this process; replaced")
    spans.ACTIVE = recorder
    context.set_root_ratio(settings.sample_ratio)
    log.info("tracing: exporting spans over OTLP/gRPC to %s as %r (new traces sampled at %g)", settings.endpoint,
             settings.service_name, settings.sample_ratio)
    return Installed(recorder)

"""The one typed configuration model, loaded from the native TOML file or a Layotto `config.json`.

Validated once at start-up; a wrong field fails with a message that names it
(`functions.id_1.instance_num: Input should be a valid integer`). Component sections (`state`,
`pubsub`, `lock`, `sequencer`, `configuration`) are unions assembled from the backends'
own config models (host/components/registry.py).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from host.components._redis import check_address
from host.components.registry import config_union
from host.config.errors import ConfigError, describe_validation_error

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# The embedded quickstart: the repository's file in a source checkout (or an editable install); in an
# installed package, the copy setup.py puts in host/quickstart/ with the example functions beside it.
PACKAGED_QUICKSTART = Path(__file__).resolve().parent.parent / "quickstart" / "quickstart.toml"
_SOURCE_QUICKSTART = REPO_ROOT / "configs" / "quickstart.toml"
DEFAULT_CONFIG = _SOURCE_QUICKSTART if _SOURCE_QUICKSTART.is_file() else PACKAGED_QUICKSTART


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (HOST may be a bracketed IPv6 address) as (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


_Address = Annotated[str, AfterValidator(check_address)]


class NodeConfig(_Model):
    """This host as an Envoy bootstrap's `node` describes a proxy; filters written for Envoy/Istio read
    it as the `node` property: `node.id`, `node.cluster`, `node.metadata.<key>` (e.g. Istio's
    NAMESPACE, WORKLOAD_NAME, ISTIO_VERSION), and `node` itself as a serialized
    envoy.config.core.v3.Node (abi/properties.py)."""

    id: str | None = None  # default: this machine's host name
    cluster: str | None = None  # default: app_id
    # A google.protobuf.Struct, as in Envoy's bootstrap: numbers are read back as 8-byte doubles.
    metadata: dict[str, JsonValue] = {}


class EnvoyMetadata(_Model):
    """envoy.config.core.v3.Metadata as written in an Envoy route or cluster: filter name -> Struct,
    e.g. `{ filter_metadata = { "envoy.lb" = { canary = true } } }`."""

    filter_metadata: dict[str, dict[str, JsonValue]] = {}


class RouteProperties(BaseModel):
    """What a request to this function shows filters as Envoy's route and cluster attributes (read
    with proxy_get_property during requests, by the function and its filters): `route_name` and
    `cluster_name` (both default to the function's name: it is the route and the destination),
    `route_metadata` / `cluster_metadata` (read as `route_metadata.filter_metadata.<filter>.<key>`),
    and any other name -> a value the guest reads at that dotted path (a string as its bytes, an
    integer 8-byte little-endian, a float an 8-byte double, a boolean one byte, a table a serialized
    proxy-wasm map of such values)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, JsonValue]

    route_name: str | None = None
    cluster_name: str | None = None
    route_metadata: EnvoyMetadata = EnvoyMetadata()
    cluster_metadata: EnvoyMetadata = EnvoyMetadata()


class ServerConfig(_Model):
    listen: str = "127.0.0.1:2045"
    admin: str = "127.0.0.1:34998"
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (host/logs.py)
    cache_dir: str | None = None  # compiled-module cache; default: $XDG_CACHE_HOME/wasm-faas
    invoke_timeout_ms: int = Field(3000, gt=0)  # proxy_invoke_service: wait for the target, run it
    acquire_timeout_ms: int = Field(10000, gt=0)  # an HTTP request waiting for a free instance
    request_timeout_ms: int = Field(60000, gt=0)  # the whole request (waiting + guest + its calls) -> 504
    fuel_metering: bool = False  # count wasm instructions so functions can have a `fuel` budget (slower)
    max_invoke_depth: int = Field(8, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)  # larger request bodies answer 413
    max_header_bytes: int = Field(8190, gt=0)  # one header line / field; larger answers 400
    max_headers: int = Field(100, gt=0)  # header count; more answers 400
    # Open connections on the function listener (per worker). At the cap the longest-idle keep-alive
    # connection is closed to make room; when none is idle the new one is answered 503. 0: three
    # quarters of the process's open-file limit (RLIMIT_NOFILE), keeping descriptors for the rest.
    max_connections: int = Field(0, ge=0)
    # Open connections from one client address; more are answered 503 and closed. 0: no per-client cap.
    max_connections_per_client: int = Field(1024, ge=0)
    admin_token: str | None = None  # when set, the admin API (not the health probes) needs this bearer token
    admin_allow_any_path: bool = False  # /wasm/install may only load modules inside functions_dirs
    # --- issue 15 items 9-11 (host/functions/deployments.py, host/process) ---
    # An admin listener on a non-loopback address without admin_token refuses to start unless this is set.
    admin_allow_insecure: bool = False
    max_instances_per_function: int = Field(256, ge=1)  # instance_num above it is refused (400 / DeployError)
    # Two modules reporting one function id: "refuse" the second (with the reason in the listing), or
    # "random": share the id, each request going to one of them at random (Layotto's behaviour).
    duplicate_ids: Literal["refuse", "random"] = "refuse"
    guest_log_lines_per_second: float = Field(100, ge=0)  # per function (bursts of twice that); 0: no limit
    # `serve --workers N`: a worker whose heartbeat (written by its event loop) is older than this is
    # stopped or hung, and is killed and replaced. 0: not checked.
    worker_heartbeat_timeout_ms: int = Field(10000, ge=0)
    # --- end issue 15 ---
    watch: bool = True  # deploy, update and remove functions when files in functions_dirs change
    # A file closed after writing, or renamed in, loads at once; this is the quiet time after the
    # last write before a reload when no close comes (never while a writer holds the file open).
    watch_debounce_ms: int = Field(300, ge=0)
    # On SIGTERM: stop accepting, then give in-flight requests this long to finish (one still
    # running after it is cut); then pools are closed (root contexts retired) and components closed.
    shutdown_grace_ms: int = Field(10000, ge=0)
    # Processes serving the same listen port (SO_REUSEPORT) under a small supervisor; each has its
    # own instance pools (instance_num counts per worker), watcher and memory state stores.
    workers: int = Field(1, ge=1, le=1024)
    node: NodeConfig = NodeConfig()  # `[server.node]`: the Envoy node filters see (id, cluster, metadata)
    # --- runtime API for applications (host/api, host/grpc, host/http/dapr) ---
    grpc: str = "127.0.0.1:34904"  # Layotto's Runtime and Dapr's Dapr gRPC services; "" disables
    dapr_http: str = "127.0.0.1:3500"  # Dapr's HTTP API subset; "" disables
    api_token: str | None = None  # Dapr's dapr-api-token on both (not health, not server-streaming calls)
    api_max_message_bytes: int = Field(4 * 1024 * 1024, gt=0)  # one gRPC message / HTTP body, either way
    # Pub/sub delivery to the application (host/api/delivery.py): its gRPC AppCallback at HOST:PORT,
    # speaking Dapr's or Layotto's schema, and/or its HTTP base URL (GET /dapr/subscribe). "" = none.
    app_callback: str = ""
    app_callback_protocol: Literal["dapr", "layotto"] = "dapr"
    app_http: str = ""
    # --- end runtime API ---

    _check_listen = field_validator("listen", "admin")(check_address)

    @field_validator("grpc", "dapr_http", "app_callback")
    @classmethod
    def _optional_address(cls, value: str) -> str:
        return check_address(value) if value else value

    @field_validator("app_http")
    @classmethod
    def _optional_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class FilterConfig(_Model):
    """A proxy-wasm filter in front of a function (auth, header rewriting, rate limiting...)."""

    path: str
    name: str | None = None
    plugin_config: str | dict[str, Any] = ""
    plugin_config_encoding: Literal["json", "proxy-wasm-map"] = "json"
    vm_config: str | dict[str, Any] = ""
    root_id: str = ""
    vm_id: str = ""


class FunctionConfig(_Model):
    name: str | None = None  # defaults to the table key (or the file stem)
    path: str | None = None  # defaults to <functions_dir>/<key>.wasm when found there
    # --- instances (issue 16) ---
    # A fixed pool of this many instances (<= 0: one per CPU), as Layotto's instance_num: min = max =
    # instance_num, unless min_instances / max_instances are given. None: [function_defaults].
    instance_num: int | None = None
    min_instances: int | None = Field(None, ge=0)  # kept even when idle; 0: scale to zero
    max_instances: int | None = Field(None, ge=0)  # grown to while every instance is busy; 0: one per CPU
    idle_timeout_ms: int | None = Field(None, ge=0)  # an instance above min idle this long retires; 0: at once

    @model_validator(mode="after")
    def _instance_bounds(self) -> FunctionConfig:
        _check_instance_bounds(self.min_instances, self.max_instances)
        return self
    # --- end instances ---
    md5: str | None = None
    engine: Literal["wasmtime", "wasmer"] = "wasmtime"  # both run on this host's engine
    plugin_config: str | dict[str, Any] = ""
    # How a table plugin_config reaches the guest (buffer 7): JSON (Envoy-style SDKs) or a serialized
    # proxy-wasm map (what Layotto hands its functions; used for Layotto config.json items).
    plugin_config_encoding: Literal["json", "proxy-wasm-map"] = "json"
    vm_config: str | dict[str, Any] = ""
    root_id: str = ""
    vm_id: str = ""
    timeout_ms: int | None = Field(None, gt=0)
    memory_limit_mb: int | None = Field(None, gt=0)
    max_queue: int | None = Field(None, ge=0)
    # Capabilities: None allows all; a list allows only those names (others answer InternalFailure).
    allowed_state_stores: list[str] | None = None
    allowed_invoke_targets: list[str] | None = None
    allowed_upstreams: list[str] | None = None
    allowed_pubsubs: list[str] | None = None
    allowed_lock_stores: list[str] | None = None
    allowed_sequencers: list[str] | None = None
    allowed_configuration_stores: list[str] | None = None
    fuel: int | None = Field(None, gt=0)  # wasm instructions per request (needs server.fuel_metering)
    filters: list[FilterConfig] = []  # request callbacks run through these in order, then the function
    # Envoy route/cluster attributes of this function's requests (route_name, cluster_name,
    # route_metadata, cluster_metadata, extras): `[functions.<id>.properties]`, see RouteProperties.
    properties: RouteProperties = RouteProperties()

    @field_validator("md5")
    @classmethod
    def _md5_hex(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 32 or any(c not in "0123456789abcdefABCDEF" for c in value)):
            raise ValueError("expected 32 hex digits")
        return value.lower() if value else value


def _check_instance_bounds(low: int | None, high: int | None) -> None:
    """min_instances may not exceed max_instances where both are given (0 as max: one per CPU)."""
    if low is not None and high and low > high:
        raise ValueError(f"min_instances ({low}) is over max_instances ({high})")


class FunctionDefaults(_Model):
    # --- instances (issue 16) ---
    # Unless a function says otherwise it holds no instance while idle and grows to one per CPU
    # under load: a host with a thousand rarely used functions holds only their compiled code,
    # and a busy function keeps its instances (it is never idle for a minute). Its first request
    # after an idle minute starts an instance from the pre-linked module (about 0.1-0.5 ms).
    # Setting instance_num here gives every function a fixed pool of that size (Layotto's rule).
    instance_num: int | None = None
    min_instances: int = Field(0, ge=0)
    max_instances: int = Field(0, ge=0)  # 0: one per CPU
    idle_timeout_ms: int = Field(60_000, ge=0)

    @model_validator(mode="after")
    def _instance_bounds(self) -> FunctionDefaults:
        _check_instance_bounds(self.min_instances, self.max_instances)
        return self
    # --- end instances ---
    timeout_ms: int = Field(30000, gt=0)  # per-request guest deadline (epoch interruption) -> 504
    memory_limit_mb: int = Field(256, gt=0)  # per-instance linear memory cap; growth past it fails
    max_queue: int = Field(256, ge=0)  # requests waiting for a busy function; more -> 503 Retry-After


class SubscriptionConfig(_Model):
    """A function subscribed to a topic: each message reaches it as a request in the CloudEvents
    HTTP binary binding; a 2xx acknowledges, anything else is redelivered with back-off, and after
    `max_attempts` the message is parked in `dead_letter_topic` (when set) with the reason."""

    function: str  # the function id the events go to
    pubsub: str  # a configured [pubsub.<name>] component
    topic: str = Field(min_length=1)
    group: str = ""  # consumer group; default "<app_id>.<function>" (one per function: each gets every event)
    dead_letter_topic: str = ""
    max_attempts: int = Field(5, ge=1)
    backoff_ms: int = Field(200, ge=0)  # the first redelivery's delay; doubles with each attempt
    max_backoff_ms: int = Field(10_000, ge=0)
    concurrency: int = Field(16, ge=1, le=1024)  # deliveries in flight at once


class TracingConfig(_Model):
    """`[tracing]` (host/tracing): W3C trace context is always propagated; spans are exported over
    OTLP/gRPC only when an endpoint is set here or in OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT (and
    OTEL_SDK_DISABLED is not true)."""

    enabled: bool = True  # false: never export spans (propagation stays)
    otlp_endpoint: str = ""  # http://HOST:PORT (plain text) or https://HOST:PORT (TLS); "": from the environment
    protocol: Literal["grpc"] = "grpc"  # OTLP/gRPC (the exporter's transport; http/protobuf is not offered)
    sample_ratio: float = Field(1.0, ge=0, le=1)  # of new traces; a request with a traceparent follows its flag
    service_name: str = ""  # the spans' service.name; default OTEL_SERVICE_NAME, else app_id
    headers: dict[str, str] = {}  # sent with every export (an API key); default OTEL_EXPORTER_OTLP_HEADERS
    timeout_ms: int = Field(10_000, gt=0)  # one export call
    batch_delay_ms: int = Field(1000, gt=0)  # spans wait this long (or for a full batch) before export

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected http://HOST:PORT or https://HOST:PORT, got {value!r}")
        return value


class HostConfig(_Model):
    server: ServerConfig = ServerConfig()
    tracing: TracingConfig = TracingConfig()  # issue 14: distributed tracing (host/tracing)
    functions_dirs: list[str] = []
    function_defaults: FunctionDefaults = FunctionDefaults()
    functions: dict[str, FunctionConfig] = {}
    app_id: str = "wasm-faas"  # this host's app id: key prefixes, CloudEvents source, consumer groups
    state: dict[str, config_union("state")] = {}  # type: ignore[valid-type]
    pubsub: dict[str, config_union("pubsub")] = {}  # type: ignore[valid-type]
    lock: dict[str, config_union("lock")] = {}  # type: ignore[valid-type]
    sequencer: dict[str, config_union("sequencer")] = {}  # type: ignore[valid-type]
    configuration: dict[str, config_union("configuration")] = {}  # type: ignore[valid-type]
    subscriptions: list[SubscriptionConfig] = []  # events into functions (host/events)
    upstreams: dict[str, str] = {}  # proxy_http_call targets: name -> base URL (http:// or https://)
    grpc_upstreams: dict[str, _Address] = {}  # proxy_grpc_call / proxy_grpc_stream targets: name -> HOST:PORT
    base_dir: str = "."  # relative paths are resolved against the config file's folder

    @field_validator("upstreams")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream {name!r}: expected an http:// or https:// URL, got {url!r}")
        return value

    @model_validator(mode="after")
    def _subscriptions_name_configured_pubsubs(self) -> HostConfig:
        for index, subscription in enumerate(self.subscriptions):
            if subscription.pubsub not in self.pubsub:
                known = ", ".join(sorted(self.pubsub)) or "none configured"
                raise ValueError(f"subscriptions[{index}]: unknown pubsub {subscription.pubsub!r} (known: {known})")
        return self

    def resolve(self, path: str) -> Path:
        return (Path(self.base_dir) / os.path.expanduser(path)).resolve()


def load_config(path: Path | None = None) -> HostConfig:
    """Load a .toml (native) or .json (Layotto) file; no path means the embedded quickstart."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {error}") from None
    if path.suffix == ".json":
        from host.config.layotto import convert_layotto_config

        raw = convert_layotto_config(raw, path)
    raw.setdefault("base_dir", str(path.resolve().parent))
    return validate_config(raw, str(path))


def validate_config(raw: dict[str, Any], source: str = "config") -> HostConfig:
    try:
        return HostConfig.model_validate(raw)
    except ValidationError as error:
        problems = describe_validation_error(error)
        raise ConfigError(f"invalid config {source}:\n  " + "\n  ".join(problems)) from None

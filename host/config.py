"""The one typed configuration model, loaded from the native TOML file or a Layotto `config.json`.

Validated once at start-up; a wrong field fails with a message that names it
(`functions.id_1.instance_num: Input should be a valid integer`).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "quickstart.toml"


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


_Address = Annotated[str, AfterValidator(_address)]


class ServerConfig(_Model):
    listen: str = "127.0.0.1:2045"
    admin: str = "127.0.0.1:34998"
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical"] = "info"
    cache_dir: Optional[str] = None  # compiled-module cache; default: $XDG_CACHE_HOME/wasm-faas
    invoke_timeout_ms: int = Field(3000, gt=0)  # proxy_invoke_service: wait for the target, run it
    acquire_timeout_ms: int = Field(10000, gt=0)  # an HTTP request waiting for a free instance
    request_timeout_ms: int = Field(60000, gt=0)  # the whole request (waiting + guest + its calls) -> 504
    fuel_metering: bool = False  # count wasm instructions so functions can have a `fuel` budget (slower)
    max_invoke_depth: int = Field(8, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)  # larger request bodies answer 413
    max_header_bytes: int = Field(8190, gt=0)  # one header line / field; larger answers 400
    max_headers: int = Field(100, gt=0)  # header count; more answers 400
    admin_token: Optional[str] = None  # when set, the admin API (not the health probes) needs this bearer token
    admin_allow_any_path: bool = False  # /wasm/install may only load modules inside functions_dirs
    watch: bool = True  # deploy, update and remove functions when files in functions_dirs change
    watch_debounce_ms: int = Field(300, ge=0)  # quiet time after the last write before a reload
    # On SIGTERM: stop accepting, then give in-flight requests this long to finish (aiohttp's two
    # drain phases cut one still running after at most twice this); then pools are closed (root
    # contexts retired) and state stores closed.
    shutdown_grace_ms: int = Field(10000, ge=0)
    # Processes serving the same listen port (SO_REUSEPORT) under a small supervisor; each has its
    # own instance pools (instance_num counts per worker), watcher and memory state stores.
    workers: int = Field(1, ge=1, le=1024)

    _check_listen = field_validator("listen", "admin")(_address)


class FilterConfig(_Model):
    """A proxy-wasm filter in front of a function (auth, header rewriting, rate limiting...)."""

    path: str
    name: Optional[str] = None
    plugin_config: Union[str, dict[str, Any]] = ""
    plugin_config_encoding: Literal["json", "proxy-wasm-map"] = "json"
    vm_config: Union[str, dict[str, Any]] = ""
    root_id: str = ""
    vm_id: str = ""


class FunctionConfig(_Model):
    name: Optional[str] = None  # defaults to the table key (or the file stem)
    path: Optional[str] = None  # defaults to <functions_dir>/<key>.wasm when found there
    instance_num: Optional[int] = None  # <= 0: one per CPU; None: [function_defaults]
    md5: Optional[str] = None
    engine: Literal["wasmtime", "wasmer"] = "wasmtime"  # both run on this host's engine
    plugin_config: Union[str, dict[str, Any]] = ""
    # How a table plugin_config reaches the guest (buffer 7): JSON (Envoy-style SDKs) or a serialized
    # proxy-wasm map (what Layotto hands its functions; used for Layotto config.json items).
    plugin_config_encoding: Literal["json", "proxy-wasm-map"] = "json"
    vm_config: Union[str, dict[str, Any]] = ""
    root_id: str = ""
    vm_id: str = ""
    timeout_ms: Optional[int] = Field(None, gt=0)
    memory_limit_mb: Optional[int] = Field(None, gt=0)
    max_queue: Optional[int] = Field(None, ge=0)
    # Capabilities: None allows all; a list allows only those names (others answer InternalFailure).
    allowed_state_stores: Optional[list[str]] = None
    allowed_invoke_targets: Optional[list[str]] = None
    allowed_upstreams: Optional[list[str]] = None
    fuel: Optional[int] = Field(None, gt=0)  # wasm instructions per request (needs server.fuel_metering)
    filters: list[FilterConfig] = []  # request callbacks run through these in order, then the function

    @field_validator("md5")
    @classmethod
    def _md5_hex(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (len(value) != 32 or any(c not in "0123456789abcdefABCDEF" for c in value)):
            raise ValueError("expected 32 hex digits")
        return value.lower() if value else value


class FunctionDefaults(_Model):
    instance_num: int = 0
    timeout_ms: int = Field(30000, gt=0)  # per-request guest deadline (epoch interruption) -> 504
    memory_limit_mb: int = Field(256, gt=0)  # per-instance linear memory cap; growth past it fails
    max_queue: int = Field(256, ge=0)  # requests waiting for a busy function; more -> 503 Retry-After


class MemoryStoreConfig(_Model):
    type: Literal["memory", "in-memory"]
    seed: dict[str, str] = {}


class RedisStoreConfig(_Model):
    type: Literal["redis"]
    address: str = "127.0.0.1:6379"
    password: str = ""
    db: int = Field(0, ge=0)
    timeout_ms: int = Field(1000, gt=0)
    pool_size: int = Field(32, gt=0)

    _check_address = field_validator("address")(_address)


StateStoreConfig = Annotated[Union[MemoryStoreConfig, RedisStoreConfig], Field(discriminator="type")]


class HostConfig(_Model):
    server: ServerConfig = ServerConfig()
    functions_dirs: list[str] = []
    function_defaults: FunctionDefaults = FunctionDefaults()
    functions: dict[str, FunctionConfig] = {}
    state: dict[str, StateStoreConfig] = {}
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

    def resolve(self, path: str) -> Path:
        return (Path(self.base_dir) / os.path.expanduser(path)).resolve()


def load_config(path: Optional[Path] = None) -> HostConfig:
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
        from .layotto_config import convert_layotto_config

        raw = convert_layotto_config(raw, path)
    raw.setdefault("base_dir", str(path.resolve().parent))
    return validate_config(raw, str(path))


def validate_config(raw: dict[str, Any], source: str = "config") -> HostConfig:
    try:
        return HostConfig.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
            problems.append(f"{location}: {item['msg']}")
        raise ConfigError(f"invalid config {source}:\n  " + "\n  ".join(problems)) from None

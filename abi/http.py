"""The HTTP exchange a stream context works on: what the client sent and what the guest answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from abi.maps import HeaderList, first_value


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str  # path with query string, as sent
    headers: HeaderList  # lower-case names, pseudo headers (:method, :path, :authority, :scheme) first
    body: bytes = b""
    trailers: HeaderList = field(default_factory=list)
    scheme: str = "http"
    source_address: str = ""
    source_port: int = 0
    destination_address: str = ""
    destination_port: int = 0
    # The host's trace context of this request (host/tracing/context.py), made when first needed.
    trace: object | None = None

    @classmethod
    def build(cls, method: str, path: str, headers: HeaderList, body: bytes = b"", *, authority: str = "",
              scheme: str = "http", lowered: bool = False, **extra: object) -> HttpRequest:
        """A request whose header map starts with Envoy's pseudo headers, as proxy-wasm guests expect.
        `lowered`: the header names are lower case already."""
        pseudo = [(":method", method), (":path", path), (":authority", authority), (":scheme", scheme)]
        pseudo += headers if lowered else [(k.lower(), v) for k, v in headers]
        return cls(method=method, path=path, headers=pseudo, body=body, scheme=scheme, **extra)  # type: ignore[arg-type]

    @property
    def url_path(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.path.split("?", 1)[1] if "?" in self.path else ""

    def header(self, name: str) -> str | None:
        return first_value(self.headers, name.lower())


@dataclass(slots=True)
class HttpResponse:
    status: int = 200
    headers: HeaderList = field(default_factory=list)
    body: bytes = b""
    trailers: HeaderList = field(default_factory=list)
    local_reply_details: str = ""  # set when the guest answered through proxy_send_local_response

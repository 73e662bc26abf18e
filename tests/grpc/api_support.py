"""What the runtime API tests share: a host with one component of every capability (memory backends
and a configuration file) on ephemeral ports, and WAT functions that show what a call turned into."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from host.config import validate_config
from tests.conftest import EXAMPLES, functions_dir
from tests.guest_wat import RET, WatGuest, serialize_map, write_guest

MAP_REQUEST_HEADERS = 0


def echo_guest() -> str:
    """Answers 200 with the request's method, path, content-type and header `x-trace`, then its
    body, each as an $emit_ret record (tests/guest_wat.py `Results`)."""
    g = WatGuest()
    reads = "\n    ".join(
        f'(call $emit_ret {g.call("proxy_get_header_map_value", MAP_REQUEST_HEADERS, g.s(name), RET)})'
        for name in (":method", ":path", "content-type", "x-trace"))
    body = f"""
    {reads}
    (call $emit_ret {g.call("proxy_get_buffer_bytes", 0, 0, 65536, RET)})
    (call $flush) (i32.const 0)"""
    return g.module(proxy_on_request_body=body,
                    proxy_on_request_headers="(i32.const 0)")


def refusing_guest(status: int = 404, body: str = "no such thing") -> str:
    """Answers `status` with `body` to every request."""
    g = WatGuest()
    headers = serialize_map([("content-type", "text/plain")])
    reply = g.call("proxy_send_local_response", status, g.s("refused"), g.s(body), g.s(headers), 0xFFFFFFFF)
    return g.module(proxy_on_request_headers=f"(drop {reply}) (i32.const 1)")


def api_folder(tmp_path: Path, *, with_functions: bool = True) -> Path:
    folder = functions_dir(tmp_path)
    if with_functions:
        shutil.copy(EXAMPLES / "function_2.wasm", folder / "function_2.wasm")  # id_2 reads state_demo
        write_guest(folder, "echo", echo_guest())
        write_guest(folder, "refuse", refusing_guest())
    return folder


def api_config(tmp_path: Path, *, with_functions: bool = True, server: dict[str, Any] | None = None,
               **sections: Any) -> Any:
    """Every capability configured once; the runtime API on ephemeral ports."""
    settings = tmp_path / "settings.toml"
    if not settings.exists():
        settings.write_text('greeting = "hello"\n"ops||v1||greeting" = "hello ops"\n')
    raw: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", "cache_dir": str(tmp_path / "cache"),
                   "grpc": "127.0.0.1:0", "dapr_http": "127.0.0.1:0", "watch": False, **(server or {})},
        "functions_dirs": [str(api_folder(tmp_path, with_functions=with_functions))],
        "function_defaults": {"instance_num": 2},
        "app_id": "api-test",
        "state": {"state_demo": {"type": "memory", "seed": {"book1": "100"}}},
        "lock": {"lockstore": {"type": "memory"}},
        "sequencer": {"ids": {"type": "memory"}},
        "pubsub": {"pubsub": {"type": "memory"}},
        "configuration": {"settings": {"type": "file", "path": str(settings)}},
    }
    raw.update(sections)  # a section given replaces the default one
    return validate_config(raw, "test")

"""proxy-wasm filters in front of a function: an auth filter answering 401 without a token (the
function is not called), rewriting the request on the way in and the response on the way out."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import make_config
from tests.guest_wat import WatGuest, serialize_map


def auth_filter() -> str:
    """Requests need `authorization: Bearer t0ken`; it is replaced by `x-user: alice` for the function."""
    g = WatGuest()
    auth, token = g.s("authorization"), g.s("Bearer t0ken")
    got = "(i32.load (i32.const 512))", "(i32.load (i32.const 516))"
    headers = serialize_map([("www-authenticate", "Bearer"), ("content-type", "text/plain")])
    message = g.s("token required\n")
    reject = g.call("proxy_send_local_response", 401, g.s("no token"), message, g.s(headers), 0xFFFFFFFF)
    g.extra.append(f"""  (func $token_ok (result i32)
    (if (i32.ne {g.call("proxy_get_header_map_value", 0, auth, (512, 516))} (i32.const 0))
      (then (return (i32.const 0))))
    (if (i32.ne {got[1]} (i32.const {token[1]})) (then (return (i32.const 0))))
    (i32.eqz (call $memcmp {got[0]} (i32.const {token[0]}) (i32.const {token[1]}))))
  (func $memcmp (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (if (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))) (then (return (i32.const 1))))
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next)))
    (i32.const 0))""")
    request = f"""
    (if (i32.eqz (call $token_ok))
      (then (drop {reject}) (return (i32.const 1))))
    (drop {g.call("proxy_remove_header_map_value", 0, auth)})
    (drop {g.call("proxy_add_header_map_value", 0, g.s("x-user"), g.s("alice"))})
    (i32.const 0)"""
    response = f"""
    (drop {g.call("proxy_add_header_map_value", 2, g.s("x-filtered"), g.s("auth"))})
    (i32.const 0)"""
    return g.module(proxy_on_request_headers=request, proxy_on_response_headers=response)


def shouting_filter() -> str:
    """A response filter: appends to the function's body on the way out."""
    g = WatGuest()
    suffix = g.s("-- checked\n")
    body = f"""
    (drop {g.call("proxy_set_buffer_bytes", 1, 0xFFFFFFFF, 0, suffix)})
    (i32.const 0)"""
    return g.module(proxy_on_response_body=body)


async def test_auth_filter_rejects_without_token_and_passes_with_it(serve, tmp_path: Path, c_guests: Path) -> None:
    folder = tmp_path / "functions"
    filters = tmp_path / "filters"
    folder.mkdir()
    filters.mkdir()
    shutil.copy(c_guests / "echo_headers.wasm", folder / "echo_headers.wasm")
    (filters / "auth.wat").write_text(auth_filter())
    (filters / "shout.wat").write_text(shouting_filter())
    config = make_config(tmp_path, folder, functions={"echo_headers": {
        "path": str(folder / "echo_headers.wasm"),
        "filters": [{"path": str(filters / "auth.wat")}, {"path": str(filters / "shout.wat")}]}})
    client = await serve(config)
    version = client.server.app.router.pick("echo_headers")

    status, headers, body = await client.call("echo_headers")
    assert (status, body) == (401, b"token required\n")
    assert headers["www-authenticate"] == "Bearer"
    assert version.stats.requests == 1 and version.pool.stats()["busy"] == 0

    status, headers, body = await client.call("echo_headers", headers={"Authorization": "Bearer wrong"})
    assert status == 401

    status, headers, body = await client.call("echo_headers", headers={"Authorization": "Bearer t0ken"})
    assert status == 200
    lines = body.decode().splitlines()
    assert "x-user: alice" in lines  # added by the filter before the function ran
    assert not any(line.startswith("authorization") for line in lines)  # and the token removed
    assert lines[-1] == "-- checked"  # the response went back through the second filter
    assert headers["x-filtered"] == "auth"  # and the first one
    info = (await client.admin_get("/functions/echo_headers"))[1]["versions"][0]
    assert info["filters"] == ["auth", "shout"]

"""Module shapes a host must accept: no proxy_get_id, malloc-only, _initialize/_start, local responses."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import functions_dir, make_config

INITIALIZE_WAT = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $started (mut i32) (i32.const 0))
  (data (i32.const 16) "started-by-$START_NAME")
  (func (export "$START_NAME") (global.set $started (i32.add (global.get $started) (i32.const 1))))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; answer "started-by-<name>" only if the start function ran exactly once
    (if (i32.eq (global.get $started) (i32.const 1))
      (then (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const $LEN)))))
    (i32.const 0)))
"""


def _start_module(folder: Path, name: str, start: str) -> None:
    text = INITIALIZE_WAT.replace("$START_NAME", start).replace("$LEN", str(len("started-by-" + start)))
    (folder / f"{name}.wat").write_text(text)


async def test_module_without_proxy_get_id_uses_file_stem(serve, tmp_path: Path, c_guests: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, c_guests / "no_id.wasm")))
    status, _, body = await client.call("no_id")
    assert (status, body) == (200, b"no-id ok\n")


async def test_module_exporting_only_malloc(serve, tmp_path: Path, c_guests: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, c_guests / "malloc_only.wasm")))
    status, _, body = await client.call("malloc_only")
    assert (status, body) == (200, b"book1=100")


async def test_initialize_and_start_run_once_per_instance(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    _start_module(folder, "reactor", "_initialize")
    _start_module(folder, "command", "_start")
    client = await serve(make_config(tmp_path, folder))
    for _ in range(3):  # several requests: the start function is not re-run per request
        assert (await client.call("reactor"))[2] == b"started-by-_initialize"
        assert (await client.call("command"))[2] == b"started-by-_start"


async def test_local_response_with_custom_status_and_headers(serve, tmp_path: Path, c_guests: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, c_guests / "local_response.wasm")))
    status, headers, body = await client.call("local_response")
    assert status == 418
    assert headers["x-custom"] == "yes"
    assert headers["content-type"] == "text/plain"
    assert body == b"short and stout\n"


async def test_request_headers_reach_the_guest(serve, tmp_path: Path, c_guests: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, c_guests / "echo_headers.wasm")))
    status, _, body = await client.call("echo_headers", "/p?q=1", headers={"X-Mixed-Case": "Value"})
    assert status == 200
    lines = body.decode().splitlines()
    assert lines[:2] == [":method: GET", ":path: /p?q=1"]
    assert "x-mixed-case: Value" in lines
    assert "id: echo_headers" in lines


async def test_hello_example(serve, tmp_path: Path) -> None:
    from tests.conftest import EXAMPLES

    client = await serve(make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm")))
    status, headers, body = await client.call("hello", "/greet?x=1", method="POST", headers={"greeting": "hej"})
    assert (status, body) == (200, b"hello method=POST path=/greet?x=1 greeting=hej\n")
    assert headers["x-hello"] == "1"


async def test_function_settings_in_the_main_config_without_a_path(serve, tmp_path: Path) -> None:
    from tests.conftest import EXAMPLES

    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, functions={"hello": {"instance_num": 3}}))
    assert client.server.app.router.pick("hello").pool.size == 3
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert status == 200


async def test_function_settings_for_a_module_that_is_not_there(serve, tmp_path: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path), functions={"ghost": {"instance_num": 1}}))
    status, readiness = await client.admin_get("/actuator/health/readiness")
    # Flagged as that function's failure (issue 15 item 12): the other functions still deploy.
    assert status == 503 and "no 'path', and no ghost.wasm" in readiness["details"]["failed"]["ghost"]

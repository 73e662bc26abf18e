"""Actuator health (Layotto's words): liveness is the process, readiness is every function and component."""

from __future__ import annotations

from pathlib import Path

from abi.engine import available_backends
from tests.conftest import EXAMPLES, functions_dir, make_config
from tests.guest_wat import failure


async def test_liveness_and_readiness_up(serve, tmp_path: Path) -> None:
    client = await serve(make_config(tmp_path, EXAMPLES))
    status, liveness = await client.admin_get("/actuator/health/liveness")
    assert (status, liveness["status"]) == (200, "UP")
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert (status, readiness["status"]) == (200, "UP")
    assert {"id_1", "id_2", "hello"} <= set(readiness["details"]["functions"])
    assert readiness["details"]["failed"] == {}
    assert readiness["details"]["components"]["state.state_demo"]["status"] == "UP"


async def test_corrupt_modules_make_readiness_down_while_good_ones_serve(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    (folder / "bad_magic.wasm").write_bytes(b"\x7fELF not a wasm module")
    hello = (EXAMPLES / "hello.wasm").read_bytes()
    (folder / "truncated.wasm").write_bytes(hello[:len(hello) // 2])
    (folder / "broken.wat").write_text("(module (func")
    client = await serve(make_config(tmp_path, folder))

    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert (status, readiness["status"]) == (503, "DOWN")
    failed = readiness["details"]["failed"]
    assert len(failed) == 3
    assert "bad magic number" in failure(failed, "bad_magic")
    assert "invalid module" in failure(failed, "truncated")
    assert "invalid WAT" in failure(failed, "broken")
    assert readiness["details"]["functions"] == ["hello"]
    # GET /functions tells the same story: hello serving, three refused with their reasons.
    status, functions = await client.admin_get("/functions")
    assert [f.get("id") for f in functions["functions"] if f.get("id")] == ["hello"]
    assert functions["failed"] == failed
    assert functions["engine_backend"] == available_backends()[0]  # native where it could be built

    status, _, body = await client.call("hello")
    assert (status, body) == (200, b"hello method=GET path=/ greeting=-\n")
    assert (await client.call("truncated"))[0] == 404
    # The process itself is fine: liveness stays UP.
    status, liveness = await client.admin_get("/actuator/health/liveness")
    assert (status, liveness["status"]) == (200, "UP")


async def test_unreachable_redis_makes_readiness_down_and_get_state_fail(serve, tmp_path: Path) -> None:
    # Nothing listens on port 1: every connection is refused at once.
    store = {"type": "redis", "address": "127.0.0.1:1", "timeout_ms": 300}
    client = await serve(make_config(tmp_path, EXAMPLES, state={"state_demo": store}))

    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert (status, readiness["status"]) == (503, "DOWN")
    component = readiness["details"]["components"]["state.state_demo"]
    assert component["status"] == "DOWN" and "127.0.0.1:1" in component["detail"]
    assert readiness["details"]["failed"] == {}  # every function deployed: the store is what is down

    # The guest gets InternalFailure (10) from proxy_get_state and says so.
    status, _, body = await client.call("id_2", method="POST", data=b"book1")
    assert (status, body) == (500, b"get_state failed: status 10\n")
    # id_1 -> id_2 fails in turn: the invoke answers status 10 too.
    status, _, body = await client.call("id_1", "/?name=book1")
    assert status != 200 and b"status 10" in body
    status, _, _ = await client.call("hello")
    assert status == 200

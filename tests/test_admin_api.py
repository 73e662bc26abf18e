"""Layotto's admin API (install / update / uninstall) and the function listings, with a bearer token."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import EXAMPLES, functions_dir, make_config


async def post(client, path: str, body, token: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.session.post(client.admin + path, json=body, headers=headers) as response:
        return response.status, await response.read()


async def test_install_update_uninstall_round_trip(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path)
    client = await serve(make_config(tmp_path, folder, server={"watch": False}))
    shutil.copy(EXAMPLES / "hello.wasm", folder / "greeter.wasm")
    assert (await client.call("hello"))[0] == 404

    status, body = await post(client, "/wasm/install", {
        "name": "greeter", "instance_num": 1,
        "vm_config": {"engine": "wasmtime", "path": str(folder / "greeter.wasm")}})
    assert (status, body) == (200, b"")
    assert (await client.call("hello"))[0] == 200  # the module reports id "hello"

    status, body = await post(client, "/wasm/update", {"name": "greeter", "instance_num": 3})
    assert (status, body) == (200, b"")
    status, listing = await client.admin_get("/functions")
    (entry,) = listing["functions"]
    assert entry["id"] == "hello" and entry["name"] == "greeter"
    assert entry["instances"]["configured"] == 3
    assert entry["sha256"] and entry["abi_version"] and entry["last_reload"]["outcome"] == "deployed"

    status, body = await post(client, "/wasm/uninstall", {"name": "greeter"})
    assert (status, body) == (200, b"")
    assert (await client.call("hello"))[0] == 404
    assert (await client.admin_get("/functions"))[1]["functions"] == []


async def test_admin_errors_are_500_with_a_reason(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, server={"watch": False}))
    status, body = await post(client, "/wasm/install", {"name": "x", "vm_config": {"path": "/etc/passwd"}})
    assert status == 500 and b"outside the functions folders" in body
    status, body = await post(client, "/wasm/update", {"name": "nope", "instance_num": 1})
    assert status == 500 and b"no function named 'nope'" in body
    status, body = await post(client, "/wasm/uninstall", {})
    assert status == 500 and b"'name'" in body
    (folder / "broken.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    status, body = await post(client, "/wasm/install", {"name": "broken",
                                                         "vm_config": {"path": str(folder / "broken.wasm")}})
    assert status == 500 and b"invalid module" in body
    async with client.session.post(client.admin + "/wasm/other", json={}) as response:
        assert response.status == 404


async def test_bearer_token_protects_the_admin_api_but_not_health(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, server={"admin_token": "s3cret", "watch": False}))
    assert (await post(client, "/wasm/update", {"name": "hello", "instance_num": 1}))[0] == 401
    assert (await post(client, "/wasm/update", {"name": "hello", "instance_num": 1}, "wrong"))[0] == 401
    assert (await post(client, "/wasm/update", {"name": "hello", "instance_num": 1}, "s3cret"))[0] == 200
    async with client.session.get(client.admin + "/functions") as response:
        assert response.status == 401
    assert (await client.admin_get("/actuator/health/readiness"))[0] == 200


async def test_an_updated_pool_size_survives_a_reload_of_the_file(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, server={"watch": False}, function_defaults={"instance_num": 1}))
    assert (await post(client, "/wasm/update", {"name": "hello", "instance_num": 3}))[0] == 200
    app = client.server.app
    await app.deployments.deploy(folder / "hello.wasm")  # what the watcher does on a file change
    assert app.router.pick("hello").pool.size == 3
    # Layotto's rule: instance_num <= 0 is one instance per CPU, whatever function_defaults say.
    assert (await post(client, "/wasm/update", {"name": "hello", "instance_num": 0}))[0] == 200
    assert app.router.pick("hello").pool.size == (os.cpu_count() or 1)
    await app.deployments.deploy(folder / "hello.wasm")
    assert app.router.pick("hello").pool.size == (os.cpu_count() or 1)


async def test_the_admin_router_answers_as_aiohttp_did(serve, tmp_path: Path) -> None:
    """The admin listener runs on host/http/protocol.py (issue 16): unknown paths 404, a known path with
    another method 405 naming the allowed ones, HEAD wherever GET is, ids percent-decoded, and a
    module over server.max_body_bytes refused before it is read."""
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm"),
                                     server={"admin_token": "s3cret", "max_body_bytes": 4096}))
    auth = {"Authorization": "Bearer s3cret"}
    session, admin = client.session, client.admin
    async with session.get(admin + "/nowhere", headers=auth) as response:
        assert (response.status, await response.text()) == (404, "404: Not Found")
    async with session.post(admin + "/functions/hello", headers=auth) as response:
        assert response.status == 405 and response.headers["Allow"] == "DELETE,GET,HEAD,PUT"
    async with session.head(admin + "/actuator/health/readiness") as response:  # no token needed
        assert response.status == 200 and response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await response.read() == b""
    async with session.get(admin + "/functions/hello", headers=auth) as response:
        body = await response.json()
        assert response.status == 200 and body["id"] == "hello" and body["versions"]
    async with session.get(admin + "/functions/he%2Fllo?x=1", headers=auth) as response:
        assert response.status == 404 and (await response.json())["function"] == "he/llo"
    async with session.get(admin + "/functions/hello") as response:
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    async with session.put(admin + "/functions/big", data=b"\0asm" + b"\0" * 8192, headers=auth) as response:
        assert response.status == 413
    assert not (tmp_path / "functions" / "big.wasm").exists()

"""The Layotto demo end to end: id_1 -> proxy_invoke_service -> id_2 -> proxy_get_state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from host.config import load_config
from tests.conftest import ENGINE_BACKENDS, EXAMPLES, IN_CI, functions_dir, make_config
from tests.services import unique_prefix


def _redis_or_skip() -> redis.Redis:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        if IN_CI:
            pytest.fail(f"Redis must run at 127.0.0.1:6379 in CI: {error}")
        pytest.skip(f"no Redis at 127.0.0.1:6379: {error}")
    return client


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
async def test_demo_with_memory_store(serve, tmp_path: Path, backend: str) -> None:
    client = await serve(make_config(tmp_path, EXAMPLES), engine_backend=backend)
    status, _, body = await client.call("id_1", "/?name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")
    # A key that does not exist is an empty value, as in Layotto.
    status, _, body = await client.call("id_1", "/?name=book2")
    assert (status, body) == (200, b"There are  inventories for book2.")


async def test_demo_body_instead_of_query(serve, tmp_path: Path) -> None:
    client = await serve(make_config(tmp_path, EXAMPLES))
    status, _, body = await client.call("id_1", "/", method="POST", data=b"name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")


@pytest.fixture
def redis_prefix():
    """A key prefix of this test's own (the store's literal `key_prefix`); its keys are deleted after."""
    r = _redis_or_skip()
    prefix = unique_prefix("demo")
    yield r, prefix
    for key in r.scan_iter(f"{prefix}||*"):
        r.delete(key)


@pytest.mark.redis
async def test_demo_with_redis(serve, tmp_path: Path, redis_prefix) -> None:
    r, prefix = redis_prefix
    r.set(f"{prefix}||book1", "100")  # a plain string, as `redis-cli set book1 100` writes it
    r.set(f"{prefix}||faas-test-book", "7")
    config = make_config(tmp_path, EXAMPLES, state={"state_demo": {"type": "redis", "address": "127.0.0.1:6379",
                                                                   "key_prefix": prefix}})
    client = await serve(config)
    status, _, body = await client.call("id_1", "/?name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")
    status, _, body = await client.call("id_1", "/?name=faas-test-book")
    assert (status, body) == (200, b"There are 7 inventories for faas-test-book.")


@pytest.mark.redis
async def test_layotto_config_json(serve, tmp_path: Path, redis_prefix) -> None:
    """Layotto's own config.json shape runs the demo unchanged (functions, instance_num, redis store)."""
    r, prefix = redis_prefix
    r.set(f"{prefix}||book1", "100")
    folder = functions_dir(tmp_path, EXAMPLES / "function_1.wasm", EXAMPLES / "function_2.wasm")
    layotto = json.loads((Path(__file__).parent.parent / "configs" / "layotto.json").read_text())
    stream_filter = layotto["servers"][0]["listeners"][0]["stream_filters"][0]["config"]
    stream_filter["function1"]["vm_config"]["path"] = str(folder / "function_1.wasm")
    stream_filter["function2"]["vm_config"]["path"] = str(folder / "function_2.wasm")
    import hashlib
    stream_filter["function2"]["vm_config"]["md5"] = hashlib.md5((folder / "function_2.wasm").read_bytes()).hexdigest()
    layotto["servers"][0]["listeners"][0]["address"] = "127.0.0.1:0"
    grpc_config = layotto["servers"][0]["listeners"][1]["filter_chains"][0]["filters"][0]["config"]["grpc_config"]
    grpc_config["state"]["state_demo"]["metadata"]["keyPrefix"] = prefix  # Layotto's own metadata key
    path = tmp_path / "config.json"
    path.write_text(json.dumps(layotto))
    config = load_config(path)
    assert config.functions["function1"].instance_num == 1
    assert config.state["state_demo"].type == "redis"
    config = config.model_copy(update={"server": config.server.model_copy(
        update={"admin": "127.0.0.1:0", "cache_dir": str(tmp_path / "cache")})})
    client = await serve(config)
    status, _, body = await client.call("id_1", "/?name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")


async def test_md5_mismatch_is_refused(serve, tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    config = make_config(tmp_path, None, functions={"hello": {"path": str(folder / "hello.wasm"), "md5": "0" * 32}})
    client = await serve(config)
    status, _, _ = await client.call("hello")
    assert status == 404
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert status == 503 and readiness["status"] == "DOWN"
    assert "md5" in readiness["details"]["failed"]["hello"]

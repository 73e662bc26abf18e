"""The Layotto demo across languages, over real HTTP: C, Python and JavaScript functions invoking each
other (module -> component, component -> module, component -> component), with the state in memory
and in Redis. Same ids as the C demo (id_1 asks id_2, which reads state_demo)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.components_wasm.cw_support import (
    BUILD_TIMEOUT,
    C_FUNCTION_1,
    C_FUNCTION_2,
    Components,
    components,
    config_for,
    folder_of,
)
from tests.services import REDIS_ADDRESS, require_redis, unique_prefix

pytestmark = BUILD_TIMEOUT
__all__ = ["components"]  # the session fixture, used by name

# (id_1, id_2): which implementation serves each id.
CHAINS = {
    "c-to-python": ("c", "python"),
    "javascript-to-c": ("javascript", "c"),
    "javascript-to-python": ("javascript", "python"),
}


def _chain_folder(tmp_path: Path, built: Components, chain: str) -> Path:
    first, second = CHAINS[chain]
    id_1 = C_FUNCTION_1 if first == "c" else built.example("function_1")
    id_2 = C_FUNCTION_2 if second == "c" else built.example("function_2")
    # Both kinds are called function_N.wasm: a folder holds one of each id.
    return folder_of(tmp_path, id_1, id_2)


@pytest.mark.parametrize("chain", sorted(CHAINS))
async def test_mixed_language_chain_answers_with_memory_state(serve, tmp_path: Path, components: Components,
                                                              chain: str) -> None:
    client = await serve(config_for(tmp_path, _chain_folder(tmp_path, components, chain)))
    status, _, body = await client.call("id_1", "/?name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")
    # A missing key is an empty value in every language, as in Layotto.
    status, _, body = await client.call("id_1", "/?name=book2")
    assert (status, body) == (200, b"There are  inventories for book2.")
    # The body instead of the query string, and a missing name.
    status, _, body = await client.call("id_1", "/", method="POST", data=b"name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")
    status, _, body = await client.call("id_1", "/")
    assert (status, body) == (400, b"missing query parameter 'name'\n")


@pytest.fixture
def redis_keys():
    require_redis()
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    prefix = unique_prefix("cw-demo")
    yield client, prefix
    for key in client.scan_iter(f"{prefix}||*"):
        client.delete(key)
    client.close()


@pytest.mark.redis
@pytest.mark.parametrize("chain", sorted(CHAINS))
async def test_mixed_language_chain_answers_with_redis_state(serve, tmp_path: Path, components: Components,
                                                             redis_keys, chain: str) -> None:
    client_redis, prefix = redis_keys
    client_redis.set(f"{prefix}||book1", "100")  # as `redis-cli set book1 100` writes it
    client_redis.set(f"{prefix}||cw-book", "7")
    state = {"state_demo": {"type": "redis", "address": REDIS_ADDRESS, "key_prefix": prefix}}
    client = await serve(config_for(tmp_path, _chain_folder(tmp_path, components, chain), state=state))
    status, _, body = await client.call("id_1", "/?name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")
    status, _, body = await client.call("id_1", "/?name=cw-book")
    assert (status, body) == (200, b"There are 7 inventories for cw-book.")


async def test_an_unknown_target_answers_502_from_javascript(serve, tmp_path: Path, components: Components) -> None:
    """id_2 missing: the JavaScript function sees the runtime's error (not-found) and answers 502."""
    client = await serve(config_for(tmp_path, folder_of(tmp_path, components.example("function_1"))))
    status, _, body = await client.call("id_1", "/?name=book1")
    assert status == 502
    assert body.startswith(b"invoke id_2 failed: not-found: "), body

"""The Python example that uses state with ETags and publish (examples/functions/python/stock.py),
concurrent requests across instances and languages (each guest thread's runtime calls reach its own
instance), and the WAT guest under deadlines and fuel (no language runtime involved)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from host.components.pubsub.cloudevents import parse
from host.functions.components import output
from tests.components_wasm.cw_support import BUILD_TIMEOUT, C_FUNCTION_2, Components, components, config_for, folder_of

pytestmark = BUILD_TIMEOUT
__all__ = ["components"]

ECHO = Path(__file__).resolve().parent / "guests" / "cw_echo.wat"


async def test_stock_reserves_with_etags_and_publishes_each_reservation(serve, tmp_path: Path,
                                                                        components: Components) -> None:
    folder = folder_of(tmp_path, components.example("stock"))
    config = config_for(tmp_path, folder, state={"statestore": {"type": "memory"}},
                        pubsub={"pubsub": {"type": "memory"}}, functions={"stock": {"instance_num": 4}})
    client = await serve(config)
    subscription = client.server.app.components.of("pubsub")["pubsub"].subscribe("stock", "test", "test")
    try:
        status, _, body = await client.call("stock", "/?item=book1", method="PUT", data=b"12")
        assert (status, json.loads(body)) == (200, {"item": "book1", "stock": 12})
        # Concurrent reservations on four instances: each read-modify-write carries the ETag it read,
        # so a lost update is a conflict and a retry, never a double sale.
        answers = await asyncio.gather(*(client.call("stock", "/?item=book1", method="POST") for _ in range(16)))
        sold = [json.loads(body)["stock"] for status, _, body in answers if status == 200]
        refused = sorted(status for status, _, _ in answers if status != 200)
        assert set(refused) <= {409, 503}, answers
        assert len(sold) == len(set(sold)) and len(sold) <= 12
        status, _, body = await client.call("stock", "/?item=book1")
        assert (status, json.loads(body)["stock"]) == (200, 12 - len(sold))
        assert client.server.app.components.of("state")["statestore"].get("stock-book1").value == \
            str(12 - len(sold)).encode()
        events = [json.loads(parse(m.data).data) for m in subscription.fetch(100, 1.0)]
        assert sorted(e["stock"] for e in events) == sorted(sold)
        while (await client.call("stock", "/?item=book1", method="POST"))[0] == 200:
            pass
        status, _, body = await client.call("stock", "/?item=book1", method="POST")
        assert (status, json.loads(body)) == (409, {"item": "book1", "error": "out of stock"})
        assert (await client.call("stock", "/?item=book9"))[0] == 404
        assert (await client.call("stock", "/"))[0] == 400
        assert (await client.call("stock", "/?item=book1", method="PUT", data=b"many"))[0] == 400
    finally:
        subscription.close()


async def test_concurrent_chains_across_languages_answer_correctly(serve, tmp_path: Path,
                                                                   components: Components) -> None:
    folder = folder_of(tmp_path, components.example("function_1"), components.example("function_2"))
    seed = {f"book{i}": str(i * 7) for i in range(20)}
    client = await serve(config_for(tmp_path, folder, state={"state_demo": {"type": "memory", "seed": seed}},
                                    function_defaults={"instance_num": 3}))
    answers = await asyncio.gather(*(client.call("id_1", f"/?name=book{i % 20}") for i in range(60)))
    for i, (status, _, body) in enumerate(answers):
        assert (status, body) == (200, f"There are {(i % 20) * 7} inventories for book{i % 20}.".encode())


async def test_a_component_and_a_module_share_state(serve, tmp_path: Path, components: Components) -> None:
    """What the Python probe writes, the C id_2 reads: both reach the same state component."""
    client = await serve(config_for(tmp_path, folder_of(tmp_path, components.probe, C_FUNCTION_2)))
    calls = [{"call": "set-state", "args": ["state_demo", "shared", {"hex": b"42".hex()}, None]}]
    status, _, body = await client.call("cw_probe", "/calls", method="POST", data=json.dumps(calls).encode())
    assert (status, json.loads(body)) == (200, [{"ok": None}])
    status, _, body = await client.call("id_2", "/", method="POST", data=b"shared")
    assert (status, body) == (200, b"42")


async def test_deadline_and_fuel_stop_a_spinning_component(serve, tmp_path: Path) -> None:
    folder = folder_of(tmp_path, ECHO, names={ECHO: "echo.wat"})
    pipes = output.collector().pipes()
    client = await serve(config_for(tmp_path, folder, server={"fuel_metering": True, "cache_dir": str(tmp_path / "c")},
                                    functions={"echo": {"timeout_ms": 5000, "fuel": 5_000_000, "instance_num": 1}}))
    status, _, body = await client.call("echo", "/spin")
    assert status == 504 and b"fuel" in body, body
    assert (await client.call("echo", "/", method="POST", data=b"after"))[2] == b"after"
    await client.server.stop()
    # Stopping the host freed every instance's store: their output pipes ended.
    for _ in range(200):
        if output.collector().pipes() <= pipes:
            break
        await asyncio.sleep(0.01)
    assert output.collector().pipes() <= pipes

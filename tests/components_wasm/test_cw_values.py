"""Every type of the function world, in both directions, through a Python component over real HTTP:
the request record (method, path, header list, body bytes) going in, the response record coming out,
and each runtime function's parameters going out and results coming back — ok payloads (none and
some options, records, bytes, bool, u64, enum, string) and each case of the error variant — against
the host's real memory/file components, read back from those components."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from host.components.pubsub.cloudevents import parse
from tests.components_wasm.cw_support import BUILD_TIMEOUT, C_HELLO, Components, components, config_for, folder_of

pytestmark = BUILD_TIMEOUT
__all__ = ["components"]

ALL_BYTES = bytes(range(256))
LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}


def hexed(data: bytes) -> dict[str, str]:
    return {"hex": data.hex()}


def call(name: str, *args: Any) -> dict[str, Any]:
    return {"call": name, "args": list(args)}


async def _runtime_client(serve, tmp_path: Path, components: Components, **function: Any):
    (tmp_path / "settings.toml").write_text('greeting = "hello ✓"\n')
    folder = folder_of(tmp_path, components.probe, C_HELLO)
    config = config_for(
        tmp_path, folder, state={"statestore": {"type": "memory"}, "other": {"type": "memory"}},
        pubsub={"bus": {"type": "memory"}}, lock={"lockstore": {"type": "memory"}},
        sequencer={"ids": {"type": "memory", "bigger_than": {"huge": (1 << 64) - 2}}},
        configuration={"settings": {"type": "file", "path": str(tmp_path / "settings.toml")}},
        functions={"cw_probe": {"instance_num": 1, **function}}, app_id="shop")
    return await serve(config)


async def _calls(client, *calls: dict[str, Any]) -> list[dict[str, Any]]:
    status, _, body = await client.call("cw_probe", "/calls", method="POST", data=json.dumps(calls).encode())
    assert status == 200, body
    return json.loads(body)


def _cases(outcomes: list[dict[str, Any]]) -> list[Any]:
    """Each outcome's ok value, or the error's case."""
    return [o["ok"] if "ok" in o else ("err", o["err"]["case"]) for o in outcomes]


async def test_the_request_record_reaches_the_guest_whole(serve, tmp_path: Path, components: Components) -> None:
    client = await serve(config_for(tmp_path, folder_of(tmp_path, components.probe)))
    body = ALL_BYTES * 4 + "naïve ✓".encode()
    status, headers, answer = await client.call(
        "cw_probe", "/echo?name=book1&x=%C3%A9", method="PUT", data=body,
        headers={"X-Repeat": "one", "x-unicode": "caf\u00e9"})
    assert status == 200, answer
    echoed = json.loads(answer)
    assert (echoed["method"], echoed["path"]) == ("PUT", "/echo?name=book1&x=%C3%A9")
    assert bytes.fromhex(echoed["body"]) == body
    names = [name for name, _ in echoed["headers"]]
    assert not any(name.startswith(":") for name in names)  # pseudo headers are the record's fields
    assert all(name == name.lower() for name in names)
    pairs = {name: value for name, value in echoed["headers"]}
    assert pairs["x-repeat"] == "one" and pairs["id"] == "cw_probe"
    assert pairs["content-length"] == str(len(body))
    # The response's header list keeps repeated names, in order.
    assert headers.getall("x-echo") == ["1", "2"]
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("size", [0, 1, 1 << 20])
async def test_bodies_of_any_size_cross_both_ways(serve, tmp_path: Path, components: Components, size: int) -> None:
    client = await serve(config_for(tmp_path, folder_of(tmp_path, components.probe)))
    body = (ALL_BYTES * (size // 256 + 1))[:size]
    wanted = {"status": 201, "headers": [["x-a", "1"], ["x-a", "2"], ["content-type", "application/octet-stream"]],
              "body": body.hex()}
    status, headers, answer = await client.call("cw_probe", "/answer", method="POST", data=json.dumps(wanted).encode())
    assert (status, answer) == (201, body)
    assert headers.getall("x-a") == ["1", "2"]
    status, _, echoed = await client.call("cw_probe", "/echo", method="POST", data=body)
    assert status == 200 and bytes.fromhex(json.loads(echoed)["body"]) == body


@pytest.mark.parametrize(("status", "expected"), [(200, 200), (204, 204), (418, 418), (599, 599), (0, 500),
                                                  (1000, 500)])
async def test_the_status_is_the_guests_when_http_can_carry_it(serve, tmp_path: Path, components: Components,
                                                               status: int, expected: int) -> None:
    client = await serve(config_for(tmp_path, folder_of(tmp_path, components.probe)))
    wanted = {"status": status, "headers": [], "body": "6f6b" if status != 204 else ""}
    answered, _, _ = await client.call("cw_probe", "/answer", method="POST", data=json.dumps(wanted).encode())
    assert answered == expected


async def test_state_calls_carry_options_records_etags_and_errors(serve, tmp_path: Path,
                                                                  components: Components) -> None:
    client = await _runtime_client(serve, tmp_path, components)
    store = client.server.app.components.of("state")["statestore"]
    key = "ключ-🙂"
    outcomes = await _calls(
        client,
        call("get-state", "statestore", key),  # none
        call("set-state", "statestore", key, hexed(ALL_BYTES), None),  # last write wins
        call("get-state", "statestore", key),  # some(record)
        call("set-state", "statestore", key, hexed(b"x"), "not-the-etag"),  # conflict
        call("get-state", "nowhere", key),  # not-found
        call("set-state", "statestore", "", hexed(b"x"), None),  # bad-argument
    )
    stored = store.get(key)
    assert stored.value == ALL_BYTES
    assert _cases(outcomes) == [None, None, {"value": hexed(ALL_BYTES), "etag": stored.etag}, ("err", "conflict"),
                                ("err", "not-found"), ("err", "bad-argument")]
    assert "nowhere" in outcomes[4]["err"]["message"]
    etag = stored.etag
    outcomes = await _calls(
        client,
        call("set-state", "statestore", key, hexed(b"v2"), etag),  # the right etag
        call("delete-state", "statestore", key, etag),  # now stale: conflict
        call("get-state", "statestore", key),
    )
    fresh = store.get(key)
    assert _cases(outcomes) == [None, ("err", "conflict"), {"value": hexed(b"v2"), "etag": fresh.etag}]
    assert fresh.etag != etag
    outcomes = await _calls(client, call("delete-state", "statestore", key, fresh.etag),
                            call("delete-state", "statestore", key, None), call("get-state", "statestore", key))
    assert _cases(outcomes) == [None, None, None]
    assert store.get(key) is None


async def test_the_other_runtime_calls_carry_their_types(serve, tmp_path: Path, components: Components,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    client = await _runtime_client(serve, tmp_path, components)
    subscription = client.server.app.components.of("pubsub")["bus"].subscribe("orders", "test", "test")
    try:
        with caplog.at_level(1, logger="wasm.guest"):
            outcomes = await _calls(
                client,
                call("invoke", "hello", "greet", hexed(b"")),  # a C module answering 200
                call("invoke", "no-such-function", "", hexed(b"")),
                call("invoke", "cw_probe", "", hexed(b"")),  # itself, its only instance busy: a cycle
                call("publish", "bus", "orders", hexed(b'{"n": 1}'), "application/json"),
                call("publish", "nowhere", "orders", hexed(b"x"), "text/plain"),
                call("publish", "bus", "", hexed(b"x"), "text/plain"),
                call("try-lock", "lockstore", "res", "alice", 10),
                call("try-lock", "lockstore", "res", "bob", 10),
                call("unlock", "lockstore", "res", "bob"),
                call("unlock", "lockstore", "res", "alice"),
                call("unlock", "lockstore", "res", "alice"),
                call("try-lock", "lockstore", "res", "alice", 0),
                call("next-id", "ids", "order"),
                call("next-id", "ids", "order"),
                call("next-id", "nowhere", "order"),
                call("next-id", "ids", "huge"),  # a u64 past i64
                call("next-id", "ids", "huge"),  # past u64: the host refuses it
                call("get-configuration", "settings", "greeting"),
                call("get-configuration", "settings", "missing"),
                call("get-configuration", "nowhere", "greeting"),
                call("log", "warn", "a warning from the guest ✓"),
                *(call("log", level, f"a {level} line") for level in LEVELS),
            )
        status, _, hello = await client.call("hello", "/greet")
        assert status == 200
        assert _cases(outcomes) == [
            hexed(hello), ("err", "not-found"), ("err", "internal"),
            None, ("err", "not-found"), ("err", "bad-argument"),
            True, False, "held-by-other", "unlocked", "not-locked", ("err", "bad-argument"),
            1, 2, ("err", "not-found"), (1 << 64) - 1, ("err", "internal"),
            "hello ✓", None, ("err", "not-found"),
            None, *[None] * len(LEVELS)]
        logged = {r.getMessage(): r.levelno for r in caplog.records if r.name == "wasm.guest"}
        assert logged["[cw_probe] a warning from the guest ✓"] == logging.WARNING
        assert {level: logged[f"[cw_probe] a {level} line"] for level in LEVELS} == LEVELS
        [message] = subscription.fetch(10, 1.0)
        event = parse(message.data)
        assert (event.topic, event.pubsubname, event.source, event.datacontenttype) == \
            ("orders", "bus", "shop", "application/json")
        assert json.loads(event.data) == {"n": 1}
    finally:
        subscription.close()


async def test_allow_lists_refuse_names_as_unknown(serve, tmp_path: Path, components: Components) -> None:
    client = await _runtime_client(serve, tmp_path, components, allowed_state_stores=["statestore"],
                                   allowed_invoke_targets=[], allowed_pubsubs=["elsewhere"],
                                   allowed_lock_stores=[], allowed_sequencers=[], allowed_configuration_stores=[])
    outcomes = await _calls(
        client,
        call("get-state", "statestore", "k"),
        call("get-state", "other", "k"),  # configured, but not allowed
        call("invoke", "hello", "", hexed(b"")),
        call("publish", "bus", "orders", hexed(b"x"), "text/plain"),
        call("try-lock", "lockstore", "res", "alice", 10),
        call("unlock", "lockstore", "res", "alice"),
        call("next-id", "ids", "order"),
        call("get-configuration", "settings", "greeting"),
        call("get-state", "nowhere", "k"),  # not configured at all
    )
    assert _cases(outcomes) == [None, *[("err", "not-found")] * 8]
    # Refused and unknown read alike, and name nothing else (the host's message lists the stores).
    refused, unknown = outcomes[1]["err"]["message"], outcomes[8]["err"]["message"]
    assert refused.replace("'other'", "'nowhere'") == unknown
    assert "statestore" not in refused + unknown

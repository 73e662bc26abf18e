"""The runtime host imports (abi/IMPORTS.md) from a WAT guest through a real server: every status
they promise — Ok, NotFound for an unknown store, BadArgument, CasMismatch — and every result,
over memory components, and what they leave in the components."""

from __future__ import annotations

import json
from pathlib import Path

from host.components.pubsub.cloudevents import parse
from tests.conftest import functions_dir, make_config
from tests.guest_wat import RET, U32_A, U32_B, U64, Results, WatGuest, write_guest

OK, NOT_FOUND, BAD_ARGUMENT, CAS_MISMATCH = 0, 1, 2, 8
LOCK_RESULT = "(i32.load (i32.const 520))"  # U32_A, where proxy_try_lock / proxy_unlock write


def next_id(g: WatGuest) -> str:
    """proxy_get_next_id's status, then the low 32 bits of the id it wrote."""
    call = g.call("proxy_get_next_id", g.s("ids"), g.s("order"), U64)
    return f"(call $emit {call}) (call $emit (i32.load (i32.const {U64})))"


def _guest(g: WatGuest) -> str:
    store, key, unknown = g.s("statestore"), g.s("k"), g.s("nope")
    empty = (0, 0)

    def etag_out() -> str:  # the etag a get_state_with_etag returned, as emitted bytes
        return "(call $emit_bytes (i32.load (i32.const 520)) (i32.load (i32.const 524)))"

    def get(key_arg: tuple[int, int]) -> str:
        return (f"(call $emit_ret {g.call('proxy_get_state_with_etag', store, key_arg, RET, (U32_A, U32_B))})"
                f"\n    {etag_out()}")

    def set_(value: str, etag: str, store_arg: tuple[int, int] = store) -> str:
        etag_arg = g.s(etag) if etag else empty
        return f"(call $emit {g.call('proxy_set_state', store_arg, key, g.s(value), etag_arg)})"

    lock, res = g.s("lockstore"), g.s("orders")
    event, json_type = g.s('{"n":1}'), g.s("application/json")
    calls = [
        get(key),  # missing: Ok, empty value, empty etag
        set_("v1", ""),
        get(key),  # v1, etag 1
        set_("v2", "999"),  # a stale etag: CasMismatch
        set_("v2", "1"),
        set_("v", "", unknown),  # unknown store: NotFound
        f"(call $emit {g.call('proxy_delete_state', store, key, g.s('1'))})",  # stale: CasMismatch
        f"(call $emit {g.call('proxy_delete_state', store, g.s(''), empty)})",  # empty key: BadArgument
        get(key),  # still v2, etag 2
        f"(call $emit {g.call('proxy_publish_event', g.s('bus'), g.s('orders'), event, json_type)})",
        f"(call $emit {g.call('proxy_publish_event', unknown, g.s('orders'), g.s('x'), empty)})",
        f"(call $emit {g.call('proxy_publish_event', g.s('bus'), empty, g.s('x'), empty)})",
        f"(call $emit {g.call('proxy_try_lock', lock, res, g.s('alice'), 10, U32_A)}) (call $emit {LOCK_RESULT})",
        f"(call $emit {g.call('proxy_try_lock', lock, res, g.s('bob'), 10, U32_A)}) (call $emit {LOCK_RESULT})",
        f"(call $emit {g.call('proxy_unlock', lock, res, g.s('bob'), U32_A)}) (call $emit {LOCK_RESULT})",
        f"(call $emit {g.call('proxy_unlock', lock, res, g.s('alice'), U32_A)}) (call $emit {LOCK_RESULT})",
        f"(call $emit {g.call('proxy_unlock', lock, res, g.s('alice'), U32_A)}) (call $emit {LOCK_RESULT})",
        f"(call $emit {g.call('proxy_try_lock', lock, res, g.s('alice'), 0, U32_A)})",  # expiry 0: BadArgument
        next_id(g),
        next_id(g),
        f"(call $emit {g.call('proxy_get_next_id', unknown, g.s('order'), U64)})",
        f"(call $emit_ret {g.call('proxy_get_configuration#runtime', g.s('settings'), g.s('greeting'), RET)})",
        f"(call $emit {g.call('proxy_get_configuration#runtime', g.s('settings'), g.s('missing'), RET)})",
    ]
    body = "\n    ".join(calls)
    return g.module(proxy_on_request_headers=f"{body}\n    (call $flush)\n    (i32.const 0)")


async def test_runtime_imports_answer_their_documented_statuses_and_results(serve, tmp_path: Path) -> None:
    g = WatGuest()
    folder = functions_dir(tmp_path)
    write_guest(folder, "runtime_calls", _guest(g))
    (tmp_path / "settings.toml").write_text('greeting = "hello"\n')
    config = make_config(tmp_path, folder, state={"statestore": {"type": "memory"}},
                         pubsub={"bus": {"type": "memory"}}, lock={"lockstore": {"type": "memory"}},
                         sequencer={"ids": {"type": "memory"}},
                         configuration={"settings": {"type": "file", "path": str(tmp_path / "settings.toml")}},
                         app_id="shop")
    client = await serve(config)
    subscription = client.server.app.components.of("pubsub")["bus"].subscribe("orders", "test", "test")
    try:
        status, _, body = await client.call("runtime_calls")
        assert status == 200, body
        r = Results(body)
        assert (r.ret(), r.bytes()) == ((OK, b""), b"")  # a missing key: empty value and etag
        assert r.u32() == OK
        assert (r.ret(), r.bytes()) == ((OK, b"v1"), b"1")
        assert [r.u32(), r.u32(), r.u32()] == [CAS_MISMATCH, OK, NOT_FOUND]
        assert [r.u32(), r.u32()] == [CAS_MISMATCH, BAD_ARGUMENT]
        assert (r.ret(), r.bytes()) == ((OK, b"v2"), b"2")
        assert [r.u32(), r.u32(), r.u32()] == [OK, NOT_FOUND, BAD_ARGUMENT]
        locks = [(r.u32(), r.u32()) for _ in range(5)]
        assert locks == [(OK, 1), (OK, 0), (OK, 2), (OK, 0), (OK, 1)]  # acquired, held, other's, unlocked, free
        assert r.u32() == BAD_ARGUMENT
        assert [(r.u32(), r.u32()), (r.u32(), r.u32()), r.u32()] == [(OK, 1), (OK, 2), NOT_FOUND]
        assert r.ret() == (OK, b"hello")
        assert r.u32() == NOT_FOUND and r.done()

        # What the calls left behind, read from the same components.
        store = client.server.app.components.of("state")["statestore"]
        assert (store.get("k").value, store.get("k").etag) == (b"v2", "2")
        [message] = subscription.fetch(10, 1.0)
        event = parse(message.data)
        assert (event.topic, event.pubsubname, event.source, event.datacontenttype) == \
            ("orders", "bus", "shop", "application/json")
        assert json.loads(event.data) == {"n": 1}
    finally:
        subscription.close()

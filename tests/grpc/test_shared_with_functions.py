"""A wasm function and a gRPC client of the runtime API share components: each sees the other's
state writes and locks, and an event published over gRPC reaches a subscribed function (which
records it with a state write the gRPC client then reads)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2_grpc
from tests.grpc.api_support import api_config
from tests.guest_wat import RET, U32_A, Results, WatGuest, write_guest

TIMEOUT = 5.0


def recorder_guest() -> str:
    """Stores its request body under state key `from-wasm` (proxy_set_state) and answers 200."""
    g = WatGuest()
    body = f"""
    (call $emit {g.call("proxy_get_buffer_bytes", 0, 0, 65536, RET)})
    (call $emit {g.call("proxy_set_state", g.s("state_demo"), g.s("from-wasm"),
                        f"(i32.load (i32.const {RET[0]}))", f"(i32.load (i32.const {RET[1]}))", (0, 0))})
    (call $flush) (i32.const 0)"""
    return g.module(proxy_on_request_body=body, proxy_on_request_headers="(i32.const 0)")


def locker_guest() -> str:
    """Takes lock `shared` in `lockstore` as owner `wasm` for 30 s: records the status and `acquired`."""
    g = WatGuest()
    body = f"""
    (call $emit {g.call("proxy_try_lock", g.s("lockstore"), g.s("shared"), g.s("wasm"), 30, U32_A)})
    (call $emit (i32.load (i32.const {U32_A})))
    (call $flush) (i32.const 0)"""
    return g.module(proxy_on_request_headers=body)


async def test_functions_and_grpc_clients_see_each_others_writes_locks_and_events(serve, tmp_path: Path) -> None:
    config = api_config(tmp_path, subscriptions=[{"function": "recorder", "pubsub": "pubsub", "topic": "to-wasm",
                                                  "backoff_ms": 50}])
    folder = Path(config.functions_dirs[0])
    write_guest(folder, "recorder", recorder_guest())
    write_guest(folder, "locker", locker_guest())
    client = await serve(config)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{client.server.grpc_port}") as channel:
        stub = runtime_pb2_grpc.RuntimeStub(channel)

        # gRPC writes, the function (function_2: proxy_get_state) reads.
        await stub.SaveState(pb.SaveStateRequest(store_name="state_demo", states=[
            pb.StateItem(key="book1", value=b"250")]), timeout=TIMEOUT)
        assert (await client.call("id_2", method="POST", data=b"book1"))[2] == b"250"

        # The function writes (proxy_set_state), gRPC reads.
        status, _, body = await client.call("recorder", method="POST", data=b"written by wasm")
        recorded = Results(body)
        assert status == 200 and (recorded.u32(), recorded.u32()) == (0, 0)  # read the body, stored it
        got = await stub.GetState(pb.GetStateRequest(store_name="state_demo", key="from-wasm"), timeout=TIMEOUT)
        assert got.data == b"written by wasm"

        # The function's lock excludes the gRPC client; the owner name unlocks it from either side.
        r = Results((await client.call("locker"))[2])
        assert (r.u32(), r.u32()) == (0, 1)
        assert not (await stub.TryLock(pb.TryLockRequest(store_name="lockstore", resource_id="shared",
                                                         lock_owner="grpc", expire=5), timeout=TIMEOUT)).success
        unlocked = await stub.Unlock(pb.UnlockRequest(store_name="lockstore", resource_id="shared",
                                                      lock_owner="wasm"), timeout=TIMEOUT)
        assert unlocked.status == pb.UnlockResponse.SUCCESS

        # An event published over gRPC reaches the subscribed function, which records its data.
        await stub.PublishEvent(pb.PublishEventRequest(pubsub_name="pubsub", topic="to-wasm", data=b"an event",
                                                       data_content_type="text/plain"), timeout=TIMEOUT)
        for _ in range(100):
            got = await stub.GetState(pb.GetStateRequest(store_name="state_demo", key="from-wasm"), timeout=TIMEOUT)
            if got.data == b"an event":
                break
            await asyncio.sleep(0.05)
        assert got.data == b"an event"

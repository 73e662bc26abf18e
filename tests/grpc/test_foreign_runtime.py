"""The runtime API as foreign functions: a WAT guest calls `proxy_call_foreign_function` with
`runtime.v1.<Method>` and a serialized Layotto request (built here with the generated messages and
embedded as data), and gets the serialized response and the statuses abi/IMPORTS.md documents:
1 unknown method / store / refused name, 2 unparseable request or bad arguments, 8 ETag mismatch."""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import Message

from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from tests.grpc.api_support import api_config
from tests.guest_wat import RET, Results, WatGuest, write_guest

OK, NOT_FOUND, BAD_ARGUMENT, CAS_MISMATCH = 0, 1, 2, 8


def calls_guest(calls: list[tuple[str, bytes]]) -> str:
    """Calls each (name, request bytes) in order, recording status and result bytes."""
    g = WatGuest()
    body = "\n    ".join(f'(call $emit_ret {g.call("proxy_call_foreign_function", g.s(name), g.s(args), RET)})'
                         for name, args in calls)
    return g.module(proxy_on_request_headers=f"{body}\n    (call $flush) (i32.const 0)")


def req(message: Message) -> bytes:
    return message.SerializeToString()


async def test_state_lock_and_invoke_through_foreign_calls(serve, tmp_path: Path) -> None:
    save = pb.SaveStateRequest(store_name="state_demo", states=[pb.StateItem(key="fk", value=b"from wasm")])
    stale = pb.SaveStateRequest(store_name="state_demo", states=[
        pb.StateItem(key="fk", value=b"x", etag=pb.Etag(value="999"))])
    invoke = pb.InvokeServiceRequest(id="id_2", message=pb.CommonInvokeRequest(method="stock"))
    invoke.message.data.value = b"book1"
    calls = [
        ("runtime.v1.SaveState", req(save)),
        ("runtime.v1.GetState", req(pb.GetStateRequest(store_name="state_demo", key="fk"))),
        ("runtime.v1.SaveState", req(stale)),
        ("runtime.v1.GetState", req(pb.GetStateRequest(store_name="elsewhere", key="fk"))),
        ("runtime.v1.GetState", req(pb.GetStateRequest(store_name="state_demo", key=""))),
        ("runtime.v1.GetState", b"\xff\xff\xff"),  # not a GetStateRequest
        ("runtime.v1.NoSuchMethod", b""),
        ("runtime.v1.TryLock", req(pb.TryLockRequest(store_name="lockstore", resource_id="r", lock_owner="wasm",
                                                     expire=30))),
        ("runtime.v1.InvokeService", req(invoke)),
        ("runtime.v1.GetNextId", req(pb.GetNextIdRequest(store_name="ids", key="n", options=pb.SequencerOptions(
            increment=pb.SequencerOptions.STRONG)))),
    ]
    tmp_path.mkdir(exist_ok=True)
    config = api_config(tmp_path)
    write_guest(Path(config.functions_dirs[0]), "foreign", calls_guest(calls))
    client = await serve(config)
    status, _, body = await client.call("foreign")
    assert status == 200
    r = Results(body)
    assert r.ret() == (OK, b"")  # Empty serializes to nothing: address 0, length 0
    got_status, got = r.ret()
    answer = pb.GetStateResponse.FromString(got)
    assert got_status == OK and answer.data == b"from wasm" and answer.etag
    assert r.ret()[0] == CAS_MISMATCH
    assert r.ret()[0] == NOT_FOUND
    assert r.ret()[0] == BAD_ARGUMENT
    assert r.ret()[0] == BAD_ARGUMENT
    assert r.ret()[0] == NOT_FOUND
    lock_status, lock = r.ret()
    assert lock_status == OK and pb.TryLockResponse.FromString(lock).success
    invoke_status, invoked = r.ret()
    assert invoke_status == OK and pb.InvokeResponse.FromString(invoked).data.value == b"100"
    id_status, next_id = r.ret()
    assert id_status == OK and pb.GetNextIdResponse.FromString(next_id).next_id == 1
    assert r.done()
    # The same components as everyone else: the guest's write and lock are the host's.
    app = client.server.app
    assert app.components.of("state")["state_demo"].get("fk").value == b"from wasm"
    assert not app.components.of("lock")["lockstore"].try_lock("r", "someone", 5)


async def test_allow_lists_answer_refused_names_as_unknown(serve, tmp_path: Path, caplog) -> None:
    calls = [
        ("runtime.v1.GetState", req(pb.GetStateRequest(store_name="state_demo", key="book1"))),
        ("runtime.v1.PublishEvent", req(pb.PublishEventRequest(pubsub_name="pubsub", topic="t", data=b"x"))),
        ("runtime.v1.GetNextId", req(pb.GetNextIdRequest(store_name="ids", key="n"))),
    ]
    config = api_config(tmp_path)
    folder = Path(config.functions_dirs[0])
    write_guest(folder, "limited", calls_guest(calls))
    (folder / "limited.toml").write_text('allowed_state_stores = []\nallowed_pubsubs = ["other"]\n')
    client = await serve(config)
    status, _, body = await client.call("limited")
    assert status == 200
    r = Results(body)
    assert [r.ret()[0] for _ in range(2)] == [NOT_FOUND, NOT_FOUND]
    ok, next_id = r.ret()  # no allow-list for sequencers: allowed
    assert ok == OK and pb.GetNextIdResponse.FromString(next_id).next_id >= 1
    assert "not in allowed_state_stores" in caplog.text and "not in allowed_pubsubs" in caplog.text

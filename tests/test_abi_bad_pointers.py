"""Every implemented host import, called with pointers outside guest memory, answers an error code.

A guest that passes a wild pointer must get InvalidMemoryAccess (6) — or FAULT (21) from WASI — and
the host must neither crash, nor trap the guest, nor touch memory it does not own. Each pointer (and
each input length) argument is made bad on its own while the others stay valid, so the host has to
check every one of them, not just the first.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Union

import pytest

from abi.imports import (
    buffers,
    calls,
    emscripten,
    grpc_calls,
    header_maps,
    invoke,
    logging_time,
    metrics,
    properties,
    runtime,
    shared_state,
    state,
    stream_control,
)
from tests.conftest import ENGINE_BACKENDS, EXAMPLES, functions_dir, make_config
from tests.guest_wat import (
    PAGE,
    RET_PTR,
    RET_SIZE,
    SIGNATURES,
    U32_A,
    U32_B,
    U64,
    Results,
    WatGuest,
    serialize_map,
    write_guest,
)

BACKENDS = ENGINE_BACKENDS

# Bad pointers: far outside the 1-page memory (negative as a signed i32), exactly at its end, and
# starting inside but running past the end (every range used below is at least 3 bytes long).
BAD_POINTERS = {"high": 0xFFFFFFF0, "end": PAGE, "straddle": PAGE - 2}
HUGE_LENGTH = 0xFFFFFFF0  # a valid pointer with this length runs far past the end

INVALID_MEMORY_ACCESS = 6
WASI_FAULT = 21
WASI_INVAL = 28

Arg = Union[int, str]


def _is_pointer(name: str) -> bool:
    # The spec's naming: `*_data` are input pointers, `return_*` out-pointers.
    return name.endswith("_data") or name.startswith("return_")


def _is_length(name: str) -> bool:
    # The length of an input range (`max_size` is only a cap on what is returned).
    return name.endswith("_size") and not name.startswith("return_") and name != "max_size"


def bad_argument_cases(name: str, **valid: Arg) -> list[tuple[str, str, tuple[Arg, ...]]]:
    """(label, import, args): one case per bad pointer kind per pointer argument, one per length."""
    cases = []
    names = list(valid)
    for position, arg_name in enumerate(names):
        variants = {}
        if _is_pointer(arg_name):
            variants = dict(BAD_POINTERS)
        elif _is_length(arg_name):
            variants = {"huge": HUGE_LENGTH}
        for kind, value in variants.items():
            args = list(valid.values())
            args[position] = value
            cases.append((f"{name}({arg_name}={kind})", name, tuple(args)))
    assert cases, f"{name} has no pointer argument"
    return cases


def env_cases(g: WatGuest) -> tuple[list[tuple[str, str, tuple[Arg, ...]]], dict[str, int]]:
    """All cases for the `env` imports, and the status each must answer."""
    empty_map = g.addr(serialize_map([]))
    cases = []

    def add(name: str, **valid: Arg) -> None:
        cases.extend(bad_argument_cases(name, **valid))

    method, method_len = g.s(":method")
    key, key_len = g.s("x-bad")
    value = g.addr("vvvv")
    add("proxy_log", log_level=2, message_data=value, message_size=4)
    add("proxy_get_log_level", return_log_level=U32_A)
    add("proxy_get_current_time_nanoseconds", return_time=U64)
    # Buffer 0 (the request body) exists during proxy_on_request_headers in this host.
    add("proxy_get_buffer_bytes", buffer_id=0, start=0, max_size=16,
        return_value_data=RET_PTR, return_value_size=RET_SIZE)
    add("proxy_set_buffer_bytes", buffer_id=0, start=0, size=0, value_data=value, value_size=4)
    add("proxy_get_buffer_status", buffer_id=0, return_buffer_size=U32_A, return_flags=U32_B)
    # Map 0 (the request headers) exists; ":method" is always in it, so lookups get past NotFound.
    add("proxy_get_header_map_pairs", map_id=0, return_map_data=RET_PTR, return_map_size=RET_SIZE)
    add("proxy_set_header_map_pairs", map_id=0, map_data=empty_map, map_size=4)
    add("proxy_get_header_map_size", map_id=0, return_map_size=U32_A)
    add("proxy_get_header_map_value", map_id=0, key_data=method, key_size=method_len,
        return_value_data=RET_PTR, return_value_size=RET_SIZE)
    for name in ("proxy_add_header_map_value", "proxy_replace_header_map_value"):
        add(name, map_id=0, key_data=key, key_size=key_len, value_data=value, value_size=4)
    add("proxy_remove_header_map_value", map_id=0, key_data=key, key_size=key_len)
    # plugin_name always exists, so proxy_get_property gets past NotFound to the out-pointers.
    add("proxy_get_property", path_data=g.addr("plugin_name"), path_size=len("plugin_name"),
        return_value_data=RET_PTR, return_value_size=RET_SIZE)
    add("proxy_set_property", path_data=g.addr("bad.ptr"), path_size=len("bad.ptr"),
        value_data=value, value_size=4)
    add("proxy_send_local_response", status_code=200, details_data=key, details_size=key_len,
        body_data=value, body_size=4, headers_data=empty_map, headers_size=4, grpc_status=0xFFFFFFFF)
    add("proxy_get_configuration", return_configuration_data=RET_PTR, return_configuration_size=RET_SIZE)
    add("proxy_get_state", store_data=g.addr("state_demo"), store_size=len("state_demo"),
        key_data=g.addr("book1"), key_size=len("book1"),
        return_value_data=RET_PTR, return_value_size=RET_SIZE)
    store, k = g.s("state_demo"), g.s("book1")
    add("proxy_get_state_with_etag", store_data=store[0], store_size=store[1], key_data=k[0], key_size=k[1],
        return_value_data=RET_PTR, return_value_size=RET_SIZE, return_etag_data=U32_A, return_etag_size=U32_B)
    add("proxy_set_state", store_data=store[0], store_size=store[1], key_data=k[0], key_size=k[1],
        value_data=value, value_size=4, etag_data=key, etag_size=key_len)
    add("proxy_delete_state", store_data=store[0], store_size=store[1], key_data=k[0], key_size=k[1],
        etag_data=key, etag_size=key_len)
    add("proxy_publish_event", pubsub_data=key, pubsub_size=key_len, topic_data=k[0], topic_size=k[1],
        data_data=value, data_size=4, content_type_data=k[0], content_type_size=k[1])
    add("proxy_try_lock", store_data=key, store_size=key_len, resource_data=k[0], resource_size=k[1],
        owner_data=k[0], owner_size=k[1], expire=10, return_acquired=U32_A)
    add("proxy_unlock", store_data=key, store_size=key_len, resource_data=k[0], resource_size=k[1],
        owner_data=k[0], owner_size=k[1], return_result=U32_A)
    add("proxy_get_next_id", store_data=key, store_size=key_len, key_data=k[0], key_size=k[1], return_id=U64)
    add("proxy_invoke_service", id_data=g.addr("hello"), id_size=len("hello"), method_data=key,
        method_size=key_len, param_data=value, param_size=4,
        return_result_data=RET_PTR, return_result_size=RET_SIZE)
    add("proxy_get_shared_data", key_data=key, key_size=key_len, return_value_data=RET_PTR,
        return_value_size=RET_SIZE, return_cas=U32_A)
    add("proxy_set_shared_data", key_data=key, key_size=key_len, value_data=value, value_size=4, cas=0)
    add("proxy_register_shared_queue", name_data=key, name_size=key_len, return_queue_id=U32_A)
    add("proxy_resolve_shared_queue", vm_id_data=key, vm_id_size=key_len, name_data=key, name_size=key_len,
        return_queue_id=U32_A)
    add("proxy_enqueue_shared_queue", queue_id=1, value_data=value, value_size=4)
    add("proxy_dequeue_shared_queue", queue_id=1, return_value_data=RET_PTR, return_value_size=RET_SIZE)
    add("proxy_define_metric", metric_type=0, name_data=key, name_size=key_len, return_metric_id=U32_A)
    add("proxy_get_metric", metric_id=1, return_value=U64)
    add("proxy_get_status", return_code=U32_A, return_message_data=RET_PTR, return_message_size=RET_SIZE)
    for name in ("proxy_http_call", "proxy_dispatch_http_call"):
        add(name, upstream_data=key, upstream_size=key_len, headers_data=empty_map, headers_size=4,
            body_data=value, body_size=4, trailers_data=empty_map, trailers_size=4, timeout=1000,
            return_token=U32_A)
    # gRPC: the pointers are checked before the upstream (unknown here) or the token (none is open).
    service, method = g.s("echo.Echo"), g.s("Say")
    add("proxy_grpc_call", upstream_data=key, upstream_size=key_len, service_name_data=service[0],
        service_name_size=service[1], method_name_data=method[0], method_name_size=method[1],
        initial_metadata_data=empty_map, initial_metadata_size=4, message_data=value, message_size=4,
        timeout=1000, return_call_id=U32_A)
    add("proxy_grpc_stream", upstream_data=key, upstream_size=key_len, service_name_data=service[0],
        service_name_size=service[1], method_name_data=method[0], method_name_size=method[1],
        initial_metadata_data=empty_map, initial_metadata_size=4, return_stream_id=U32_A)
    add("proxy_grpc_send", stream_id=99, message_data=value, message_size=4, end_stream=0)
    add("proxy_call_foreign_function", name_data=key, name_size=key_len, args_data=value, args_size=4,
        return_data=RET_PTR, return_size=RET_SIZE)
    expected = {label: INVALID_MEMORY_ACCESS for label, _, _ in cases}

    # Imports without any pointer argument cannot be given a bad one: they are still called (every
    # import is exercised once) and answer what the spec says for these valid arguments.
    no_pointer = [
        ("proxy_continue_stream", (0,), 0),  # HTTP_REQUEST is a known stream type: Ok
        ("proxy_set_effective_context", ("(local.get $ctx)",), 0),  # the current context: Ok
        ("proxy_done", (), 1),  # spec: NotFound when the context is not pending finalization
        ("proxy_continue_request", (), 0),  # ABI 0.1.0, during a request: Ok
        ("proxy_continue_response", (), 0),
        ("proxy_clear_route_cache", (), 0),
        ("proxy_set_tick_period_milliseconds", (0,), 0),  # 0 disables the timer: Ok
        ("proxy_increment_metric", (99, 1), 1),  # no metric 99: NotFound
        ("proxy_record_metric", (99, 1), 1),
        ("proxy_grpc_cancel", (99,), 1),  # no call or stream 99: NotFound
        ("proxy_grpc_close", (99,), 1),
        ("pthread_equal", (7, 7), 1),  # emscripten: the same thread id
        ("emscripten_notify_memory_growth", (0,), 0),  # void: 0 records that it returned
        ("proxy_close_stream", (1,), 0),  # last: it ends the stream after this callback (Ok)
    ]
    for name, args, status in no_pointer:
        label = f"{name}()"
        cases.append((label, name, args))
        expected[label] = status
    return cases, expected


def implemented_env_imports() -> set[str]:
    groups = [logging_time, buffers, header_maps, properties, stream_control, state, invoke, runtime, shared_state,
              metrics, calls, grpc_calls, emscripten]
    return {f.name for group in groups for f in group.hostcall.functions}


def calling_module(cases: list[tuple[str, str, tuple[Arg, ...]]], g: WatGuest, module: str = "env") -> str:
    """proxy_on_request_headers makes every call, records each status, then writes them as the body."""
    def status(name: str, args: tuple[Arg, ...]) -> str:
        call = g.call(name, *args, module=module)
        return call if SIGNATURES[module][name][1] else f"(block (result i32) {call} (i32.const 0))"

    body = "\n    ".join(f"(call $emit {status(name, args)})" for _, name, args in cases)
    return g.module(proxy_on_request_headers=f"{body}\n    (call $flush)\n    (i32.const 0)")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_env_imports_with_bad_pointers_answer_invalid_memory_access(serve, tmp_path: Path,
                                                                          backend: str) -> None:
    g = WatGuest()
    cases, expected = env_cases(g)
    # Every implemented env import is covered (a new import must get its bad-pointer cases here).
    assert {name for _, name, _ in cases} == implemented_env_imports()
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    write_guest(folder, "bad_pointers", calling_module(cases, g))
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1}),
                         engine_backend=backend)

    for attempt in range(2):  # the same instance answers twice: nothing trapped or broke it
        status, _, body = await client.call("bad_pointers", "/?q=1")
        assert status == 200, body
        results = Results(body)
        got = {label: results.u32() for label, _, _ in cases}
        assert results.done()
        assert got == expected, f"attempt {attempt}"

    _, info = await client.admin_get("/functions/bad_pointers")
    assert info["versions"][0]["errors"] == 0 and info["versions"][0]["replaced_instances"] == 0
    # The host stays up and other functions keep serving.
    status, _, body = await client.call("hello")
    assert (status, body) == (200, b"hello method=GET path=/ greeting=-\n")


def wasi_cases(g: WatGuest) -> tuple[list[tuple[str, str, tuple[Arg, ...]]], dict[str, int]]:
    message = g.addr("hi from wasi\n")
    iovec = g.addr(struct.pack("<II", message, len("hi from wasi\n")))
    bad_iovec = g.addr(struct.pack("<II", 0xFFFFFFF0, 4))  # a well-placed iovec naming a bad buffer
    cases = [
        *bad_argument_cases("fd_write", fd=1, iovs_data=iovec, iovs_len=1, return_written=U32_A),
        ("fd_write(iovec.buf=high)", "fd_write", (1, bad_iovec, 1, U32_A)),
        ("fd_write(iovs_len=huge)", "fd_write", (1, iovec, 0x1FFFFFFF, U32_A)),
        *bad_argument_cases("fd_fdstat_get", fd=1, return_stat=U32_A),
        *bad_argument_cases("clock_time_get", clock_id=0, precision=1, return_time=U64),
        *bad_argument_cases("clock_res_get", clock_id=0, return_resolution=U64),
        *bad_argument_cases("random_get", buffer_data=U64, buffer_size=16),
        *bad_argument_cases("args_sizes_get", return_count=U32_A, return_buffer_size=U32_B),
        *bad_argument_cases("environ_sizes_get", return_count=U32_A, return_buffer_size=U32_B),
    ]
    # args_get/environ_get are left out on purpose: with no arguments and no environment the host
    # writes nothing, so there is no memory for it to touch.
    expected = {label: WASI_FAULT for label, _, _ in cases}
    # The spec checks the size first: "INVAL when requested buffer_size is too large" (> 1 MiB here).
    expected["random_get(buffer_size=huge)"] = WASI_INVAL
    # Controls: the same calls with valid pointers succeed, so the FAULTs above come from the pointers.
    controls = [("clock_time_get(valid)", "clock_time_get", (0, 1, U64)),
                ("random_get(valid)", "random_get", (U64, 8)),
                ("args_sizes_get(valid)", "args_sizes_get", (U32_A, U32_B))]
    for label, name, args in controls:
        cases.append((label, name, args))
        expected[label] = 0
    return cases, expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wasi_module", ["wasi_snapshot_preview1", "wasi_unstable"])
async def test_wasi_imports_with_bad_pointers_answer_fault(serve, tmp_path: Path, backend: str,
                                                           wasi_module: str) -> None:
    g = WatGuest()
    cases, expected = wasi_cases(g)
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    write_guest(folder, "wasi_bad", calling_module(cases, g, module=wasi_module))
    client = await serve(make_config(tmp_path, folder, function_defaults={"instance_num": 1}),
                         engine_backend=backend)

    status, _, body = await client.call("wasi_bad")
    assert status == 200, body
    results = Results(body)
    assert {label: results.u32() for label, _, _ in cases} == expected
    assert results.done()
    status, _, _ = await client.call("hello")
    assert status == 200

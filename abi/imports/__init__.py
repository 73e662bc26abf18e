"""Every host import, grouped by concern; `all_host_functions()` is what a linker defines."""

from __future__ import annotations

from abi.engine import HostFunction
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
    wasi,
)


def all_host_functions() -> list[HostFunction]:
    groups = [logging_time, buffers, header_maps, properties, stream_control, state, invoke, runtime, shared_state,
              metrics, calls, grpc_calls, emscripten]
    functions = [f for group in groups for f in group.hostcall.functions]
    return functions + wasi.functions()


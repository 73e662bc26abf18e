"""Every host import, grouped by concern; `all_host_functions()` is what a linker defines."""

from __future__ import annotations

from ..engine import HostFunction
from . import (buffers, calls, header_maps, layotto, logging_time, metrics, not_yet, properties, shared_state,
               stream_control, wasi)


def all_host_functions() -> list[HostFunction]:
    groups = [logging_time, buffers, header_maps, properties, stream_control, layotto, shared_state, metrics,
              calls, not_yet]
    functions = [f for group in groups for f in group.hostcall.functions]
    return functions + wasi.functions()

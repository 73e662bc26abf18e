"""Hand-written WAT guests for ABI tests: import signatures, a string table and a results area.

A `WatGuest` collects the imports a test calls, the constant strings it needs (data segments) and
the callbacks it exports, then renders one module. Guests report what they saw through a results
area: `(call $emit X)` records a u32, `(call $emit_ret STATUS)` records a status followed by the
bytes a get-style import returned through the `RET` out-pointers, and `(call $flush)` writes
everything recorded so far as the response body (`proxy_set_buffer_bytes(1, 0, 0, ...)`: on an
empty body that appends, on any host). `Results` reads the records back in the same order.
"""

from __future__ import annotations

import struct

PAGE = 65536

# Fixed addresses inside the single page every guest has.
RET_PTR, RET_SIZE = 512, 516  # out-pointers for (u8**, size_t*) results
U32_A, U32_B = 520, 524  # scratch out-pointers for u32 results
U64 = 528  # scratch out-pointer for u64 results (8-aligned)
STRINGS = 1024  # constant strings (data segments) from here
RESULTS = 16384  # the results area
HEAP = 32768  # bump allocator for proxy_on_memory_allocate
RET = (RET_PTR, RET_SIZE)  # pass as one `call` argument: two values

# Host imports by module: name -> (param kinds, returns i32). "i" is i32, "I" is i64.
ENV: dict[str, tuple[str, bool]] = {
    "proxy_log": ("iii", True),
    "proxy_get_log_level": ("i", True),
    "proxy_get_current_time_nanoseconds": ("i", True),
    "proxy_get_buffer_bytes": ("iiiii", True),
    "proxy_set_buffer_bytes": ("iiiii", True),
    "proxy_get_buffer_status": ("iii", True),
    "proxy_get_header_map_pairs": ("iii", True),
    "proxy_set_header_map_pairs": ("iii", True),
    "proxy_get_header_map_size": ("ii", True),
    "proxy_get_header_map_value": ("iiiii", True),
    "proxy_add_header_map_value": ("iiiii", True),
    "proxy_replace_header_map_value": ("iiiii", True),
    "proxy_remove_header_map_value": ("iii", True),
    "proxy_get_property": ("iiii", True),
    "proxy_set_property": ("iiii", True),
    "proxy_send_local_response": ("iiiiiiii", True),
    "proxy_continue_stream": ("i", True),
    "proxy_close_stream": ("i", True),
    "proxy_done": ("", True),
    "proxy_set_effective_context": ("i", True),
    "proxy_continue_request": ("", True),  # ABI 0.1.0
    "proxy_continue_response": ("", True),  # ABI 0.1.0
    "proxy_clear_route_cache": ("", True),  # ABI 0.1.0
    "proxy_get_configuration": ("ii", True),  # ABI 0.1.0
    "proxy_get_state": ("iiiiii", True),  # Layotto
    "proxy_invoke_service": ("iiiiiiii", True),  # Layotto
    # The runtime for functions (abi/IMPORTS.md).
    "proxy_get_state_with_etag": ("iiiiiiii", True),
    "proxy_set_state": ("iiiiiiii", True),
    "proxy_delete_state": ("iiiiii", True),
    "proxy_publish_event": ("iiiiiiii", True),
    "proxy_try_lock": ("iiiiiiii", True),
    "proxy_unlock": ("iiiiiii", True),
    "proxy_get_next_id": ("iiiii", True),
    # The runtime's proxy_get_configuration(store, key, *value): the same import name as ABI 0.1.0's
    # plugin-configuration call, another signature (a module imports one or the other).
    "proxy_get_configuration#runtime": ("iiiiii", True),
    "proxy_get_shared_data": ("iiiii", True),
    "proxy_set_shared_data": ("iiiii", True),
    "proxy_register_shared_queue": ("iii", True),
    "proxy_resolve_shared_queue": ("iiiii", True),
    "proxy_enqueue_shared_queue": ("iii", True),
    "proxy_dequeue_shared_queue": ("iii", True),
    "proxy_set_tick_period_milliseconds": ("i", True),
    "proxy_http_call": ("iiiiiiiiii", True),
    "proxy_dispatch_http_call": ("iiiiiiiiii", True),  # ABI 0.2.0's name
    "proxy_get_status": ("iii", True),
    "proxy_define_metric": ("iiii", True),
    "proxy_increment_metric": ("iI", True),
    "proxy_record_metric": ("iI", True),
    "proxy_get_metric": ("ii", True),
    "proxy_call_foreign_function": ("iiiiii", True),
    "proxy_grpc_call": ("iiiiiiiiiiii", True),
    "proxy_grpc_stream": ("iiiiiiiii", True),
    "proxy_grpc_send": ("iiii", True),
    "proxy_grpc_cancel": ("i", True),
    "proxy_grpc_close": ("i", True),
    # What emscripten-built modules import beside proxy-wasm (abi/imports/emscripten.py).
    "pthread_equal": ("ii", True),
    "emscripten_notify_memory_growth": ("i", False),
}
WASI: dict[str, tuple[str, bool]] = {
    "fd_write": ("iiii", True),
    "fd_fdstat_get": ("ii", True),
    "clock_time_get": ("iIi", True),
    "clock_res_get": ("ii", True),
    "random_get": ("ii", True),
    "args_sizes_get": ("ii", True),
    "environ_sizes_get": ("ii", True),
    "proc_exit": ("i", False),
    "fd_read": ("iiii", True),
    "fd_close": ("i", True),
    "fd_seek": ("iIii", True),
    "fd_tell": ("ii", True),
    "fd_pread": ("iiiIi", True),
    "fd_pwrite": ("iiiIi", True),
    "fd_filestat_get": ("ii", True),
    "fd_prestat_get": ("ii", True),
    "fd_prestat_dir_name": ("iii", True),
    "fd_renumber": ("ii", True),
    "fd_fdstat_set_flags": ("ii", True),
    "path_open": ("iiiiiIIii", True),
    "sock_recv": ("iiiiii", True),
    "environ_get": ("ii", True),
    "args_get": ("ii", True),
    "poll_oneoff": ("iiii", True),
    "proc_raise": ("i", True),
    "sched_yield": ("", True),
}
SIGNATURES = {"env": ENV, "wasi_snapshot_preview1": WASI, "wasi_unstable": WASI}

# Exported callbacks: name -> (parameter names, returns i32).
CALLBACKS: dict[str, tuple[tuple[str, ...], bool]] = {
    "_initialize": ((), False),
    "proxy_on_vm_start": (("ctx", "size"), True),
    "proxy_on_configure": (("ctx", "size"), True),
    "proxy_on_context_create": (("ctx", "parent"), False),
    "proxy_on_request_headers": (("ctx", "count", "eos"), True),
    "proxy_on_request_body": (("ctx", "size", "eos"), True),
    "proxy_on_response_headers": (("ctx", "count", "eos"), True),
    "proxy_on_response_body": (("ctx", "size", "eos"), True),
    "proxy_on_done": (("ctx",), True),
    "proxy_on_log": (("ctx",), False),
    "proxy_on_delete": (("ctx",), False),
    "proxy_on_tick": (("ctx",), False),
    "proxy_on_queue_ready": (("ctx", "queue"), False),
    "proxy_on_http_call_response": (("ctx", "token", "headers", "body", "trailers"), False),
    "proxy_on_grpc_receive_initial_metadata": (("ctx", "token", "headers"), False),
    "proxy_on_grpc_receive": (("ctx", "token", "size"), False),
    "proxy_on_grpc_receive_trailing_metadata": (("ctx", "token", "trailers"), False),
    "proxy_on_grpc_close": (("ctx", "token", "status"), False),
}

_KIND = {"i": "i32", "I": "i64"}


def serialize_map(pairs: list[tuple[str, str]]) -> bytes:
    """The proxy-wasm map encoding, written here independently of the host's encoder."""
    head = struct.pack("<I", len(pairs))
    body = b""
    for key, value in pairs:
        k, v = key.encode(), value.encode()
        head += struct.pack("<II", len(k), len(v))
        body += k + b"\0" + v + b"\0"
    return head + body


def parse_map(data: bytes) -> list[tuple[str, str]]:
    (count,) = struct.unpack_from("<I", data, 0)
    sizes = struct.unpack_from(f"<{2 * count}I", data, 4)
    pos, pairs = 4 + 8 * count, []
    for i in range(count):
        key_len, value_len = sizes[2 * i], sizes[2 * i + 1]
        key = data[pos:pos + key_len].decode()
        pos += key_len + 1
        value = data[pos:pos + value_len].decode()
        pos += value_len + 1
        pairs.append((key, value))
    assert pos == len(data), "trailing bytes after the map"
    return pairs


def _wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


class WatGuest:
    def __init__(self, pages: int = 1, *, zero_alloc_traps: bool = False) -> None:
        self.pages = pages
        # Like the Go and TinyGo SDKs' allocators: a request for 0 bytes traps.
        self.zero_alloc_traps = zero_alloc_traps
        self._strings: dict[bytes, int] = {}
        self._next = STRINGS
        self._imports: dict[tuple[str, str], None] = {}
        self.extra: list[str] = []  # additional top-level WAT (globals, helper funcs)

    # -- constants --------------------------------------------------------------------------------
    def addr(self, value: str | bytes) -> int:
        """Address of a constant (placed once in a data segment)."""
        data = value.encode() if isinstance(value, str) else value
        if data not in self._strings:
            self._strings[data] = self._next
            self._next += (len(data) + 8) & ~7
            assert self._next < RESULTS, "string table overflow"
        return self._strings[data]

    def s(self, value: str | bytes) -> tuple[int, int]:
        """(ptr, len) of a constant: two arguments of a `call`."""
        data = value.encode() if isinstance(value, str) else value
        return self.addr(data), len(data)

    # -- calls ------------------------------------------------------------------------------------
    def call(self, name: str, *args: int | str | tuple[int, int], module: str = "env") -> str:
        """`(call $module.name args...)`: ints become constants of the parameter's type, strings are WAT
        expressions, (ptr, len) pairs are two arguments."""
        params, _ = SIGNATURES[module][name]
        self._imports[(module, name)] = None
        flat = [part for arg in args for part in (arg if isinstance(arg, tuple) else (arg,))]
        assert len(flat) == len(params), f"{name} takes {len(params)} arguments, got {len(flat)}"
        rendered = [f"({_KIND[kind]}.const {arg})" if isinstance(arg, int) else arg for kind, arg in zip(params, flat, strict=False)]
        return f"(call ${module}.{name} {' '.join(rendered)})"

    # -- rendering --------------------------------------------------------------------------------
    def module(self, **callbacks: str) -> str:
        """The module text; each keyword is a callback name and its WAT body."""
        self._imports[("env", "proxy_set_buffer_bytes")] = None  # used by $flush
        imports = []
        for module, name in self._imports:
            params, result = SIGNATURES[module][name]
            kinds = " ".join(_KIND[p] for p in params)
            results = " (result i32)" if result else ""
            imported = name.partition("#")[0]  # "name#variant": another signature of the same import
            imports.append(f'  (import "{module}" "{imported}" (func ${module}.{name} (param {kinds}){results}))')
        data = [f'  (data (i32.const {addr}) "{_wat_bytes(value)}")' for value, addr in self._strings.items()]
        zero_check = "\n    (if (i32.eqz (local.get $n)) (then (unreachable)))" if self.zero_alloc_traps else ""
        funcs = []
        for name, body in callbacks.items():
            params, result = CALLBACKS[name]
            param_text = " ".join(f"(param ${p} i32)" for p in params)
            result_text = " (result i32)" if result else ""
            funcs.append(f'  (func (export "{name}") {param_text}{result_text}\n    {body})')
        return "\n".join([
            "(module",
            *imports,
            f'  (memory (export "memory") {self.pages} {self.pages})',
            *data,
            f"  (global $heap (mut i32) (i32.const {HEAP}))",
            f"  (global $out (mut i32) (i32.const {RESULTS}))",
            f"""  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32){zero_check}
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $n)) (i32.const {self.pages * PAGE}))
      (then (return (i32.const 0))))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (local.get $p))
  (func $emit (param $v i32)
    (i32.store (global.get $out) (local.get $v))
    (global.set $out (i32.add (global.get $out) (i32.const 4))))
  (func $emit_bytes (param $p i32) (param $n i32)
    (call $emit (local.get $n))
    (memory.copy (global.get $out) (local.get $p) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))
  (func $emit_ret (param $status i32)
    (call $emit (local.get $status))
    (call $emit_bytes (i32.load (i32.const {RET_PTR})) (i32.load (i32.const {RET_SIZE})))
    (i32.store (i32.const {RET_PTR}) (i32.const 0))
    (i32.store (i32.const {RET_SIZE}) (i32.const 0)))
  (func $flush
    (drop (call $env.proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0)
      (i32.const {RESULTS}) (i32.sub (global.get $out) (i32.const {RESULTS}))))
    (global.set $out (i32.const {RESULTS})))""",
            *self.extra,
            *funcs,
            ")",
        ])


class Results:
    """Reads back what a guest recorded with $emit / $emit_bytes / $emit_ret."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def u32(self) -> int:
        (value,) = struct.unpack_from("<I", self.body, self.pos)
        self.pos += 4
        return value

    def bytes(self) -> bytes:
        size = self.u32()
        value = self.body[self.pos:self.pos + size]
        self.pos += size
        return value

    def ret(self) -> tuple[int, bytes]:
        return self.u32(), self.bytes()

    def done(self) -> bool:
        return self.pos == len(self.body)


def write_guest(folder, name: str, wat: str) -> None:
    """Drop a .wat function into a functions folder (the host deploys .wat files directly)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.wat").write_text(wat)


def failure(failed: dict[str, str], stem: str) -> str:
    """From an admin `failed` map: why the module `stem` was refused (keyed by its name or file name)."""
    reasons = [reason for key, reason in failed.items() if key == stem or key.rsplit(".", 1)[0] == stem]
    assert len(reasons) == 1, (stem, failed)
    return reasons[0]

"""The component linker of a process: WASI 0.2 (wasmtime's own) plus the function world's `runtime`
interface, whose host functions are defined here as C callbacks over `_values`.

One linker serves every component of an engine. Its host functions find the instance that called
them through a thread-local (`ACTIVE`): a guest call runs on the thread that made it, so while an
instance's export runs, every runtime call on that thread is that instance's (a nested `invoke`
saves and restores it). A host function never raises into wasmtime: a runtime failure is the
world's `error` variant; an unexpected host error is kept on the instance (`pending_error`, raised
again when the guest call returns) and the guest traps.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi

from abi.engine import WasmEngine
from abi.services import ServiceError
from host.functions.components import runtime
from host.functions.components._values import (
    VAL_SIZE,
    Writer,
    get_bytes,
    get_enum,
    get_option_string,
    get_string,
    get_u32,
    put_bool,
    put_bytes,
    put_enum,
    put_err,
    put_ok,
    put_option,
    put_record,
    put_string,
    put_u64,
    put_variant,
    utf8,
)
from host.functions.components.world import RUNTIME, RUNTIME_FUNCTIONS

log = logging.getLogger(__name__)


class Calling(runtime.Caller, Protocol):
    """The instance whose guest code runs on this thread, as the host functions see it."""

    pending_error: BaseException | None


class _Active(threading.local):
    instance: Calling | None = None


ACTIVE = _Active()

# A host function's body: the instance and its arguments' addresses -> the writer of its `ok`
# payload (None for `result<_, error>`). Raises ServiceError for the world's `error`.
Args = list[int]
Body = Callable[[Calling, Args], "Writer | None"]


def _state_entry(entry: Any) -> Writer:
    value, etag = entry.value, utf8(entry.etag)
    return lambda val: put_record(val, ((b"value", lambda field: put_bytes(field, value)),
                                        (b"etag", lambda field: put_string(field, etag))))


def _optional(write: Writer | None) -> Writer:
    return lambda val: put_option(val, write)


def _get_state(caller: Calling, args: Args) -> Writer | None:
    entry = runtime.get_state(caller, get_string(args[0]), get_string(args[1]))
    return _optional(_state_entry(entry) if entry is not None else None)


def _set_state(caller: Calling, args: Args) -> Writer | None:
    runtime.set_state(caller, get_string(args[0]), get_string(args[1]), get_bytes(args[2]),
                      get_option_string(args[3]))
    return None


def _delete_state(caller: Calling, args: Args) -> Writer | None:
    runtime.delete_state(caller, get_string(args[0]), get_string(args[1]), get_option_string(args[2]))
    return None


def _invoke(caller: Calling, args: Args) -> Writer | None:
    body = runtime.invoke(caller, get_string(args[0]), get_string(args[1]), get_bytes(args[2]))
    return lambda val: put_bytes(val, body)


def _publish(caller: Calling, args: Args) -> Writer | None:
    runtime.publish(caller, get_string(args[0]), get_string(args[1]), get_bytes(args[2]), get_string(args[3]))
    return None


def _try_lock(caller: Calling, args: Args) -> Writer | None:
    acquired = runtime.try_lock(caller, get_string(args[0]), get_string(args[1]), get_string(args[2]),
                                get_u32(args[3]))
    return lambda val: put_bool(val, bool(acquired))


def _unlock(caller: Calling, args: Args) -> Writer | None:
    case = runtime.unlock(caller, get_string(args[0]), get_string(args[1]), get_string(args[2])).encode()
    return lambda val: put_enum(val, case)


def _next_id(caller: Calling, args: Args) -> Writer | None:
    value = runtime.next_id(caller, get_string(args[0]), get_string(args[1]))
    return lambda val: put_u64(val, value)


def _get_configuration(caller: Calling, args: Args) -> Writer | None:
    value = runtime.get_configuration(caller, get_string(args[0]), get_string(args[1]))
    text = utf8(value) if value is not None else None
    return _optional((lambda val: put_string(val, text)) if text is not None else None)


RESULT_FUNCTIONS: dict[str, Body] = {
    "get-state": _get_state, "set-state": _set_state, "delete-state": _delete_state, "invoke": _invoke,
    "publish": _publish, "try-lock": _try_lock, "unlock": _unlock, "next-id": _next_id,
    "get-configuration": _get_configuration,
}


def _error_address(message: str) -> int:
    """A wasmtime error for the guest call (it traps); wasmtime takes ownership."""
    error = ffi.wasmtime_error_new(message.encode("utf-8", "replace"))
    return ctypes.cast(error, ctypes.c_void_p).value or 0


def _keep(caller: Calling | None, error: BaseException, name: str) -> int:
    if caller is not None:
        caller.pending_error = error
    else:
        log.error("component host function %s called outside a guest call: %s", name, error)
    return _error_address(f"host error in {RUNTIME}#{name}")


def _addresses(values: Any, count: int) -> Args:
    """The addresses of the `count` values of a C array."""
    base = ctypes.cast(values, ctypes.c_void_p).value or 0
    return [base + index * VAL_SIZE for index in range(count)]


def _result_callback(name: str, body: Body) -> Any:
    def callback(_env: Any, _context: Any, _type: Any, args: Any, nargs: int, results: Any, nresults: int) -> int:
        caller = ACTIVE.instance
        try:
            if caller is None:
                raise RuntimeError("no component instance is running on this thread")
            result = ctypes.cast(results, ctypes.c_void_p).value or 0
            try:
                write = body(caller, _addresses(args, nargs))
            except ServiceError as error:
                case = runtime.error_case(error)
                level = logging.WARNING if case == "internal" else logging.INFO
                caller.services.logger.log(level, "function %s: %s failed: %s", caller.function_id, name, error)
                message = utf8(str(error))
                put_err(result, lambda val: put_variant(val, case.encode(),
                                                        lambda payload: put_string(payload, message)))
                return 0
            put_ok(result, write)
            return 0
        except BaseException as error:  # noqa: BLE001 - must not unwind into wasmtime
            return _keep(caller, error, name)

    return ffi.wasmtime_component_func_callback_t(callback)


def _log_callback(_env: Any, _context: Any, _type: Any, args: Any, nargs: int, results: Any, nresults: int) -> int:
    caller = ACTIVE.instance
    try:
        if caller is None:
            raise RuntimeError("no component instance is running on this thread")
        level, message = _addresses(args, nargs)
        runtime.log(caller, get_enum(level), get_string(message))
        return 0
    except BaseException as error:  # noqa: BLE001 - must not unwind into wasmtime
        return _keep(caller, error, "log")


class ComponentLinker:
    """wasmtime's component Linker with WASI 0.2 and the `runtime` interface, for one engine."""

    def __init__(self, engine: WasmEngine):
        self.engine = engine
        self.linker = wc.Linker(engine.engine)
        self.linker.add_wasip2()
        # The C callbacks must live as long as any instance linked with them: instances keep this object.
        callbacks = {name: _result_callback(name, body) for name, body in RESULT_FUNCTIONS.items()}
        callbacks["log"] = ffi.wasmtime_component_func_callback_t(_log_callback)
        if sorted(callbacks) != sorted(RUNTIME_FUNCTIONS):
            raise RuntimeError(f"{RUNTIME} host functions {sorted(callbacks)} differ from the world's")
        self._callbacks = list(callbacks.values())
        names = list(callbacks)
        no_finalizer = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
        with self.linker.root() as root, root.add_instance(RUNTIME) as interface:
            for name, callback in zip(names, self._callbacks, strict=True):
                raw = name.encode()
                error = ffi.wasmtime_component_linker_instance_add_func(
                    interface.ptr(), ctypes.create_string_buffer(raw), len(raw), callback, None, no_finalizer)
                if error:
                    raise wasmtime.WasmtimeError._from_ptr(error)

    def instantiate(self, store: wasmtime.Store, component: wc.Component) -> wc.Instance:
        return self.linker.instantiate(store, component)

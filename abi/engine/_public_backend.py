"""The public back-end: only wasmtime-py's documented API (slower; the reference for the fast one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wasmtime

from abi.engine._guest import ACTIVE, I32, GuestBase, GuestMemoryError, HostFunction, trap_from_wasmtime


def define(linker: wasmtime.Linker, host: HostFunction) -> None:
    impl = host.impl
    on_memory_error = host.on_memory_error
    has_result = bool(host.results)
    # wasmtime-py hands i32 values over signed; the ABI's pointers and sizes are unsigned.
    unsigned = tuple(0xFFFFFFFF if kind == I32 else None for kind in host.params)

    def call_host(*args: int) -> int | None:
        guest = ACTIVE.guest
        args = tuple(a & mask if mask is not None and a < 0 else a for a, mask in zip(args, unsigned, strict=False))
        try:
            result = impl(guest.owner, *args)  # type: ignore[union-attr]
        except GuestMemoryError:
            if on_memory_error is None:
                raise
            result = on_memory_error
        except BaseException as error:
            if guest is not None:
                guest.pending_error = error
            raise
        return result if has_result else None

    linker.define_func(host.module, host.name, host.functype(), call_host)


class PublicGuest(GuestBase):
    def _make_call(self, export: wasmtime.Func, signature: Any) -> Callable[..., int | None]:
        """`signature`: (parameter kinds, result kinds) from GuestBase._signature."""
        store = self.store
        guest = self
        params, results = signature
        nparams = len(params)
        # i32 results are the ABI's unsigned ints; wasmtime-py returns them signed.
        unsigned_result = bool(results) and results[0] == I32

        def call(*args: int) -> int | None:
            if len(args) < nparams:
                raise TypeError(f"guest function takes {nparams} arguments, {len(args)} given")
            previous = ACTIVE.guest
            ACTIVE.guest = guest
            try:
                result = export(store, *args[:nparams])
            except (wasmtime.Trap, wasmtime.WasmtimeError) as error:
                guest.raise_pending()
                raise trap_from_wasmtime(error) from None
            except BaseException as error:  # a host import's own exception, re-raised by wasmtime-py
                guest.pending_error = error
                guest.raise_pending()
                raise
            finally:
                ACTIVE.guest = previous
            if guest.pending_error is not None:
                guest.raise_pending()
            if unsigned_result and result < 0:
                result &= 0xFFFFFFFF
            return result

        return call

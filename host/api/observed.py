"""Which runtime API methods are component calls, for the runtime-call metrics (issue 14): a method
marked `@component_call(capability, component_of)` is observed by `RuntimeApi.run` — its
capability, the component its arguments name, its outcome and latency — once per call, whichever
transport asked. Marking costs nothing when a method is called directly (the guests' foreign route).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
ComponentOf = Callable[..., str]  # the method's positional arguments (after self) -> the component name


def store_name(request: Any, *_: Any) -> str:
    return str(request.store_name)


def first_argument(name: str, *_: Any) -> str:
    return name


CALLS: dict[Callable[..., Any], tuple[str, ComponentOf]] = {}  # the marked functions (not bound methods)
# Those that only read (`reads=True`): RuntimeApi.run may try them on the event loop first
# (host/loop_budget.py), since abandoning one half-way and calling it again in a thread is harmless.
READS: set[Callable[..., Any]] = set()


def component_call(capability: str, component_of: ComponentOf = store_name, *,
                   reads: bool = False) -> Callable[[F], F]:
    def mark(method: F) -> F:
        CALLS[method] = (capability, component_of)
        if reads:
            READS.add(method)
        return method

    return mark


def marked(call: Callable[..., Any]) -> tuple[str, ComponentOf] | None:
    """The capability and component reader of `call` (a bound API method), or None."""
    return CALLS.get(getattr(call, "__func__", call))


def only_reads(call: Callable[..., Any]) -> bool:
    """Whether `call` (a bound API method) is marked `reads=True`."""
    return getattr(call, "__func__", call) in READS

"""The runtime capabilities the ABI asks for (abi/services), implemented over the host's
components. This is the one place where component errors become the ABI's: an unknown store is
UnknownName (NotFound), a bad argument BadRequest, an ETag conflict Conflict (CasMismatch), any
backend failure ServiceError (InternalFailure)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any, TypeVar

from abi.services import BadRequest, Conflict, ServiceError, StateEntry, UnknownName
from host.components.catalog import Components
from host.components.errors import ComponentError, EtagInvalid, EtagMismatch, InvalidRequest
from host.components.pubsub.cloudevents import envelope
from host.components.state import DeleteItem, StateItem
from host.loop_budget import LoopBudgetExceeded
from host.metrics import NO_OBSERVER, CallObserver
from host.tracing.current import end_call, event_context

T = TypeVar("T")


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except (EtagMismatch, EtagInvalid) as error:
        raise Conflict(str(error)) from None
    except InvalidRequest as error:
        raise BadRequest(str(error)) from None
    except ComponentError as error:
        raise ServiceError(str(error)) from None


class _Capability:
    observer: CallObserver = NO_OBSERVER  # runtime-call metrics (issue 14), set by runtime_services

    def __init__(self, components: Components, capability: str, noun: str):
        self.components = components
        self.capability = capability
        self.noun = noun

    def named(self, name: str) -> Any:
        component = self.components.of(self.capability).get(name)
        if component is None:
            known = ", ".join(sorted(self.components.of(self.capability))) or "none configured"
            raise UnknownName(f"unknown {self.noun} {name!r} (known: {known})")
        return component

    def call(self, name: str, action: Callable[[Any], T]) -> T:
        started = perf_counter()
        try:
            component = self.named(name)
            with _mapped():
                result = action(component)
        except LoopBudgetExceeded:
            raise  # not an outcome: the call is made again from a guest thread (host/loop_budget.py)
        except Exception as error:
            self.observer.observe(self.capability, name, error, perf_counter() - started)
            raise
        self.observer.observe(self.capability, name, None, perf_counter() - started)
        return result


class StateForFunctions(_Capability):
    def __init__(self, components: Components):
        super().__init__(components, "state", "state store")

    def get(self, store: str, key: str) -> StateEntry | None:
        value = self.call(store, lambda s: s.get(key))
        return StateEntry(value.value, value.etag) if value is not None else None

    def set(self, store: str, key: str, value: bytes, etag: str | None) -> None:
        item = StateItem(key, value, etag, "first-write" if etag else "last-write")
        self.call(store, lambda s: s.set(item))

    def delete(self, store: str, key: str, etag: str | None) -> None:
        item = DeleteItem(key, etag, "first-write" if etag else "last-write")
        self.call(store, lambda s: s.delete(item))


class PubSubForFunctions(_Capability):
    def __init__(self, components: Components):
        super().__init__(components, "pubsub", "pubsub")

    def publish(self, pubsub: str, topic: str, data: bytes, content_type: str) -> None:
        if not topic:
            raise BadRequest("empty topic")
        traceparent, tracestate, span = event_context(pubsub, topic)  # the calling request's trace (issue 14)
        event = envelope(data, content_type, topic=topic, pubsub_name=pubsub, source=self.components.app_id,
                         traceparent=traceparent, tracestate=tracestate)
        try:
            self.call(pubsub, lambda p: p.publish(topic, event))
        except Exception as error:
            end_call(span, str(error))
            raise
        end_call(span)


class LockForFunctions(_Capability):
    def __init__(self, components: Components):
        super().__init__(components, "lock", "lock store")

    def try_lock(self, store: str, resource: str, owner: str, expire_s: int) -> bool:
        return self.call(store, lambda s: bool(s.try_lock(resource, owner, expire_s)))

    def unlock(self, store: str, resource: str, owner: str) -> int:
        outcome = self.call(store, lambda s: int(s.unlock(resource, owner)))
        if outcome not in (0, 1, 2):
            raise ServiceError(f"lock store {store!r} failed to unlock {resource!r}")
        return outcome


class SequencerForFunctions(_Capability):
    def __init__(self, components: Components):
        super().__init__(components, "sequencer", "sequencer")

    def next_id(self, store: str, key: str) -> int:
        return self.call(store, lambda s: int(s.next_id(key)))


class ConfigurationForFunctions(_Capability):
    def __init__(self, components: Components):
        super().__init__(components, "configuration", "configuration store")

    def get(self, store: str, key: str) -> str | None:
        if not key:
            raise BadRequest("empty key")
        items = self.call(store, lambda s: s.get([key]))
        return next((item.value for item in items if item.key == key), None)


def runtime_services(components: Components, observer: CallObserver = NO_OBSERVER) -> dict[str, Any]:
    """The HostServices fields backed by components; `observer` sees every call (metrics)."""
    services: dict[str, _Capability] = {
        "state": StateForFunctions(components), "pubsub": PubSubForFunctions(components),
        "lock": LockForFunctions(components), "sequencer": SequencerForFunctions(components),
        "configuration": ConfigurationForFunctions(components)}
    for service in services.values():
        service.observer = observer
    return dict(services)

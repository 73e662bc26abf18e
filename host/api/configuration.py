"""The configuration API over the host's configuration stores, in Layotto's shape (items with group,
label and tags; Get/Save/Delete/Subscribe) and Dapr's (items of the default group and label by key,
with versions; subscriptions by id that `unsubscribe` ends).

An empty or blank group or label is the store's default. Layotto's `app_id` may be empty or this
host's app id (one app id per host); `subscribe_update` on a Get and any request metadata are
refused with InvalidArgument naming them. Subscriptions deliver from the store's watch thread:
`on_change` must return quickly (the gRPC servicers hand the items to their event loop).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host.api._components import CONFIGURATION, mapped, named, no_metadata
from host.api.errors import invalid
from host.api.observed import component_call, first_argument
from host.components.catalog import Components
from host.components.configuration import ConfigItem, ConfigWatch
from host.components.configuration._identity import normalize
from host.lazy import lazy_module

if TYPE_CHECKING:
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
else:  # protobuf and the generated messages (~10-20 ms to import) at the first runtime API call (issue 16)
    pb = lazy_module("host.grpc.proto.spec.proto.runtime.v1.runtime_pb2")

OnChange = Callable[[list[ConfigItem]], None]


def layotto_item(item: ConfigItem) -> pb.ConfigurationItem:
    return pb.ConfigurationItem(key=item.key, content=item.value, group=item.group, label=item.label,
                                tags=dict(item.tags), metadata=dict(item.metadata))


@dataclass
class _Subscription:
    id: str
    store_name: str
    watch: ConfigWatch
    on_end: Callable[[], None]


class ConfigurationApi:
    def __init__(self, components: Components):
        self.components = components
        self._subscriptions: dict[str, _Subscription] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def _store(self, name: str) -> Any:
        return named(self.components, CONFIGURATION, name)

    def _check_app(self, app_id: str, where: str) -> None:
        if app_id and app_id != self.components.app_id:
            raise invalid(f"{where}.app_id {app_id!r} is not this host's app id {self.components.app_id!r}")

    # -- Layotto's shape --------------------------------------------------------------------------
    @component_call("configuration")
    def get(self, request: pb.GetConfigurationRequest) -> pb.GetConfigurationResponse:
        store = self._store(request.store_name)
        self._check_app(request.app_id, "GetConfigurationRequest")
        no_metadata(request.metadata, "GetConfigurationRequest")
        if request.subscribe_update:
            raise invalid("GetConfigurationRequest.subscribe_update is not supported: use SubscribeConfiguration")
        with mapped(f"getting configuration from {request.store_name!r}", "ERR_CONFIGURATION_GET"):
            items = store.get(list(request.keys), request.group, request.label)
        return pb.GetConfigurationResponse(items=[layotto_item(item) for item in items])

    @component_call("configuration")
    def save(self, request: pb.SaveConfigurationRequest) -> None:
        store = self._store(request.store_name)
        self._check_app(request.app_id, "SaveConfigurationRequest")
        no_metadata(request.metadata, "SaveConfigurationRequest")
        saved: list[ConfigItem] = []
        deleted: list[pb.ConfigurationItem] = []
        for index, item in enumerate(request.items):
            no_metadata(item.metadata, f"items[{index}]")
            if item.content:
                saved.append(ConfigItem(key=item.key, value=item.content, group=item.group, label=item.label,
                                        tags=dict(item.tags)))
            else:  # Layotto: an item saved with empty content is deleted
                deleted.append(item)
        with mapped(f"saving configuration in {request.store_name!r}", "ERR_CONFIGURATION_SAVE"):
            if saved:
                store.save(saved)
            for item in deleted:
                store.delete([item.key], item.group, item.label)

    @component_call("configuration")
    def delete(self, request: pb.DeleteConfigurationRequest) -> None:
        store = self._store(request.store_name)
        self._check_app(request.app_id, "DeleteConfigurationRequest")
        no_metadata(request.metadata, "DeleteConfigurationRequest")
        if not request.keys:
            raise invalid("DeleteConfigurationRequest.keys is empty")
        with mapped(f"deleting configuration from {request.store_name!r}", "ERR_CONFIGURATION_DELETE"):
            store.delete(list(request.keys), request.group, request.label)

    # -- Dapr's shape -----------------------------------------------------------------------------
    @component_call("configuration", first_argument)
    def get_items(self, store_name: str, keys: Sequence[str], metadata: Mapping[str, str]) -> list[ConfigItem]:
        """Items of the default group and label (Dapr clients know no groups); all of them when
        `keys` is empty."""
        store = self._store(store_name)
        no_metadata(metadata, "GetConfigurationRequest")
        with mapped(f"getting configuration from {store_name!r}", "ERR_CONFIGURATION_GET"):
            items: list[ConfigItem] = store.get(list(keys))
        return items

    # -- subscriptions ----------------------------------------------------------------------------
    @component_call("configuration", first_argument)
    def subscribe(self, store_name: str, keys: Sequence[str], on_change: OnChange, on_end: Callable[[], None], *,
                  group: str = "", label: str = "", metadata: Mapping[str, str] | None = None,
                  app_id: str = "") -> str:
        """Watches `keys` (all when empty) of (group, label); returns the subscription id. `on_end`
        is called once when the subscription ends (unsubscribe or host shutdown)."""
        store = self._store(store_name)
        self._check_app(app_id, "SubscribeConfigurationRequest")
        no_metadata(metadata or {}, "SubscribeConfigurationRequest")
        group, label = normalize(group), normalize(label)

        def changed(items: list[ConfigItem]) -> None:
            chosen = [item for item in items if normalize(item.group) == group and normalize(item.label) == label]
            if chosen:
                on_change(chosen)

        subscription_id = f"{next(self._numbers)}-{uuid.uuid4().hex[:12]}"
        with mapped(f"subscribing to configuration of {store_name!r}", "ERR_CONFIGURATION_SUBSCRIBE"):
            watch = store.subscribe(list(keys), changed)
        with self._lock:
            self._subscriptions[subscription_id] = _Subscription(subscription_id, store_name, watch, on_end)
        return subscription_id

    def unsubscribe(self, store_name: str, subscription_id: str) -> bool:
        """Ends the subscription; False when this store has no subscription of that id."""
        with self._lock:
            subscription = self._subscriptions.get(subscription_id)
            if subscription is None or subscription.store_name != store_name:
                return False
            del self._subscriptions[subscription_id]
        self._end(subscription)
        return True

    def close(self) -> None:
        """Ends every subscription (host shutdown: the streams serving them finish)."""
        with self._lock:
            subscriptions = list(self._subscriptions.values())
            self._subscriptions.clear()
        for subscription in subscriptions:
            self._end(subscription)

    @staticmethod
    def _end(subscription: _Subscription) -> None:
        try:
            subscription.watch.close()
        finally:
            subscription.on_end()

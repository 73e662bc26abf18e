"""The application's gRPC AppCallback service as an `AppChannel` (host/api/delivery.py): Dapr's
(`dapr.proto.runtime.v1.AppCallback`: what `dapr.ext.grpc.App` serves) or Layotto's
(`spec.proto.runtime.v1.AppCallback`), as the application speaks. The event shapes differ in field
10 (Dapr's `extensions` Struct, Layotto's `metadata` map) and Dapr's `path` (9).

Dapr's routing rules (CEL `match` expressions) are not evaluated: events go to the subscription's
default route (`path` = `routes.default`), and a subscription with rules is logged as such. Bulk
subscriptions are delivered one event at a time.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import empty_pb2

from host.api.delivery import AppSubscription, NotImplementedByApp
from host.api.topics import Outcome, TopicEvent
from host.grpc.dapr import dapr_event
from host.grpc.layotto import layotto_event
from host.grpc.proto.dapr.proto.runtime.v1 import appcallback_pb2_grpc as dapr_callback
from host.grpc.proto.spec.proto.runtime.v1 import appcallback_pb2_grpc as layotto_callback

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0
_OUTCOMES = {int(outcome): outcome for outcome in Outcome}


def _outcome(status: int) -> Outcome:
    return _OUTCOMES.get(status, Outcome.RETRY)  # an unknown status is retried, as in Dapr


class GrpcAppChannel:
    def __init__(self, address: str, protocol: str):
        self.name = f"{protocol} gRPC {address}"
        self.protocol = protocol
        self._channel = grpc.aio.insecure_channel(address)
        stubs = dapr_callback if protocol == "dapr" else layotto_callback
        self._stub = stubs.AppCallbackStub(self._channel)

    async def subscriptions(self) -> list[AppSubscription]:
        listed = await self._stub.ListTopicSubscriptions(empty_pb2.Empty(), timeout=CALL_TIMEOUT_S)
        found = []
        for entry in listed.subscriptions:
            path, dead_letter = "", ""
            if self.protocol == "dapr":
                path, dead_letter = entry.routes.default, entry.dead_letter_topic
                if entry.routes.rules:
                    log.warning("app subscription %s/%s has routing rules: they are not evaluated here; events "
                                "go to the default route %r", entry.pubsub_name, entry.topic, path)
                if entry.bulk_subscribe.enabled:
                    log.warning("app subscription %s/%s asks for bulk delivery: events come one at a time",
                                entry.pubsub_name, entry.topic)
            found.append(AppSubscription(entry.pubsub_name, entry.topic, path, dead_letter, dict(entry.metadata)))
        return found

    async def deliver(self, subscription: AppSubscription, event: TopicEvent) -> Outcome:
        if self.protocol == "dapr":
            request = dapr_event(event)
            request.path = subscription.path
        else:
            request = layotto_event(event)  # the other schema's message
        try:
            answer = await self._stub.OnTopicEvent(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise NotImplementedByApp(error.details() or "") from None
            raise
        return _outcome(answer.status)

    async def close(self) -> None:
        await self._channel.close()

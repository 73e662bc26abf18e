"""Dapr's `dapr.proto.runtime.v1.Dapr` service over the runtime API, so Dapr's SDKs work unchanged.

State, publish, invoke and lock messages are wire-identical to Layotto's (reference §2.10), so
they are re-read as Layotto messages and served by the same API calls; configuration has Dapr's
own shape (items by key with versions, subscriptions by id, Alpha1 and stable names alike).

Not served (UNIMPLEMENTED, as the generated base class answers): QueryStateAlpha1, bindings,
secrets, Shutdown (an application cannot stop the host) and the actor/workflow RPCs this schema
leaves out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from host.api import RuntimeApi
from host.api.errors import ApiError
from host.api.feed import END, ThreadFeed
from host.api.topics import TopicEvent
from host.components.configuration import ConfigItem
from host.grpc import status
from host.grpc.layotto import EMPTY, metadata_of, trace_context
from host.grpc.proto.dapr.proto.common.v1 import common_pb2
from host.grpc.proto.dapr.proto.runtime.v1 import appcallback_pb2, dapr_pb2_grpc
from host.grpc.proto.dapr.proto.runtime.v1 import dapr_pb2 as pb
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as layotto
from host.grpc.topics import topic_stream

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
M = TypeVar("M", bound=Message)


def convert(message: Message, into: type[M]) -> M:
    """The same bytes read under the other schema (the two are wire-identical for these messages)."""
    return into.FromString(message.SerializeToString())


def dapr_items(items: Sequence[ConfigItem]) -> dict[str, common_pb2.ConfigurationItem]:
    return {item.key: common_pb2.ConfigurationItem(value=item.value, version=item.version,
                                                   metadata=dict(item.metadata)) for item in items}


class DaprRuntime(dapr_pb2_grpc.DaprServicer):
    def __init__(self, api: RuntimeApi):
        self.api = api

    @status.unary
    async def InvokeService(self, request: pb.InvokeServiceRequest, context: Context) -> common_pb2.InvokeResponse:
        response = await self.api.invoke.invoke(convert(request, layotto.InvokeServiceRequest), metadata_of(context))
        return convert(response, common_pb2.InvokeResponse)

    # -- state ----------------------------------------------------------------------------------------
    @status.unary
    async def GetState(self, request: pb.GetStateRequest, context: Context) -> pb.GetStateResponse:
        response = await self.api.run(self.api.state.get, convert(request, layotto.GetStateRequest))
        return convert(response, pb.GetStateResponse)

    @status.unary
    async def GetBulkState(self, request: pb.GetBulkStateRequest, context: Context) -> pb.GetBulkStateResponse:
        response = await self.api.run(self.api.state.get_bulk, convert(request, layotto.GetBulkStateRequest))
        return convert(response, pb.GetBulkStateResponse)

    @status.unary
    async def SaveState(self, request: pb.SaveStateRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.state.save, convert(request, layotto.SaveStateRequest))
        return EMPTY

    @status.unary
    async def DeleteState(self, request: pb.DeleteStateRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.state.delete, convert(request, layotto.DeleteStateRequest))
        return EMPTY

    @status.unary
    async def DeleteBulkState(self, request: pb.DeleteBulkStateRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.state.delete_bulk, convert(request, layotto.DeleteBulkStateRequest))
        return EMPTY

    @status.unary
    async def ExecuteStateTransaction(self, request: pb.ExecuteStateTransactionRequest,
                                      context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.state.transact, convert(request, layotto.ExecuteStateTransactionRequest))
        return EMPTY

    # -- pub/sub --------------------------------------------------------------------------------------
    @status.unary
    async def PublishEvent(self, request: pb.PublishEventRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.pubsub.publish, convert(request, layotto.PublishEventRequest),
                           *trace_context(context))
        return EMPTY

    @status.unary
    async def BulkPublishEvent(self, request: pb.BulkPublishRequest, context: Context) -> pb.BulkPublishResponse:
        entries = [(entry.entry_id, bytes(entry.event), entry.content_type, dict(entry.metadata))
                   for entry in request.entries]
        failed = await self.api.run(self.api.pubsub.publish_bulk, request.pubsub_name, request.topic, entries,
                                    dict(request.metadata))
        return pb.BulkPublishResponse(failedEntries=[pb.BulkPublishResponseFailedEntry(entry_id=entry_id, error=error)
                                                     for entry_id, error in failed])

    BulkPublishEventAlpha1 = BulkPublishEvent

    async def SubscribeTopicEventsAlpha1(self, request_iterator: AsyncIterator[pb.SubscribeTopicEventsRequestAlpha1],
                                         context: Context) -> AsyncIterator[pb.SubscribeTopicEventsResponseAlpha1]:
        """A streaming subscription (host/api/topics.py, host/grpc/topics.py)."""
        async for response in topic_stream(
                self.api, request_iterator, context,
                lambda: pb.SubscribeTopicEventsResponseAlpha1(
                    initial_response=pb.SubscribeTopicEventsResponseInitialAlpha1()),
                lambda event: pb.SubscribeTopicEventsResponseAlpha1(event_message=dapr_event(event))):
            yield response

    # -- lock -----------------------------------------------------------------------------------------
    @status.unary
    async def TryLockAlpha1(self, request: pb.TryLockRequest, context: Context) -> pb.TryLockResponse:
        response = await self.api.run(self.api.lock.try_lock, convert(request, layotto.TryLockRequest))
        return convert(response, pb.TryLockResponse)

    @status.unary
    async def UnlockAlpha1(self, request: pb.UnlockRequest, context: Context) -> pb.UnlockResponse:
        response = await self.api.run(self.api.lock.unlock, convert(request, layotto.UnlockRequest))
        return convert(response, pb.UnlockResponse)

    # -- configuration --------------------------------------------------------------------------------
    @status.unary
    async def GetConfiguration(self, request: pb.GetConfigurationRequest,
                               context: Context) -> pb.GetConfigurationResponse:
        items = await self.api.run(self.api.configuration.get_items, request.store_name, list(request.keys),
                                   dict(request.metadata))
        return pb.GetConfigurationResponse(items=dapr_items(items))

    GetConfigurationAlpha1 = GetConfiguration

    async def SubscribeConfiguration(self, request: pb.SubscribeConfigurationRequest,
                                     context: Context) -> AsyncIterator[pb.SubscribeConfigurationResponse]:
        """Server-streaming: the first message carries the subscription id (the SDK waits for it),
        then one message per change of the subscribed keys (default group and label), until
        UnsubscribeConfiguration, the client cancelling, or the host stopping."""
        feed: ThreadFeed[list[ConfigItem]] = ThreadFeed()
        configuration = self.api.configuration

        try:  # group and label left empty: the API delivers the default group's items only
            subscription = await self.api.run(configuration.subscribe, request.store_name, list(request.keys),
                                              feed.put, feed.end, metadata=dict(request.metadata))
        except ApiError as error:
            await status.abort(context, error)
        try:
            yield pb.SubscribeConfigurationResponse(id=subscription)
            while (items := await feed.get()) is not END:
                yield pb.SubscribeConfigurationResponse(id=subscription, items=dapr_items(items))  # type: ignore[arg-type]
        finally:
            configuration.unsubscribe(request.store_name, subscription)

    SubscribeConfigurationAlpha1 = SubscribeConfiguration

    @status.unary
    async def UnsubscribeConfiguration(self, request: pb.UnsubscribeConfigurationRequest,
                                       context: Context) -> pb.UnsubscribeConfigurationResponse:
        if self.api.configuration.unsubscribe(request.store_name, request.id):
            return pb.UnsubscribeConfigurationResponse(ok=True)
        return pb.UnsubscribeConfigurationResponse(
            ok=False, message=f"no subscription {request.id!r} on configuration store {request.store_name!r}")

    UnsubscribeConfigurationAlpha1 = UnsubscribeConfiguration

    # -- metadata -------------------------------------------------------------------------------------
    @status.unary
    async def GetMetadata(self, request: pb.GetMetadataRequest, context: Context) -> pb.GetMetadataResponse:
        described = self.api.metadata.describe()
        return pb.GetMetadataResponse(
            id=described.app_id, runtime_version=described.runtime_version, extended_metadata=described.extended,
            registered_components=[pb.RegisteredComponents(name=c.name, type=c.type, version=c.version,
                                                           capabilities=c.capabilities)
                                   for c in described.components])

    @status.unary
    async def SetMetadata(self, request: pb.SetMetadataRequest, context: Context) -> empty_pb2.Empty:
        self.api.metadata.set(request.key, request.value)
        return EMPTY


def dapr_event(event: TopicEvent) -> appcallback_pb2.TopicEventRequest:
    """Dapr's shape: `path` empty (no routing rules), every other CloudEvent attribute in
    `extensions` (a Struct)."""
    message = appcallback_pb2.TopicEventRequest(
        id=event.id, source=event.source, type=event.type, spec_version=event.spec_version,
        data_content_type=event.data_content_type, topic=event.topic, data=event.data,
        pubsub_name=event.pubsub_name)
    if event.extensions:
        message.extensions.update(event.extensions)
    return message

"""Layotto's `spec.proto.runtime.v1.Runtime` service over the runtime API (host/api): each method
is a one-line translation; validation, codes and semantics are the API's. Blocking component calls
run on the API's threads; InvokeService runs on the event loop through the one call path.

Not served (UNIMPLEMENTED, as the generated base class answers): LockKeepAlive (Layotto itself does
not implement it), InvokeBinding, GetSecret, GetBulkSecret (no such components here), and Layotto's
file API (not in this schema).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf import empty_pb2

from host.api import ApiError, RuntimeApi
from host.api.configuration import layotto_item
from host.api.feed import END, ThreadFeed
from host.api.topics import TopicEvent
from host.components.configuration import ConfigItem
from host.grpc import status
from host.grpc.proto.spec.proto.runtime.v1 import appcallback_pb2, runtime_pb2_grpc
from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
from host.grpc.topics import topic_stream

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
EMPTY = empty_pb2.Empty()


def metadata_of(context: Context) -> list[tuple[str, str]]:
    return [(key, value) for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)]


def trace_context(context: Context) -> tuple[str, str]:
    """(traceparent, tracestate) the caller sent, for the CloudEvent of a publish."""
    metadata = dict(metadata_of(context))
    return metadata.get("traceparent", ""), metadata.get("tracestate", "")


class LayottoRuntime(runtime_pb2_grpc.RuntimeServicer):
    def __init__(self, api: RuntimeApi):
        self.api = api

    @status.unary
    async def SayHello(self, request: pb.SayHelloRequest, context: Context) -> pb.SayHelloResponse:
        # Layotto's hello components greet by name; this host has one, built in.
        greeting = f"greetings, {request.name}" if request.name else "greetings"
        response = pb.SayHelloResponse(hello=greeting)
        if request.HasField("data"):
            response.data.CopyFrom(request.data)
        return response

    @status.unary
    async def InvokeService(self, request: pb.InvokeServiceRequest, context: Context) -> pb.InvokeResponse:
        return await self.api.invoke.invoke(request, metadata_of(context))

    # -- configuration ----------------------------------------------------------------------------
    @status.unary
    async def GetConfiguration(self, request: pb.GetConfigurationRequest,
                               context: Context) -> pb.GetConfigurationResponse:
        return await self.api.run(self.api.configuration.get, request)

    @status.unary
    async def SaveConfiguration(self, request: pb.SaveConfigurationRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.configuration.save, request)
        return EMPTY

    @status.unary
    async def DeleteConfiguration(self, request: pb.DeleteConfigurationRequest,
                                  context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.configuration.delete, request)
        return EMPTY

    async def SubscribeConfiguration(self, request_iterator: AsyncIterator[pb.SubscribeConfigurationRequest],
                                     context: Context) -> AsyncIterator[pb.SubscribeConfigurationResponse]:
        """Bidi: every request adds a subscription; every change of a subscribed item is one
        response naming its store. The stream stays open after the client half-closes, until it
        cancels or the host stops."""
        feed: ThreadFeed[tuple[str, list[ConfigItem]] | ApiError] = ThreadFeed()
        subscriptions: list[tuple[str, str]] = []
        configuration = self.api.configuration

        async def subscribe_each() -> None:
            async for request in request_iterator:
                store = request.store_name

                def changed(items: list[ConfigItem], store: str = store) -> None:
                    feed.put((store, items))

                try:
                    subscription = await self.api.run(configuration.subscribe, store, list(request.keys), changed,
                                                      feed.end, group=request.group, label=request.label,
                                                      metadata=dict(request.metadata), app_id=request.app_id)
                except ApiError as error:
                    feed.put(error)
                    return
                subscriptions.append((store, subscription))

        reader = asyncio.ensure_future(subscribe_each())
        try:
            while True:
                event = await feed.get()
                if event is END:
                    return
                if isinstance(event, ApiError):
                    await status.abort(context, event)
                store, items = event  # type: ignore[misc]  # END and ApiError are handled above
                yield pb.SubscribeConfigurationResponse(store_name=store, app_id=self.api.app_id,
                                                        items=[layotto_item(item) for item in items])
        finally:
            reader.cancel()
            for store, subscription in subscriptions:
                configuration.unsubscribe(store, subscription)

    # -- lock, sequencer ----------------------------------------------------------------------------
    @status.unary
    async def TryLock(self, request: pb.TryLockRequest, context: Context) -> pb.TryLockResponse:
        return await self.api.run(self.api.lock.try_lock, request)

    @status.unary
    async def Unlock(self, request: pb.UnlockRequest, context: Context) -> pb.UnlockResponse:
        return await self.api.run(self.api.lock.unlock, request)

    @status.unary
    async def GetNextId(self, request: pb.GetNextIdRequest, context: Context) -> pb.GetNextIdResponse:
        return await self.api.run(self.api.sequencer.next_id, request)

    # -- state ----------------------------------------------------------------------------------------
    @status.unary
    async def GetState(self, request: pb.GetStateRequest, context: Context) -> pb.GetStateResponse:
        return await self.api.run(self.api.state.get, request)

    @status.unary
    async def GetBulkState(self, request: pb.GetBulkStateRequest, context: Context) -> pb.GetBulkStateResponse:
        return await self.api.run(self.api.state.get_bulk, request)

    @status.unary
    async def SaveState(self, request: pb.SaveStateRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.state.save, request)
        return EMPTY

    @status.unary
    async def DeleteState(self, request: pb.DeleteStateRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.state.delete, request)
        return EMPTY

    @status.unary
    async def DeleteBulkState(self, request: pb.DeleteBulkStateRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.state.delete_bulk, request)
        return EMPTY

    @status.unary
    async def ExecuteStateTransaction(self, request: pb.ExecuteStateTransactionRequest,
                                      context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.state.transact, request)
        return EMPTY

    # -- pub/sub --------------------------------------------------------------------------------------
    @status.unary
    async def PublishEvent(self, request: pb.PublishEventRequest, context: Context) -> empty_pb2.Empty:
        await self.api.run(self.api.pubsub.publish, request, *trace_context(context))
        return EMPTY

    async def SubscribeTopicEvents(self, request_iterator: AsyncIterator[pb.SubscribeTopicEventsRequest],
                                   context: Context) -> AsyncIterator[pb.SubscribeTopicEventsResponse]:
        """A streaming subscription (host/api/topics.py, host/grpc/topics.py)."""
        async for response in topic_stream(
                self.api, request_iterator, context,
                lambda: pb.SubscribeTopicEventsResponse(initial_response=pb.SubscribeTopicEventsResponseInitial()),
                lambda event: pb.SubscribeTopicEventsResponse(event_message=layotto_event(event))):
            yield response


def layotto_event(event: TopicEvent) -> appcallback_pb2.TopicEventRequest:
    """Layotto's shape: field 10 is a string map (the message's metadata and its pubsub name)."""
    return appcallback_pb2.TopicEventRequest(
        id=event.id, source=event.source, type=event.type, spec_version=event.spec_version,
        data_content_type=event.data_content_type, topic=event.topic, data=event.data,
        pubsub_name=event.pubsub_name, metadata={**event.metadata, "pubsubName": event.pubsub_name})

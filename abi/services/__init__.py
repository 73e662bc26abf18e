"""What the ABI needs from the embedding host, as small interfaces (`typing.Protocol`) the host
implements: one module per concern. Nothing here imports a server, a client library or a component."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from abi.foreign import DEFAULT_FOREIGN_FUNCTIONS, ForeignFunction
from abi.services.calls import (
    GrpcCall,
    GrpcCaller,
    GrpcClose,
    GrpcEvent,
    GrpcInitialMetadata,
    GrpcMessage,
    GrpcSink,
    GrpcStream,
    GrpcTrailingMetadata,
    HttpCaller,
    HttpCallResult,
    NoGrpcUpstreams,
    NoUpstreams,
)
from abi.services.errors import BadRequest, Conflict, ServiceError, UnknownName
from abi.services.runtime import (
    ConfigurationAccess,
    ForeignRuntime,
    Invoker,
    LockAccess,
    PubSubAccess,
    SequencerAccess,
    StateAccess,
    StateEntry,
    Unavailable,
)
from abi.shared import Metrics, SharedData, SharedQueues


def _missing(what: str) -> Callable[[], Any]:
    return lambda: Unavailable(what)


@dataclass
class HostServices:
    state: StateAccess = field(default_factory=_missing("state"))
    pubsub: PubSubAccess = field(default_factory=_missing("pub/sub"))
    lock: LockAccess = field(default_factory=_missing("locks"))
    sequencer: SequencerAccess = field(default_factory=_missing("the sequencer"))
    configuration: ConfigurationAccess = field(default_factory=_missing("configuration"))
    runtime: ForeignRuntime = field(default_factory=_missing("the runtime API"))
    invoker: Invoker = field(default_factory=_missing("invoking other functions"))
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("wasm.guest"))
    now_ns: Callable[[], int] = time.time_ns
    http: HttpCaller = field(default_factory=NoUpstreams)
    grpc: GrpcCaller = field(default_factory=NoGrpcUpstreams)
    shared_data: SharedData = field(default_factory=SharedData)
    queues: SharedQueues = field(default_factory=SharedQueues)
    metrics: Metrics = field(default_factory=Metrics)
    foreign_functions: dict[str, ForeignFunction] = field(default_factory=lambda: dict(DEFAULT_FOREIGN_FUNCTIONS))


__all__ = [
    "BadRequest", "ConfigurationAccess", "Conflict", "ForeignRuntime", "GrpcCall", "GrpcCaller", "GrpcClose",
    "GrpcEvent", "GrpcInitialMetadata", "GrpcMessage", "GrpcSink", "GrpcStream", "GrpcTrailingMetadata",
    "HostServices", "HttpCallResult", "HttpCaller", "Invoker", "LockAccess", "PubSubAccess", "SequencerAccess",
    "ServiceError", "StateAccess", "StateEntry", "UnknownName",
]

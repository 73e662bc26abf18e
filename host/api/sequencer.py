"""The sequencer API (Layotto's GetNextId) over the host's sequencers. STRONG asks the component for
each id; WEAK (the enum's default) serves ids from segments reserved in advance (one `WeakIds` per
sequencer, as Layotto's runtime keeps one cache per store), so most calls cost no round trip. An
empty key or an unknown store is InvalidArgument; metadata is refused (none is supported). Calls
block: run them off the loop.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from host.api._components import SEQUENCER, mapped, named, no_metadata
from host.api.errors import invalid
from host.api.observed import component_call
from host.components.catalog import Components
from host.components.sequencer import Sequencer, WeakIds
from host.lazy import lazy_module

if TYPE_CHECKING:
    from host.grpc.proto.spec.proto.runtime.v1 import runtime_pb2 as pb
else:  # protobuf and the generated messages (~10-20 ms to import) at the first runtime API call (issue 16)
    pb = lazy_module("host.grpc.proto.spec.proto.runtime.v1.runtime_pb2")


class SequencerApi:
    def __init__(self, components: Components):
        self.components = components
        self._weak: dict[str, WeakIds] = {}
        self._lock = threading.Lock()

    def _weak_ids(self, name: str, sequencer: Sequencer) -> WeakIds:
        with self._lock:
            cache = self._weak.get(name)
            if cache is None:
                cache = self._weak[name] = WeakIds(sequencer)
            return cache

    @component_call("sequencer")
    def next_id(self, request: pb.GetNextIdRequest) -> pb.GetNextIdResponse:
        sequencer: Sequencer = named(self.components, SEQUENCER, request.store_name)
        if not request.key:
            raise invalid("GetNextIdRequest.key is empty")
        no_metadata(request.metadata, "GetNextIdRequest")
        increment = request.options.increment
        with mapped(f"next id of {request.key!r} from sequencer {request.store_name!r}", "ERR_SEQUENCER"):
            if increment == pb.SequencerOptions.STRONG:
                next_id = sequencer.next_id(request.key)
            elif increment == pb.SequencerOptions.WEAK:
                next_id = self._weak_ids(request.store_name, sequencer).next_id(request.key)
            else:
                raise invalid(f"GetNextIdRequest.options.increment {increment} is not WEAK or STRONG")
        return pb.GetNextIdResponse(next_id=next_id)

"""Sequencers (Layotto's GetNextId/GetSegment): the interface, the WEAK-mode id cache and the
backends by type name."""

from __future__ import annotations

from host.components.sequencer.base import Sequencer, SequencerConfig, sequencer_key
from host.components.sequencer.cache import WeakIds

BACKENDS: dict[str, str] = {
    "memory": "host.components.sequencer.memory",
    "redis": "host.components.sequencer.redis",
}

__all__ = ["BACKENDS", "Sequencer", "SequencerConfig", "WeakIds", "sequencer_key"]

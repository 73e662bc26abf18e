"""Counters held in this process (Layotto's `in-memory` sequencer): for one host, tests and development."""

from __future__ import annotations

import threading
from typing import Any, Literal

from host.components.base import ComponentContext
from host.components.sequencer.base import SequencerConfig, check_segment_size, sequencer_key
from host.components.sequencer.layotto import sequencer_fields_from_layotto


class Config(SequencerConfig):
    type: Literal["memory", "in-memory"]


def from_layotto(metadata: dict[str, Any]) -> dict[str, Any]:
    return sequencer_fields_from_layotto(metadata)


class Backend:
    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self._lock = threading.Lock()
        # A fresh table has nothing stored, so every seed applies.
        self._current: dict[str, int] = {
            sequencer_key(config.key_prefix, context, key): floor for key, floor in config.bigger_than.items()}

    def next_id(self, key: str) -> int:
        return self.segment(key, 1)[1]

    def segment(self, key: str, size: int) -> tuple[int, int]:
        check_segment_size(size)
        stored = sequencer_key(self.config.key_prefix, self.context, key)
        with self._lock:
            last = self._current.get(stored, 0) + size
            self._current[stored] = last
        return last - size + 1, last

    def health(self) -> tuple[bool, str]:
        return True, "memory"

    def close(self) -> None:
        pass

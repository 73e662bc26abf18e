"""Layotto's WEAK GetNextId mode: ids served from segments reserved in advance, so most calls cost
no round trip. Ids are unique everywhere (segments never overlap) and increase within this process,
but two processes interleave their segments, so ids are not globally ordered.

The next segment is reserved when fewer than `refill_below` ids remain. The caller that notices
fetches it outside the key's lock, so other callers keep drawing the ids still left; only when none
are left do they wait for it. A backend without segments (NotSupported) is asked for each id.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from host.components.errors import ComponentError, InvalidRequest, NotSupported
from host.components.sequencer.base import Sequencer


class _Reserve:
    """One key's reserved, not yet served ids: consecutive runs, oldest first."""

    def __init__(self) -> None:
        self.runs: deque[list[int]] = deque()  # [next, last] each
        self.remaining = 0
        self.refilling = False  # one fetch at a time keeps the runs in increasing order
        self.changed = threading.Condition(threading.Lock())

    def take(self) -> int:
        run = self.runs[0]
        value = run[0]
        if value == run[1]:
            self.runs.popleft()
        else:
            run[0] = value + 1
        self.remaining -= 1
        return value


class WeakIds:
    def __init__(self, sequencer: Sequencer, segment_size: int = 10000, refill_below: int = 1000,
                 logger: logging.Logger | None = None):
        if segment_size <= 0 or not 0 <= refill_below <= segment_size:
            raise ValueError(f"need segment_size > 0 and 0 <= refill_below <= segment_size, "
                             f"got {segment_size} and {refill_below}")
        self.sequencer = sequencer
        self.segment_size = segment_size
        self.refill_below = refill_below
        self.logger = logger or logging.getLogger("wasm_faas.components")
        self._reserves: dict[str, _Reserve] = {}
        self._reserves_lock = threading.Lock()
        self._segments = True  # False once the backend said it has none

    def next_id(self, key: str) -> int:
        if not key:
            raise InvalidRequest("the sequencer key must not be empty")
        with self._reserves_lock:
            reserve = self._reserves.setdefault(key, _Reserve())
        while True:
            if not self._segments:
                return self.sequencer.next_id(key)
            with reserve.changed:
                if reserve.remaining and (reserve.refilling or reserve.remaining >= self.refill_below):
                    return reserve.take()
                if reserve.refilling:  # empty, and another caller is fetching
                    reserve.changed.wait()
                    continue
                reserve.refilling = True
            try:
                self._refill(key, reserve)
            except ComponentError as error:
                with reserve.changed:
                    if not reserve.remaining:
                        raise
                    # Ids are left: serve one; a later call tries the refill again.
                    self.logger.warning("sequencer: reserving ids for %r failed: %s", key, error)
                    return reserve.take()
            # Loop: take an id from the grown reserve (or wait again if quicker callers emptied it).

    def _refill(self, key: str, reserve: _Reserve) -> None:
        run: list[int] | None = None
        try:
            first, last = self.sequencer.segment(key, self.segment_size)
            run = [first, last]
        except NotSupported:
            self._segments = False
        finally:
            # Appending and clearing the flag together: the next fetch cannot overtake this one.
            with reserve.changed:
                if run is not None:
                    reserve.runs.append(run)
                    reserve.remaining += run[1] - run[0] + 1
                reserve.refilling = False
                reserve.changed.notify_all()

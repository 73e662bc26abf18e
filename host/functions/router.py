"""Function id -> deployed versions. Several modules reporting one id share it: one is picked at random."""

from __future__ import annotations

import random
import threading

from host.functions.version import FunctionVersion


class Router:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, tuple[FunctionVersion, ...]] = {}

    def pick(self, function_id: str) -> FunctionVersion | None:
        versions = self._routes.get(function_id)  # a tuple, replaced atomically: no lock on the hot path
        if not versions:
            return None
        return versions[0] if len(versions) == 1 else random.choice(versions)

    def serving(self, function_id: str) -> tuple[FunctionVersion, ...]:
        """Every version routed under `function_id`."""
        return self._routes.get(function_id, ())

    def replace(self, old: FunctionVersion | None, new: FunctionVersion | None) -> None:
        """Swap one version for another: the new one is routed before the old one goes, so no
        request sees neither (ids may differ). Each id's entry is one tuple, set in one step, so
        readers need no lock; the dict is changed in place, not copied (10,000 deploys would copy
        it 10,000 times, issue 16)."""
        with self._lock:
            routes = self._routes
            if new is not None:
                routes[new.function_id] = routes.get(new.function_id, ()) + (new,)
            if old is not None:
                remaining = tuple(v for v in routes.get(old.function_id, ()) if v is not old)
                if remaining:
                    routes[old.function_id] = remaining
                else:
                    routes.pop(old.function_id, None)

    def ids(self) -> list[str]:
        return sorted(self._routes)

    def versions(self) -> list[FunctionVersion]:
        # list() copies in one step under the GIL: replace() may change the dict from another thread.
        return [v for versions in list(self._routes.values()) for v in versions]

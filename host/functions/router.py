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

    def replace(self, old: FunctionVersion | None, new: FunctionVersion | None) -> None:
        """Swap one version for another in one step: no request sees neither (ids may differ)."""
        with self._lock:
            routes = dict(self._routes)
            if old is not None:
                remaining = tuple(v for v in routes.get(old.function_id, ()) if v is not old)
                if remaining:
                    routes[old.function_id] = remaining
                else:
                    routes.pop(old.function_id, None)
            if new is not None:
                routes[new.function_id] = routes.get(new.function_id, ()) + (new,)
            self._routes = routes

    def ids(self) -> list[str]:
        return sorted(self._routes)

    def versions(self) -> list[FunctionVersion]:
        return [v for versions in self._routes.values() for v in versions]

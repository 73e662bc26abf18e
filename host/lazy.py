"""Modules imported on first use, for start-up time (issue 16): a client library only some
configurations use (redis-py, psycopg; ~0.1-0.2 s each to import, redis-py pulling in
OpenTelemetry's SDK) costs nothing to a host that does not configure it.

    if TYPE_CHECKING:
        import redis
    else:
        redis = lazy_module("redis")

The first attribute read imports the module (under the interpreter's import lock, so threads
racing for it get one import); each attribute read is then kept on the proxy, a plain lookup."""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    def __getattr__(self, attribute: str) -> Any:  # only for names not yet kept in __dict__
        value = getattr(importlib.import_module(self.__name__), attribute)
        self.__dict__[attribute] = value
        return value


def lazy_module(name: str) -> Any:
    """A stand-in for `import name` that imports it when one of its attributes is first read."""
    return _LazyModule(name)

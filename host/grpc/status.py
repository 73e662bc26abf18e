"""The one map from the runtime API's outcome to a gRPC status, for every servicer method: an
`ApiError` ends the call with its code and message; anything else is a host bug, logged with its
traceback and answered Internal, so a bad request never takes the server down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from host.api.errors import ApiError, Code

log = logging.getLogger(__name__)

CODES: dict[Code, grpc.StatusCode] = {code: grpc.StatusCode[code.name] for code in Code}

Servicer = TypeVar("Servicer")
Result = TypeVar("Result")
Method = Callable[[Servicer, Any, grpc.aio.ServicerContext], Awaitable[Result]]


async def abort(context: grpc.aio.ServicerContext, error: ApiError) -> NoReturn:
    await context.abort(CODES[error.code], error.message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def abort_unexpected(context: grpc.aio.ServicerContext, method: str, error: Exception) -> NoReturn:
    log.error("gRPC %s failed in the host", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method} failed in the host: {type(error).__name__}: {error}")
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def unary(method: Method[Servicer, Result]) -> Method[Servicer, Result]:
    """Wraps a unary servicer method with the map."""

    @functools.wraps(method)
    async def answer(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Result:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except ApiError as error:
            await abort(context, error)
        except Exception as error:  # noqa: BLE001 - see the module docstring
            await abort_unexpected(context, method.__name__, error)

    return answer

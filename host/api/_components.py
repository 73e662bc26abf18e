"""Picking the component a request names, and turning component errors into the API's error, with
the codes of the reference (Dapr's pkg/api and Layotto's default_api agree on them):
no component of the capability configured -> FailedPrecondition, an empty or unknown name ->
InvalidArgument, bad arguments -> InvalidArgument, an unsupported operation -> Unimplemented, an
ETag mismatch -> Aborted (Internal inside a transaction, as Dapr answers), any backend failure -> Internal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from host.api.errors import ApiError, Code
from host.components.catalog import Components
from host.components.errors import ComponentError, EtagInvalid, EtagMismatch, InvalidRequest, NotSupported


@dataclass(frozen=True)
class Kind:
    """How the API names one capability's components in its messages and errors."""

    capability: str  # the Components key: "state", "pubsub", ...
    noun: str  # "state store", "pubsub", ...
    dapr: str  # Dapr's error code stem: STATE_STORE, PUBSUB, LOCK_STORE, ...
    not_configured_http: int  # Dapr's HTTP status for "none configured" (its gRPC code is FailedPrecondition)
    not_found_http: int = 400


UNKNOWN = "unknown_component"  # the runtime-call metrics' outcome (host/metrics/runtime.py)
STATE = Kind("state", "state store", "STATE_STORE", 500)
PUBSUB = Kind("pubsub", "pubsub", "PUBSUB", 400, not_found_http=404)
LOCK = Kind("lock", "lock store", "LOCK_STORE", 500)
SEQUENCER = Kind("sequencer", "sequencer", "SEQUENCER", 500)
CONFIGURATION = Kind("configuration", "configuration store", "CONFIGURATION_STORE", 500)


def named(components: Components, kind: Kind, name: str) -> Any:
    """The component `name` of `kind`, or the API error Dapr answers."""
    configured: Mapping[str, Any] = components.of(kind.capability)
    if not configured:
        raise ApiError(Code.FAILED_PRECONDITION, f"no {kind.noun} is configured",
                       error_code=f"ERR_{kind.dapr}_NOT_CONFIGURED", http_status=kind.not_configured_http,
                       outcome=UNKNOWN)
    if not name:
        raise ApiError(Code.INVALID_ARGUMENT, f"the {kind.noun} name is empty",
                       error_code=f"ERR_{kind.dapr}_NOT_FOUND", http_status=kind.not_found_http, outcome=UNKNOWN)
    component = configured.get(name)
    if component is None:
        raise ApiError(Code.INVALID_ARGUMENT, f"{kind.noun} {name!r} is not found (configured: "
                       f"{', '.join(sorted(configured))})", error_code=f"ERR_{kind.dapr}_NOT_FOUND",
                       http_status=kind.not_found_http, outcome=UNKNOWN)
    return component


@contextmanager
def mapped(action: str, error_code: str, *, in_transaction: bool = False) -> Iterator[None]:
    """Component errors raised inside become ApiError; `action` prefixes the message
    ("saving state in 'statestore'"), `error_code` is Dapr's for a failure of that action."""
    try:
        yield
    except ApiError:
        raise
    except InvalidRequest as error:
        raise ApiError(Code.INVALID_ARGUMENT, f"{action}: {error}", error_code="ERR_MALFORMED_REQUEST") from None
    except NotSupported as error:
        raise ApiError(Code.UNIMPLEMENTED, f"{action}: {error}", error_code=error_code) from None
    except EtagMismatch as error:
        if in_transaction:  # Dapr's code; still a conflict for the metrics
            raise ApiError(Code.INTERNAL, f"{action}: {error}", error_code=error_code, outcome="conflict") from None
        raise ApiError(Code.ABORTED, f"{action}: {error}", error_code=error_code) from None
    except EtagInvalid as error:
        if in_transaction:
            raise ApiError(Code.INTERNAL, f"{action}: {error}", error_code=error_code, outcome="bad_request") from None
        raise ApiError(Code.INVALID_ARGUMENT, f"{action}: {error}", error_code=error_code) from None
    except ComponentError as error:
        raise ApiError(Code.INTERNAL, f"{action}: {error}", error_code=error_code) from None


def no_metadata(metadata: Mapping[str, str], where: str, allowed: tuple[str, ...] = ()) -> None:
    """Refuses request metadata this host does not act on, naming the first such key."""
    for key in metadata:
        if key not in allowed:
            known = f" (supported: {', '.join(allowed)})" if allowed else ""
            raise ApiError(Code.INVALID_ARGUMENT, f"{where} metadata {key!r} is not supported by this host{known}",
                           error_code="ERR_MALFORMED_REQUEST")

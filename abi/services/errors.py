"""What a runtime call made for a guest raises; each host import turns it into a proxy-wasm status."""

from __future__ import annotations

from abi.codes import Status


class ServiceError(Exception):
    """A runtime call failed; the guest gets `status` and the reason is logged with its function id."""

    status = Status.INTERNAL_FAILURE


class UnknownName(ServiceError):
    """No store / pubsub / function of that name is configured (NotFound)."""

    status = Status.NOT_FOUND


class BadRequest(ServiceError):
    """The guest's arguments are wrong: an empty key, an expiry <= 0... (BadArgument)."""

    status = Status.BAD_ARGUMENT


class Conflict(ServiceError):
    """An ETag did not match, or cannot have been issued by the store (CasMismatch)."""

    status = Status.CAS_MISMATCH

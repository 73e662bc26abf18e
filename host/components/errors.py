"""What a component raises. Each entry point maps these once: the ABI to proxy-wasm status codes,
the gRPC API to status codes, the Dapr HTTP API to HTTP statuses. Components never raise the ABI's
errors (they do not import `abi/`)."""

from __future__ import annotations


class ComponentError(Exception):
    """A backend failed: unreachable, timed out, refused, or answered an error."""


class EtagMismatch(ComponentError):
    """A write or delete carried an ETag that does not match the stored one (Dapr: Aborted / 409)."""


class EtagInvalid(ComponentError):
    """An ETag this backend cannot have issued, e.g. non-numeric for Redis (Dapr: InvalidArgument / 400)."""


class InvalidRequest(ComponentError):
    """The caller's arguments are wrong: an illegal key, an empty owner, an expiry <= 0..."""


class NotSupported(ComponentError):
    """This backend does not offer the operation (e.g. transactions); Dapr answers Unimplemented."""

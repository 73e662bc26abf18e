"""Why a function cannot be deployed."""

from __future__ import annotations


class DeployError(Exception):
    """The module cannot be deployed; the message says why. `started_nothing`: it failed before any
    instance was started (unreadable, invalid, refused at a limit), so there is nothing to collect."""

    def __init__(self, message: str, *, started_nothing: bool = False):
        super().__init__(message)
        self.started_nothing = started_nothing

"""Why a function cannot be deployed."""

from __future__ import annotations


class DeployError(Exception):
    """The module cannot be deployed; the message says why."""

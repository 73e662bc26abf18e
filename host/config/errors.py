"""ConfigError and the one formatter of pydantic validation errors (config files, `name.toml`
settings beside modules, admin API bodies all report problems the same way)."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the field."""


def describe_validation_error(error: ValidationError) -> list[str]:
    """One `field.path: message` line per problem (pydantic's internal union tags left out)."""
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        problems.append(f"{location}: {item['msg']}" if location else str(item["msg"]))
    return problems

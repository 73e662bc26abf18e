"""Reading and writing the file backend's TOML or JSON document (format: see `file.py`).

The standard library reads TOML but does not write it; the documents here are flat maps of
strings, so writing them is a few lines of escaping rather than a dependency."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_ITEM_FIELDS = frozenset({"value", "version", "tags", "metadata"})


@dataclass(frozen=True)
class Entry:
    """One item as the file holds it; `version` None = not written, derived from the value."""

    value: str
    version: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def effective_version(self) -> str:
        if self.version is not None:
            return self.version
        return hashlib.blake2b(self.value.encode("utf-8"), digest_size=6).hexdigest()


def _scalar(where: str, raw: Any) -> str:
    if isinstance(raw, bool):  # before int: bool is an int
        return "true" if raw else "false"
    if isinstance(raw, str | int | float):
        return str(raw)
    raise ValueError(f"{where}: expected a string, got {type(raw).__name__}")


def _string_table(where: str, raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a table of strings, got {type(raw).__name__}")
    return {str(name): _scalar(f"{where}.{name}", value) for name, value in raw.items()}


def _entry(name: str, raw: Any) -> Entry:
    if not isinstance(raw, Mapping):
        return Entry(_scalar(repr(name), raw))
    unknown = sorted(set(raw) - _ITEM_FIELDS)
    if unknown:
        raise ValueError(f"{name!r}: unknown field(s) {', '.join(unknown)} (an item has value, version, tags, "
                         "metadata)")
    if "value" not in raw:
        raise ValueError(f"{name!r}: an item table needs a 'value'")
    return Entry(value=_scalar(f"{name!r}.value", raw["value"]),
                 version=_scalar(f"{name!r}.version", raw["version"]) if "version" in raw else None,
                 tags=_string_table(f"{name!r}.tags", raw.get("tags", {})),
                 metadata=_string_table(f"{name!r}.metadata", raw.get("metadata", {})))


def parse(text: str, suffix: str) -> dict[str, Entry]:
    """Stored name -> entry; ValueError says what is wrong and where."""
    if suffix == ".json":
        try:
            document = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as error:
            raise ValueError(f"invalid JSON: {error}") from None
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object at the top, got {type(document).__name__}")
    else:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"invalid TOML: {error}") from None
    return {name: _entry(name, raw) for name, raw in document.items()}


def _as_document(entries: Mapping[str, Entry]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, entry in entries.items():
        if entry.version is None and not entry.tags and not entry.metadata:
            document[name] = entry.value  # kept in its simplest form, as people write it
            continue
        table: dict[str, Any] = {"value": entry.value}
        if entry.version is not None:
            table["version"] = entry.version
        if entry.tags:
            table["tags"] = dict(entry.tags)
        if entry.metadata:
            table["metadata"] = dict(entry.metadata)
        document[name] = table
    return document


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:  # control characters must be escaped in TOML strings
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return _toml_string(value)


def dump(entries: Mapping[str, Entry], suffix: str) -> str:
    document = _as_document(entries)
    if suffix == ".json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # One line per item (inline tables); a key with dots is quoted, so "log.level" stays one key.
    return "".join(f"{_toml_key(name)} = {_toml_value(value)}\n" for name, value in document.items())

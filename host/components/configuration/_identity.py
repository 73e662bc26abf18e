"""How an item's identity (group, label, key) becomes one stored name, shared by the backends so a
file and a Redis hold the same names.

An item of the default group and label (both empty) is stored under its bare key, which is what
Dapr clients, which know no groups, read and write. Any other item is stored as
`group||label||key` ("||" is Dapr's separator). To keep that reversible, groups and labels may not
contain "|" and keys may not contain "||"; a blank group or label means the default, as in Layotto.
"""

from __future__ import annotations

from host.components.errors import InvalidRequest

SEPARATOR = "||"


def check_text(what: str, text: str) -> None:
    """Stores keep UTF-8: a string with lone surrogates cannot be written anywhere."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} {text!r} is not valid Unicode text") from None


def normalize(part: str) -> str:
    return "" if not part.strip() else part


def storage_name(key: str, group: str = "", label: str = "") -> str:
    """The stored name of (group, label, key); raises InvalidRequest for names it cannot encode."""
    if not key:
        raise InvalidRequest("a configuration key must not be empty")
    if SEPARATOR in key:
        raise InvalidRequest(f"configuration key {key!r} must not contain {SEPARATOR!r}")
    check_text("configuration key", key)
    group, label = normalize(group), normalize(label)
    for what, part in (("group", group), ("label", label)):
        if "|" in part:
            raise InvalidRequest(f"configuration {what} {part!r} must not contain '|'")
        check_text(f"configuration {what}", part)
    if not group and not label:
        return key
    return f"{group}{SEPARATOR}{label}{SEPARATOR}{key}"


def parse_name(name: str) -> tuple[str, str, str]:
    """(key, group, label) of a stored name. Lenient: a name this module would not have written
    (one "||", say, from another program) is a key of the default group."""
    parts = name.split(SEPARATOR, 2)
    if len(parts) == 3 and parts[2] and "|" not in parts[0] and "|" not in parts[1] and (parts[0] or parts[1]):
        return parts[2], parts[0], parts[1]
    return name, "", ""


def identity_of(group: str, label: str) -> tuple[str, str]:
    """The (group, label) a request means, validated like `storage_name` does."""
    group, label = normalize(group), normalize(label)
    for what, part in (("group", group), ("label", label)):
        if "|" in part:
            raise InvalidRequest(f"configuration {what} {part!r} must not contain '|'")
    return group, label

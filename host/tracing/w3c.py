"""W3C Trace Context (level 1) by hand: read `traceparent` / `tracestate`, make ids, write them back.

This runs for every request that makes a call, so it stays small: a few microseconds (parse, a new
span id, re-emit; `python bench/tracing.py --micro`), where an OpenTelemetry SDK span costs ~17 µs
even unsampled and ~40 µs sampled, before export (operations.md §1.3). A malformed
`traceparent` is ignored, as if it were absent (W3C §3.2.2.2/§3.3.1: never an error); its
`tracestate` then goes with it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

SAMPLED = 0x01  # trace-flags bit 0: the caller may have recorded this trace
MAX_TRACESTATE_CHARS = 512  # W3C §3.3.1.5: what a vendor must at least propagate
MAX_TRACESTATE_MEMBERS = 32

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z", re.DOTALL)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_random_bits = random.getrandbits  # ids must be unique, not secret (the OpenTelemetry SDK does the same)


def parse_traceparent(value: str) -> tuple[str, str, int] | None:
    """(trace id, parent span id, flags) of a valid header value; None for anything else."""
    match = _TRACEPARENT.match(value.strip(" \t"))
    if match is None:  # upper-case hex is not allowed either
        return None
    version, trace_id, parent_id, flags, later = match.groups()
    if version == "ff" or (later is not None and version == "00"):  # only a later version may append fields
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, int(flags, 16)


def format_traceparent(trace_id: str, span_id: str, flags: int) -> str:
    return f"00-{trace_id}-{span_id}-{flags & 0xFF:02x}"


def clean_tracestate(values: Iterable[str]) -> str:
    """Several `tracestate` headers joined (W3C: they are one list), empty members dropped, at most
    32 members and 512 characters kept (whole members); members with characters outside printable
    ASCII are dropped. The members themselves are passed on as the caller wrote them."""
    kept: list[str] = []
    size = -1
    for value in values:
        for member in value.split(","):
            member = member.strip(" \t")
            if not member or not member.isascii() or not member.isprintable():
                continue
            if len(kept) == MAX_TRACESTATE_MEMBERS or size + 1 + len(member) > MAX_TRACESTATE_CHARS:
                return ",".join(kept)
            kept.append(member)
            size += 1 + len(member)
    return ",".join(kept)


def new_trace_id() -> str:
    return f"{_random_bits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_random_bits(64) or 1:016x}"

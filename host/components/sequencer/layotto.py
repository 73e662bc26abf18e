"""Layotto's sequencer settings (`keyPrefix` in metadata, `biggerThan` beside it) as config fields,
shared by every sequencer backend's `from_layotto`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from host.components.base import key_prefix_from_layotto


def sequencer_fields_from_layotto(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`biggerThan` may be a mapping (as in Layotto's config.json) or its JSON text; its values may
    be ints or decimal strings."""
    fields = key_prefix_from_layotto(metadata)
    seeds = metadata.get("biggerThan")
    if isinstance(seeds, str) and seeds.strip():
        seeds = json.loads(seeds)
    if seeds:
        if not isinstance(seeds, Mapping):
            raise ValueError(f"biggerThan must map keys to numbers, got {seeds!r}")
        fields["bigger_than"] = {str(key): int(value) for key, value in seeds.items()}
    return fields

"""`serve --workers N`: worker 0's public `/metrics` speaks for every worker. Each worker keeps its
own registry (no prometheus_client multiprocess mode: it costs 2.6x per update and breaks custom
collectors); worker 0 fetches the others' expositions over the private admin fan-out and merges
them, adding a `worker` label to every sample, and `wasm_faas_worker_up{worker}` (0 for a worker
that did not answer). Sum over `worker` in queries for host-wide numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample


class _Fixed(Collector):
    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_workers(expositions: Sequence[tuple[int, str | None]]) -> bytes:
    """One exposition from each worker's (index, text); text None: the worker did not answer."""
    families: dict[str, Metric] = {}
    up = Metric("wasm_faas_worker_up", "1 when the worker answered this scrape", "gauge")
    for index, text in expositions:
        worker = str(index)
        up.add_sample("wasm_faas_worker_up", {"worker": worker}, 0.0 if text is None else 1.0)
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            elif merged.type != family.type:
                continue  # workers disagree (a guest metric defined as two kinds): keep the first
            merged.samples.extend(Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
                                  for s in family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([up, *families.values()]))
    return generate_latest(registry)

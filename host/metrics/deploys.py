"""Deploy outcomes: `wasm_faas_deploys_total{function,outcome=deployed|rejected|removed}`.

The label is the function id when a version serves, else the module's file stem (a rejected
module has no id yet). host/metrics/counted_deployments.py feeds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

if TYPE_CHECKING:
    from host.functions.deployments import Deployment


class DeployMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.deploys = Counter("wasm_faas_deploys", "Function (re)deploys and removals, by outcome",
                               ["function", "outcome"], registry=registry)

    def record(self, record: Deployment, function_id: str | None = None) -> None:
        outcome = str(record.last_outcome)
        if outcome == "pending":
            return
        label = function_id or (record.version.function_id if record.version is not None else record.path.stem)
        self.deploys.labels(label, outcome).inc()

"""Deployments whose outcomes are counted (host/metrics/deploys.py). The deployments API
(host/functions/deployments.py) reports every outcome on the record it returns, so counting wraps
its two entry points rather than reaching inside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host.config import FunctionConfig
from host.functions.deployments import Deployment, Deployments
from host.metrics.deploys import DeployMetrics


class CountedDeployments(Deployments):
    def __init__(self, *args: Any, metrics: DeployMetrics, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def deploy(self, path: Path, override: FunctionConfig | None = None) -> Deployment:
        record = await super().deploy(path, override)
        self.metrics.record(record)
        return record

    async def remove(self, path: Path) -> Deployment | None:
        current = self.records.get(path.resolve())
        function_id = current.version.function_id if current is not None and current.version is not None else None
        record = await super().remove(path)
        if record is not None:
            self.metrics.record(record, function_id)
        return record

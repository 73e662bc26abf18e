"""Layotto's admin API (`POST /wasm/install`, `/wasm/update`, `/wasm/uninstall`), mapped onto the
host's deployments. A refusal is answered, as in Layotto, with HTTP 500 and `{"error": ...}` — except
an `instance_num` over `server.max_instances_per_function`, a 400 (`AdminError.status`).

`vm_config.path` may name a module inside the functions folders or beside a configured function (the
folders of a Layotto `config.json`'s modules, which has no functions folders); anywhere with
`server.admin_allow_any_path`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from host.config import FunctionConfig, describe_validation_error
from host.functions.deployments import Outcome
from host.functions.errors import DeployError
from host.functions.sources import module_folders
from host.functions.spec import check_instance_count, instance_count

if TYPE_CHECKING:
    from host.app import App

log = logging.getLogger(__name__)


class AdminError(Exception):
    """A refused admin request (Layotto answers these with HTTP 500 and {"error": ...})."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


class LayottoAdmin:
    """Layotto's three admin calls, mapped onto the host's deployments."""

    ACTIONS = ("install", "update", "uninstall")

    def __init__(self, app: App):
        self.app = app
        self.deployments = app.deployments

    @staticmethod
    def parse(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise AdminError("request body must be a JSON object") from None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise AdminError("field 'name' (a non-empty string) is required")
        return body

    async def apply(self, action: str, body: dict[str, Any]) -> None:
        if action not in self.ACTIONS:
            raise AdminError(f"unknown admin action {action!r}")
        self.check_instance_num(body)
        await getattr(self, action)(body)

    def check_instance_num(self, body: dict[str, Any]) -> None:
        """An integer `instance_num` over `server.max_instances_per_function` is a 400."""
        count = body.get("instance_num")
        if isinstance(count, int) and not isinstance(count, bool):
            try:
                check_instance_count(self.app.config, instance_count(count))
            except DeployError as error:
                raise AdminError(str(error), status=400) from None

    async def replay(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Re-apply admin calls this process missed (a worker restarted by the supervisor)."""
        entries = list(entries)
        if entries:
            log.info("replaying %d admin call(s) made before this worker started", len(entries))
        for action, body in entries:
            try:
                await self.apply(action, body)
            except AdminError as error:
                log.warning("replaying /wasm/%s %s failed: %s", action, body.get("name"), error)

    def _module_path(self, vm_config: Any) -> Path:
        if not isinstance(vm_config, dict) or not isinstance(vm_config.get("path"), str):
            raise AdminError("field 'vm_config.path' is required")
        config = self.app.config
        path = config.resolve(vm_config["path"])
        if not config.server.admin_allow_any_path and not _inside(path, module_folders(config)):
            raise AdminError(f"path {vm_config['path']!r} is outside the functions folders "
                             "(set server.admin_allow_any_path to allow it)")
        if not path.is_file():
            raise AdminError(f"no module at {vm_config['path']!r}")
        return path

    async def install(self, body: dict[str, Any]) -> None:
        path = self._module_path(body.get("vm_config"))
        try:
            override = FunctionConfig.model_validate({
                "name": body["name"], "instance_num": body.get("instance_num"),
                "md5": (body.get("vm_config") or {}).get("md5"),
                "engine": (body.get("vm_config") or {}).get("engine", "wasmtime")})
        except ValidationError as error:
            raise AdminError("; ".join(describe_validation_error(error))) from None
        record = await self.deployments.deploy(path, override)
        if record.last_outcome != Outcome.DEPLOYED:
            raise AdminError(record.last_error or "install failed")

    async def update(self, body: dict[str, Any]) -> None:
        count = body.get("instance_num")
        if not isinstance(count, int) or isinstance(count, bool):
            raise AdminError("field 'instance_num' (an integer) is required")
        record = self.deployments.find(body["name"])
        if record is None or record.version is None:
            raise AdminError(f"no function named {body['name']!r}")
        try:
            await self.deployments.resize(record, count)  # as in Layotto: <= 0 is one per CPU
        except DeployError as error:
            raise AdminError(str(error), status=400) from None

    async def uninstall(self, body: dict[str, Any]) -> None:
        record = self.deployments.find(body["name"])
        if record is None:
            raise AdminError(f"no function named {body['name']!r}")
        await self.deployments.remove(record.path)

"""Deployments (host/functions/deployments.py) through a real App: deploy, reload, a rejected
version (the old one keeps serving), remove, find, failures — and a resize made while a reload
of the same function is in flight, which must apply to the version the reload puts in place."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from host.app import App
from host.config import HostConfig
from host.functions.deployments import Outcome
from host.http.admin.layotto import LayottoAdmin
from tests.conftest import EXAMPLES, make_config
from tests.functions import fn_support as guests
from tests.functions.fn_support import request, running_app, wait_for
from tests.guest_wat import Results


def _config(tmp_path: Path, folder: Path) -> HostConfig:
    return make_config(tmp_path, folder, server={"watch": False}, function_defaults={"instance_num": 1})


async def _answer(app: App, function_id: str) -> int:
    dispatcher = app.dispatcher
    response = await dispatcher.call(dispatcher.find(function_id), request())
    assert response.status == 200
    return Results(response.body).u32()


async def test_deploy_reload_and_remove(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.answering(folder, "svc", 1)
    path = folder / "svc.wat"
    async with running_app(_config(tmp_path, folder)) as app:
        deployments = app.deployments
        record = deployments.records[path.resolve()]
        first = record.version
        assert first is not None and app.router.pick("svc") is first
        assert (record.last_outcome, record.last_error, record.reloads) == (Outcome.DEPLOYED, None, 0)
        guests.answering(folder, "svc", 2)
        assert await deployments.deploy(path) is record
        second = record.version
        assert second is not first and second.sha256 != first.sha256 and record.reloads == 1
        assert app.router.pick("svc") is second and first.pool.closed
        assert await _answer(app, "svc") == 2
        assert record.describe()["last_reload"]["outcome"] == "deployed"

        assert await deployments.remove(path) is record
        assert (record.last_outcome, record.version) == (Outcome.REMOVED, None)
        assert app.router.pick("svc") is None and second.pool.closed
        assert path.resolve() not in deployments.records
        assert await deployments.remove(path) is None
        assert await deployments.remove(folder / "never.wat") is None


async def test_a_rejected_version_leaves_the_old_one_serving(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.answering(folder, "svc", 1)
    async with running_app(_config(tmp_path, folder)) as app:
        deployments = app.deployments
        record = deployments.find("svc")
        serving = record.version
        (folder / "svc.wat").write_text("(module (func $oops")  # a half-written edit
        assert await deployments.deploy(folder / "svc.wat") is record
        assert record.last_outcome == Outcome.REJECTED and "invalid WAT" in (record.last_error or "")
        assert record.version is serving and app.router.pick("svc") is serving and not serving.pool.closed
        assert await _answer(app, "svc") == 1 and record.reloads == 0
        assert deployments.failures() == {}  # an older version still serves: not a failure

        # A module that never deployed serves nothing: a failure, with the reason.
        (folder / "alien.wat").write_text('(module (import "env" "no_such_call" (func)))')
        alien = await deployments.deploy(folder / "alien.wat")
        assert alien.last_outcome == Outcome.REJECTED and alien.version is None
        failures = deployments.failures()
        assert list(failures) == ["alien"] and "no_such_call" in failures["alien"]

        guests.answering(folder, "svc", 3)  # fixed: deployed, the error cleared
        await deployments.deploy(folder / "svc.wat")
        assert (record.last_outcome, record.last_error) == (Outcome.DEPLOYED, None) and await _answer(app, "svc") == 3


async def test_find_by_id_name_and_stem(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    shutil.copy(EXAMPLES / "function_1.wasm", folder / "function_1.wasm")  # reports id "id_1"
    (folder / "function_1.toml").write_text('name = "client"\n')
    shutil.copy(EXAMPLES / "function_1.wasm", folder / "twin.wasm")  # the same id again
    config = make_config(tmp_path, folder, server={"watch": False, "duplicate_ids": "random"},  # both serve it
                         function_defaults={"instance_num": 1})
    async with running_app(config) as app:
        deployments = app.deployments
        record = deployments.records[(folder / "function_1.wasm").resolve()]
        twin = deployments.records[(folder / "twin.wasm").resolve()]
        assert record.version.function_id == "id_1" and record.version.name == "client"
        assert deployments.find("client") is record and deployments.find("function_1") is record
        assert deployments.find("twin") is twin
        assert set(map(id, deployments.matching("id_1"))) == {id(record), id(twin)}
        assert deployments.find("id_1") in (record, twin)
        assert deployments.find("nope") is None and deployments.matching("nope") == []


async def test_a_pool_that_cannot_restart_its_instances_is_a_failure(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    guests.starting_once(folder, "once")
    async with running_app(_config(tmp_path, folder)) as app:
        assert app.deployments.failures() == {}
        with pytest.raises(Exception, match="trapped"):
            await app.dispatcher.call(app.dispatcher.find("once"), request())
        await wait_for(lambda: bool(app.deployments.failures()), what="the pool to go down")
        assert "proxy_on_vm_start returned false" in app.deployments.failures()["once"]


@pytest.mark.parametrize("via", ["admin_update", "deployments_resize"])
async def test_a_resize_during_a_reload_applies_to_the_version_the_reload_puts_in_place(
        tmp_path: Path, via: str) -> None:
    folder = tmp_path / "functions"
    path = folder / "busy.wat"
    guests.answering(folder, "busy", 1)
    async with running_app(_config(tmp_path, folder)) as app:
        record = app.deployments.find("busy")
        old = record.version
        assert old.pool.size == 1
        guests.answering(folder, "busy", 2, startup_ms=400)  # the new version starts slowly
        reload = asyncio.ensure_future(app.deployments.deploy(path))
        await wait_for(lambda: record.lock.locked(), what="the reload under way")
        assert record.version is old and not reload.done()  # still starting the new version
        if via == "admin_update":
            await LayottoAdmin(app).update({"name": "busy", "instance_num": 2})
        else:
            await app.deployments.resize(record, 2)
        await asyncio.wait_for(reload, 5)
        new = app.router.pick("busy")
        assert new is not old and await _answer(app, "busy") == 2
        assert new.pool.size == 2, "the resize was lost: it went to the version the reload replaced"
        await wait_for(lambda: new.pool.stats()["instances"] == 2, what="the second instance started")
        # Remembered like install's settings: a later reload keeps the size.
        guests.answering(folder, "busy", 3)
        await app.deployments.deploy(path)
        assert app.router.pick("busy").pool.size == 2 and await _answer(app, "busy") == 3


async def test_a_deploy_queued_behind_a_remove_is_tracked(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    path = folder / "busy.wat"
    guests.answering(folder, "busy", 1)
    async with running_app(_config(tmp_path, folder)) as app:
        deployments = app.deployments
        record = deployments.find("busy")
        guests.answering(folder, "busy", 2, startup_ms=300)
        # What the watcher does when a file is rewritten, deleted and written again while the first
        # reload is still starting: three changes queue on the record's lock, in order.
        reload = asyncio.ensure_future(deployments.deploy(path))
        await wait_for(lambda: record.lock.locked(), what="the reload under way")
        removal = asyncio.ensure_future(deployments.remove(path))
        await asyncio.sleep(0)
        redeploy = asyncio.ensure_future(deployments.deploy(path))
        await asyncio.wait_for(asyncio.gather(reload, removal, redeploy), 5)
        serving = app.router.versions()
        tracked = deployments.find("busy")
        orphaned = len(serving) == 1 and (tracked is None or tracked.version is not serving[0])
        await deployments.deploy(path)  # the next change to the file
        versions = app.router.versions()
        assert not orphaned, "the version the last deploy put in place is served but tracked by no record"
        assert len(versions) == 1 and deployments.find("busy").version is versions[0]

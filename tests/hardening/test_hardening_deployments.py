"""Issue 15 item 10: deployment state stays consistent.

- admin install, uninstall and file events racing on one function leave the listing and the router
  agreeing, every retired version closed, and the function removable;
- two modules claiming one id: the second is refused (the default), or both serve it at random when
  configured so — and the listing says which;
- a functions folder deleted and created again, or swapped by renames, is watched again;
- a module in a folder that is a symbolic link out of the functions folders is refused at start-up,
  as the admin API refuses the same path;
- a function whose instances cannot be replaced (its start-up fails for a while) is retried with
  back-off until it serves again, with no request needed to wake it;
- an explicit config entry without its module is a flagged failure, not a host that deploys nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from pathlib import Path

import pytest

from abi.codes import Status
from host.functions import deployments as deployments_module
from host.functions import pool as pool_module
from host.functions.version import FunctionVersion
from tests.conftest import EXAMPLES, make_config
from tests.functions.fn_support import request, running_app, wait_for
from tests.guest_wat import RET, WatGuest, failure, write_guest

SAME_ID = r"""
(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "shared")
  (data (i32.const 32) "$BODY")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_get_id")
    (drop (call $set (i32.const 8) (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 6))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 32) (i32.const 1)))
    (i32.const 0)))
"""


def _answering(folder: Path, name: str, value: str) -> None:
    g = WatGuest()
    body = g.call("proxy_set_buffer_bytes", 1, 0, 0, *g.s(value))
    write_guest(folder, name, g.module(proxy_on_request_headers=f"(drop {body}) (i32.const 0)"))


async def _post(client, action: str, body: dict) -> tuple[int, str]:
    async with client.session.post(f"{client.admin}/wasm/{action}", json=body) as response:
        return response.status, await response.text()


# -- the install / uninstall / file-event race ------------------------------------------------------------

async def test_install_uninstall_and_file_events_racing_leave_listing_and_router_agreeing(serve,
                                                                                          tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    _answering(folder, "racer", "r")
    module = folder / "racer.wat"
    text = module.read_text()
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 0},
                                     function_defaults={"instance_num": 1}))
    app = client.server.app
    built: list[FunctionVersion] = []
    deployed = app.deployments.on_deployed
    app.deployments.on_deployed = lambda version: (built.append(version), deployed(version))[-1]
    rng = random.Random(15)
    stop = asyncio.Event()

    async def installs() -> None:
        while not stop.is_set():
            await _post(client, "install", {"name": "racer", "instance_num": rng.randint(1, 2),
                                            "vm_config": {"path": str(module)}})

    async def uninstalls() -> None:
        while not stop.is_set():
            await _post(client, "uninstall", {"name": "racer"})
            await asyncio.sleep(rng.random() / 100)

    async def touches() -> None:
        while not stop.is_set():
            staged = folder / ".racer.partial"
            staged.write_text(text + f"\n;; {rng.random()}")  # new content: a real reload
            os.replace(staged, module)
            await asyncio.sleep(rng.random() / 50)

    async def calls() -> None:
        while not stop.is_set():
            status, _, _ = await client.call("racer")
            assert status in (200, 404, 503), status

    tasks = [asyncio.create_task(job()) for job in (installs, uninstalls, touches, calls)]
    await asyncio.sleep(3)
    stop.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.5)  # the watcher's last events settle

    def consistent() -> bool:
        routed = set(map(id, app.router.versions()))
        recorded = {id(r.version) for r in app.deployments.records.values() if r.version is not None}
        return routed == recorded

    await wait_for(consistent, 5, "router and records agree")
    assert len(built) > 10  # the race really reloaded, many times
    # Every version that is not serving is closed: nothing was left running unrouted.
    serving = set(map(id, app.router.versions()))
    assert all(v.pool.closed for v in built if id(v) not in serving)
    _, listing = await client.admin_get("/functions")
    assert {f.get("id") for f in listing["functions"] if "id" in f} <= {"racer"}

    # And it can be removed, for good.
    module.unlink()
    await wait_for(lambda: not app.deployments.records, 5, "the deleted module's record gone")
    assert (await _post(client, "uninstall", {"name": "racer"}))[0] == 500  # nothing left to uninstall
    assert app.router.versions() == [] and (await client.call("racer"))[0] == 404
    assert all(v.pool.closed for v in built)


# -- two modules, one id ----------------------------------------------------------------------------------

async def test_a_second_module_claiming_an_id_is_refused_by_default(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "first.wat").write_text(SAME_ID.replace("$BODY", "a"))
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 0}))
    (folder / "second.wat").write_text(SAME_ID.replace("$BODY", "b"))
    app = client.server.app
    await wait_for(lambda: (folder / "second.wat").resolve() in app.deployments.records
                   and app.deployments.records[(folder / "second.wat").resolve()].last_error, 10, "second refused")
    reason = failure(app.failures(), "second")
    assert "function id 'shared' is already served by" in reason and "first.wat" in reason
    assert "duplicate_ids" in reason
    bodies = {(await client.call("shared"))[2] for _ in range(30)}
    assert bodies == {b"a"}  # never split at random
    # Removing the first and touching the second lets it serve.
    (folder / "first.wat").unlink()
    await wait_for(lambda: (folder / "first.wat").resolve() not in app.deployments.records, 10, "first removed")
    (folder / "second.wat").write_text(SAME_ID.replace("$BODY", "b") + "\n")
    await wait_for(lambda: app.router.pick("shared") is not None, 10, "second deployed")
    assert (await client.call("shared"))[2] == b"b"


async def test_random_sharing_of_an_id_is_an_explicit_choice_named_in_the_listing(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "first.wat").write_text(SAME_ID.replace("$BODY", "a"))
    (folder / "second.wat").write_text(SAME_ID.replace("$BODY", "b"))
    client = await serve(make_config(tmp_path, folder, server={"duplicate_ids": "random"}))
    _, listing = await client.admin_get("/functions")
    shared = [f for f in listing["functions"] if f.get("id") == "shared"]
    assert len(shared) == 2
    assert all(f["routing"] == "random (server.duplicate_ids)" and len(f["shares_id_with"]) == 1 for f in shared)
    assert {Path(f["shares_id_with"][0]).name for f in shared} == {"first.wat", "second.wat"}
    assert {(await client.call("shared"))[2] for _ in range(60)} == {b"a", b"b"}


# -- folders deleted, recreated, swapped ----------------------------------------------------------------

@pytest.fixture
def quick_folder_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    from host.functions import watcher

    original = watcher.FunctionWatcher.__init__

    def checking_often(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        original(self, *args, **{**kwargs, "folder_check_s": 0.1})

    monkeypatch.setattr(watcher.FunctionWatcher, "__init__", checking_often)


async def test_a_deleted_and_recreated_folder_is_watched_again(serve, tmp_path: Path, quick_folder_checks) -> None:
    folder = tmp_path / "functions"
    _answering(folder, "one", "1")
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 0}))
    app = client.server.app
    assert (await client.call("one"))[2] == b"1"
    shutil.rmtree(folder)
    await wait_for(lambda: app.router.pick("one") is None, 10, "one removed with its folder")
    folder.mkdir()
    _answering(folder, "two", "2")
    await wait_for(lambda: app.router.pick("two") is not None, 10, "two deployed from the new folder")
    _answering(folder, "three", "3")  # written after the folder came back: the new watch sees it
    await wait_for(lambda: app.router.pick("three") is not None, 10, "three deployed by the new watch")
    assert (await client.call("three"))[2] == b"3"


async def test_a_folder_swapped_by_renames_is_watched_again(serve, tmp_path: Path, quick_folder_checks) -> None:
    folder, staging, old = tmp_path / "functions", tmp_path / "functions.new", tmp_path / "functions.old"
    _answering(folder, "one", "1")
    _answering(folder, "both", "old")
    _answering(staging, "two", "2")
    _answering(staging, "both", "new")
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 0}))
    app = client.server.app
    assert (await client.call("both"))[2] == b"old"
    os.rename(folder, old)  # the kernel's watch follows the old folder...
    os.rename(staging, folder)  # ...and another takes its name
    await wait_for(lambda: app.router.pick("two") is not None and app.router.pick("one") is None, 10,
                   "the swapped-in folder deployed, the gone module removed")
    await wait_for(lambda: app.router.pick("both") is not None and app.router.pick("both").sha256 != "", 5, "both")
    assert (await client.call("both"))[2] == b"new"
    _answering(folder, "three", "3")
    await wait_for(lambda: app.router.pick("three") is not None, 10, "a module written into the new folder")
    _answering(old, "ghost", "g")  # the old folder is no longer watched
    await asyncio.sleep(0.5)
    assert app.router.pick("ghost") is None


# -- symbolic links out of the folders --------------------------------------------------------------------

async def test_a_link_out_of_the_functions_folders_is_refused_at_start_up(serve, tmp_path: Path) -> None:
    folder, outside = tmp_path / "functions", tmp_path / "elsewhere"
    _answering(folder, "inside", "i")
    _answering(outside, "secret", "s")
    (folder / "escape.wat").symlink_to(outside / "secret.wat")
    (folder / "alias.wat").symlink_to(folder / "inside.wat")  # a link inside the folders is fine...
    client = await serve(make_config(tmp_path, folder, server={"watch_debounce_ms": 0}))
    app = client.server.app
    reason = failure(app.failures(), "escape")
    assert "symbolic link" in reason and str(outside / "secret.wat") in reason and "admin_allow_any_path" in reason
    assert app.router.pick("secret") is None and app.router.pick("escape") is None
    status, text = await _post(client, "install", {"name": "escape", "vm_config": {"path": str(folder / "escape.wat")}})
    assert status == 500 and "outside the functions folders" in text  # the admin API refuses the same path
    assert (await client.call("inside"))[2] == b"i"
    # ...but it reports the same id as its target: one of the two is refused as a duplicate.
    duplicates = {stem: reason for stem, reason in app.failures().items() if stem in ("alias", "inside")}
    assert len(duplicates) == 1 and "already served" in next(iter(duplicates.values()))
    (folder / "escape.wat").unlink()  # deleting the link removes its record (and the failure)
    await wait_for(lambda: "escape" not in app.failures(), 10, "the refused link forgotten")


async def test_links_out_are_allowed_with_admin_allow_any_path(tmp_path: Path) -> None:
    folder, outside = tmp_path / "functions", tmp_path / "elsewhere"
    _answering(outside, "secret", "s")
    folder.mkdir()
    (folder / "escape.wat").symlink_to(outside / "secret.wat")
    config = make_config(tmp_path, folder, server={"watch": False, "admin_allow_any_path": True})
    async with running_app(config) as app:
        assert app.failures() == {}
        assert (await app.dispatcher.call(app.dispatcher.find("secret"), request())).body == b"s"


# -- a DOWN pool comes back by itself ---------------------------------------------------------------------

async def test_a_function_whose_instances_cannot_restart_is_retried_until_it_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployments_module, "RETRY_BASE_S", 0.1)
    if hasattr(pool_module, "DOWN_RETRY_S"):
        monkeypatch.setattr(pool_module, "DOWN_RETRY_S", 0.05)
    folder = tmp_path / "functions"
    g = WatGuest()
    # proxy_on_configure fails while shared data "backend" says "down" (as a backend being down would),
    # a request with `x-trap` traps (its instance must be replaced).
    down = g.call("proxy_get_shared_data", *g.s("backend"), *RET, 520)
    trap = g.call("proxy_get_header_map_value", 0, *g.s("x-trap"), *RET)
    write_guest(folder, "flaky", g.module(
        proxy_on_configure=f"(if (i32.eqz {down}) (then (return (i32.const 0)))) (i32.const 1)",
        proxy_on_request_headers=f"(if (i32.eqz {trap}) (then unreachable)) (call $emit (i32.const 7)) (call $flush) "
                                 "(i32.const 0)"))
    config = make_config(tmp_path, folder, server={"watch": False}, function_defaults={"instance_num": 1})
    async with running_app(config) as app:
        dispatcher = app.dispatcher
        assert (await dispatcher.call(dispatcher.find("flaky"), request())).status == 200
        assert app.services.shared_data.set(b"backend", b"down", 0) == Status.OK
        with pytest.raises(Exception, match="trapped"):
            await dispatcher.call(dispatcher.find("flaky"), request([("x-trap", "1")]))
        await wait_for(lambda: "flaky" in app.deployments.failures(), 5, "the pool DOWN")
        record = app.deployments.find("flaky")
        assert "proxy_on_configure returned false" in app.deployments.failures()["flaky"]
        await wait_for(lambda: "retrying" in app.deployments.describe(record), 5, "retries reported")
        await asyncio.sleep(0.5)
        attempts = app.deployments.describe(record)["retrying"]["attempts"]
        assert 1 <= attempts <= 4  # with back-off, not in a busy loop
        # The backend comes back (the key is deleted by setting it empty): no request is needed.
        assert app.services.shared_data.get(b"backend") is not None
        app.services.shared_data.set(b"other", b"", 0)
        _delete(app, b"backend")
        await wait_for(lambda: app.deployments.failures() == {} and "retrying" not in app.deployments.describe(record),
                       10, "the pool serving again")
        assert record.version.pool.stats()["instances"] == 1
        assert (await dispatcher.call(dispatcher.find("flaky"), request())).status == 200


def _delete(app, key: bytes) -> None:
    """Shared data has no delete in the ABI: the test takes the key out as the host's own state."""
    data = app.services.shared_data
    with data._lock:
        data._items.pop(key, None)


# -- per-function configuration errors are flagged ----------------------------------------------------------

async def test_an_entry_without_its_module_is_flagged_and_the_others_serve(serve, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    shutil.copy(EXAMPLES / "hello.wasm", folder / "hello.wasm")
    client = await serve(make_config(tmp_path, folder, functions={"ghost": {"instance_num": 1}}))
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert (status, readiness["status"]) == (503, "DOWN")
    assert "functions.ghost: no 'path', and no ghost.wasm or ghost.wat in functions_dirs" in \
        failure(readiness["details"]["failed"], "ghost")
    assert (await client.call("hello"))[0] == 200


# -- a deploy whose caller goes away ------------------------------------------------------------------------

async def test_a_cancelled_deploy_closes_what_it_built(tmp_path: Path) -> None:
    from tests.functions import fn_support as guests

    folder = tmp_path / "functions"
    folder.mkdir()
    config = make_config(tmp_path, folder, server={"watch": False}, function_defaults={"instance_num": 1})
    async with running_app(config) as app:
        built: list[FunctionVersion] = []
        original = app.deployer.deploy
        app.deployer.deploy = lambda spec: (built.append(original(spec)), built[-1])[-1]  # type: ignore[method-assign]
        guests.answering(folder, "slow", startup_ms=300)  # proxy_on_vm_start takes 300 ms
        deploying = asyncio.create_task(app.deployments.deploy(folder / "slow.wat"))
        await asyncio.sleep(0.1)
        deploying.cancel()  # as the watcher's tasks are at shutdown
        with pytest.raises(asyncio.CancelledError):
            await deploying
        await wait_for(lambda: bool(built) and built[0].pool.closed, 5, "the version built meanwhile closed")
        assert app.router.versions() == []

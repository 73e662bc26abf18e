"""Deploying many modules at once (`Deployments.deploy_all`, what start-up does): every module is
deployed or rejected on its own, a second module reporting an id already served is still refused
(the check now asks the router, not every record), and Python's collector runs again afterwards."""

from __future__ import annotations

import gc
from pathlib import Path

from tests.density.density_support import answer, function_id, running_app, write_functions


async def test_a_burst_of_deploys_deploys_each_refuses_a_duplicate_id_and_restores_the_collector(
        tmp_path: Path) -> None:
    async with running_app(tmp_path) as app:
        folder = tmp_path / "functions"
        paths = write_functions(folder, 0, 60)
        duplicate = folder / "again.wasm"
        duplicate.write_bytes(paths[7].read_bytes())  # reports fn-00007 too
        broken = folder / "broken.wasm"
        broken.write_bytes(b"\0asm\x01\0\0\0garbage")
        assert gc.isenabled()
        await app.deployments.deploy_all([*paths, broken])
        assert gc.isenabled()
        assert sorted(app.router.ids()) == [function_id(i) for i in range(60)]
        assert "invalid module" in app.deployments.failures()["broken"]
        await app.deployments.deploy(duplicate)
        reason = app.deployments.failures()["again"]
        assert "already served by" in reason and paths[7].name in reason
        assert await answer(app, function_id(7)) == (200, function_id(7).encode())
        # Its own version replaced by a new one (same id, same record): not a duplicate.
        await app.deployments.deploy(paths[7])
        assert "fn-00007" not in app.deployments.failures()
        assert len(app.router.serving(function_id(7))) == 1

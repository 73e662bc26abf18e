"""The memory-map limit seen from outside, over real HTTP: a Layotto install past the limit (lowered
here) is refused with 500 naming vm.max_map_count; GET /functions and readiness report the budget
and the refusal; a function deployed before, scaled to zero, still starts an instance and answers."""

from __future__ import annotations

import gc
from pathlib import Path

from tests.conftest import ServerFactory, make_config
from tests.density.density_support import function_id, write_functions


async def test_installs_past_the_map_limit_are_refused_and_reported_while_the_host_serves(
        serve: ServerFactory, tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    write_functions(folder, 0, 3)
    config = make_config(tmp_path, folder, function_defaults={"instance_num": None, "idle_timeout_ms": 0},
                         server={"watch": False})
    client = await serve(config)
    status, _, body = await client.call(function_id(1))
    assert (status, body) == (200, function_id(1).encode())  # and its instance retired at once (idle 0)

    gc.collect()
    budget = client.server.app.engine.maps
    budget.configure()
    in_use = budget.state()["in_use"]
    assert isinstance(in_use, int)
    budget.configure(limit=in_use + 60, reserve=0, instance_margin=20)  # room for a few deploys only
    installed, refusal = [], None
    for path in write_functions(folder, 3, 40):
        async with client.session.post(client.admin + "/wasm/install",
                                       json={"name": path.stem, "vm_config": {"path": str(path)}}) as response:
            if response.status != 200:
                assert response.status == 500
                refusal = (await response.json())["error"]
                break
            installed.append(path.stem)
    assert refusal is not None and "vm.max_map_count" in refusal and "refused" in refusal, refusal
    assert installed  # the first ones fitted

    status, listing = await client.admin_get("/functions")
    limits = listing["limits"]["memory_maps"]
    assert status == 200 and limits["refused"] >= 1 and limits["limit"] == in_use + 60
    assert "vm.max_map_count" in limits["last_refusal"] and limits["instance_margin"] == 20
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert readiness["details"]["limits"]["memory_maps"]["refused"] == limits["refused"]
    assert readiness["details"]["instances"]["functions_at_zero"] >= 1

    # Still serving: a function scaled to zero starts an instance from the margin deploys leave.
    for function in (function_id(1), *installed[:1]):
        status, _, body = await client.call(function)
        assert (status, body) == (200, function.encode())

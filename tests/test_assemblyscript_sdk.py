"""Third-party SDK proof: modules built with the AssemblyScript proxy-wasm SDK from npm
(`@solo-io/proxy-runtime@0.1.8`, `assemblyscript@0.14.13`) run unchanged, over real HTTP.

The modules come from sdk-guest/assemblyscript/build/ (CI builds them with scripts/build_as_guests.py
before the test command). Locally a missing or stale build is rebuilt when node and npm are there,
and the tests skip when they are not; in CI (CI=true) a missing build fails.

SDK traits the host must cope with: it exports `malloc` (no `proxy_on_memory_allocate`), imports
`wasi_unstable.proc_exit` (its abort handler), reads the `plugin_root_id` property when the root context
is created and aborts when no root context is registered under that name, and reads the plugin
configuration in `proxy_on_configure`. So each module gets a `name.toml` beside it with
`root_id = "<name>"` and `plugin_config = "{}"`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import wasmtime
from aiohttp import web

from tests.conftest import IN_CI, REPO, functions_dir, make_config

AS_DIR = REPO / "sdk-guest" / "assemblyscript"
AS_BUILD = AS_DIR / "build"
MODULES = ("add_header", "local_response", "http_call", "shared_queue")
GUEST_LOG = "wasm.guest"


def _stale(build: Path) -> list[str]:
    """Modules missing from `build`, or older than a source or the lock file."""
    inputs = [*AS_DIR.glob("assembly/**/*.ts"), AS_DIR / "package-lock.json"]
    newest_input = max(path.stat().st_mtime for path in inputs)
    stale = []
    for name in MODULES:
        module = build / f"{name}.wasm"
        if not module.exists() or module.stat().st_mtime < newest_input:
            stale.append(name)
    return stale


@pytest.fixture(scope="session")
def as_guests() -> Path:
    """The folder holding the built AssemblyScript modules."""
    stale = _stale(AS_BUILD)
    missing = [name for name in stale if not (AS_BUILD / f"{name}.wasm").exists()]
    if not stale:
        return AS_BUILD
    if IN_CI and missing:
        pytest.fail(f"AssemblyScript guest modules missing from {AS_BUILD}: {', '.join(missing)}; "
                    f"CI must run `python scripts/build_as_guests.py` before the tests (see .ci/run)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        if missing:
            pytest.skip("node/npm not available to build the AssemblyScript guests "
                        "(run `python scripts/build_as_guests.py` where they are)")
        return AS_BUILD  # stale but present: use what is there
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "build_as_guests.py"), "--out", str(AS_BUILD)],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"scripts/build_as_guests.py failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return AS_BUILD


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def as_function(tmp_path: Path, as_guests: Path, name: str, **settings: Any) -> Path:
    """A functions folder with `name.wasm` and its settings file `name.toml` (root id + non-empty config)."""
    folder = functions_dir(tmp_path, as_guests / f"{name}.wasm")
    fields = {"root_id": name, "plugin_config": "{}", **settings}
    (folder / f"{name}.toml").write_text("".join(f"{key} = {_toml_value(value)}\n" for key, value in fields.items()))
    return folder


# -- the SDK's module shape --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODULES)
def test_sdk_module_shape(as_guests: Path, name: str) -> None:
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(as_guests / f"{name}.wasm"))
    imports = {f"{item.module}.{item.name}" for item in module.imports}
    exports = {item.name for item in module.exports}
    assert "wasi_unstable.proc_exit" in imports
    assert {"env.proxy_get_property", "env.proxy_log"} <= imports
    assert {"malloc", "proxy_on_context_create", "proxy_on_configure", "proxy_abi_version_0_2_0"} <= exports
    assert "proxy_on_memory_allocate" not in exports
    assert "proxy_get_id" not in exports  # routed by file stem


# -- a: header-adding filter -------------------------------------------------------------------------------

async def test_add_header_filter(serve, tmp_path: Path, as_guests: Path) -> None:
    client = await serve(make_config(tmp_path, as_function(tmp_path, as_guests, "add_header")))
    for _ in range(3):  # several requests on the same instances
        status, headers, body = await client.call("add_header", "/anything?x=1")
        assert status == 200
        assert headers.getall("x-as-filter") == ["yes"]
        assert body == b"as-filter ok\n"


async def test_root_id_mismatch_is_refused(serve, tmp_path: Path, as_guests: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """The SDK aborts (proc_exit 255) when no root context is registered under `plugin_root_id`."""
    caplog.set_level(logging.INFO)
    folder = as_function(tmp_path, as_guests, "add_header", root_id="not_registered")
    client = await serve(make_config(tmp_path, folder))
    status, _, body = await client.call("add_header")
    assert status == 404, body
    assert "add_header.wasm rejected" in caplog.text
    assert "Missing root context factory for root id: not_registered" in caplog.text


# -- b: local response -------------------------------------------------------------------------------------

async def test_local_response(serve, tmp_path: Path, as_guests: Path) -> None:
    client = await serve(make_config(tmp_path, as_function(tmp_path, as_guests, "local_response")))
    for _ in range(2):
        status, headers, body = await client.call("local_response", method="POST", data=b"payload")
        assert status == 403
        assert headers.getall("x-reason") == ["as-sdk"]
        assert body == b"denied by assemblyscript\n"


# -- c: http_call to a configured upstream ----------------------------------------------------------------

@pytest_asyncio.fixture
async def echo_upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A real HTTP server on an ephemeral port: GET /echo answers `hello <x-from>`."""
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append({"path": request.path, **{k.lower(): v for k, v in request.headers.items()}})
        return web.Response(text=f"hello {request.headers.get('x-from', '')}")

    app = web.Application()
    app.router.add_get("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_http_call(serve, tmp_path: Path, as_guests: Path, echo_upstream) -> None:
    url, seen = echo_upstream
    config = make_config(tmp_path, as_function(tmp_path, as_guests, "http_call"), upstreams={"echo": url})
    client = await serve(config)
    status, _, body = await client.call("http_call")
    assert (status, body) == (200, b"upstream said: hello as")
    assert len(seen) == 1
    assert seen[0]["path"] == "/echo"
    assert seen[0]["x-from"] == "as"


# -- d: shared data (CAS) and a shared queue ----------------------------------------------------------------

async def _queue_log(caplog: pytest.LogCaptureFixture, expected: set[str], timeout_s: float = 5.0) -> set[str]:
    """Guest log lines from onQueueReady; waits (the queue callback may run after the response)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = {rec.getMessage() for rec in caplog.records
                 if rec.name == GUEST_LOG and "as_queue dequeued" in rec.getMessage()}
        if expected <= found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("instances", [1, 2])
async def test_shared_data_and_queue(serve, tmp_path: Path, as_guests: Path, caplog: pytest.LogCaptureFixture,
                                     instances: int) -> None:
    caplog.set_level(logging.INFO, logger=GUEST_LOG)
    folder = as_function(tmp_path, as_guests, "shared_queue", instance_num=instances)
    client = await serve(make_config(tmp_path, folder))
    bodies = []
    for _ in range(3):
        status, headers, body = await client.call("shared_queue")
        assert status == 200, body
        bodies.append(body)
        # Every instance's root context did one CAS increment of `as_instances` at start-up: the
        # value is the instance count only if all instances share one store.
        assert headers.get("x-instances-started") == str(instances)
    assert bodies == [b"count=1", b"count=2", b"count=3"]
    expected = {f"[shared_queue] as_queue dequeued count={n}" for n in (1, 2, 3)}
    found = await _queue_log(caplog, expected)
    assert expected <= found, f"queue log lines seen: {sorted(found)}"


async def test_shared_counter_under_concurrency(serve, tmp_path: Path, as_guests: Path) -> None:
    """Concurrent requests on two instances: CAS retries lose no increment."""
    folder = as_function(tmp_path, as_guests, "shared_queue", instance_num=2)
    client = await serve(make_config(tmp_path, folder))
    answers = await asyncio.gather(*(client.call("shared_queue") for _ in range(20)))
    assert [status for status, _, _ in answers] == [200] * 20, [body for _, _, body in answers]
    counts = sorted(int(body.decode().removeprefix("count=")) for _, _, body in answers)
    assert counts == list(range(1, 21))
    served = [int(headers["x-instance-requests"]) for _, headers, _ in answers]
    assert sum(1 for n in served if n == 1) <= 2  # at most one "first request" per instance

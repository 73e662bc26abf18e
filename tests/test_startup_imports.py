"""Start-up (issue 16): what a configuration does not use is not imported — the Redis, PostgreSQL and
NATS client libraries (and the OpenTelemetry SDK redis-py pulls in), grpc without a gRPC listener,
app callback or gRPC upstream, aiohttp (server and client, ~120-140 ms) without an HTTP application
or a guest's outbound HTTP call (the admin listener and the Dapr HTTP API run on host/http/protocol.py),
protobuf until the runtime API is first called — and each is imported once a configuration uses it.
Readiness is UP only once every configured listener accepts connections.

Each import check runs in a fresh interpreter (this test process has imported everything already)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, REPO, functions_dir, make_config
from tests.services import POSTGRES_DSN, REDIS_ADDRESS, require_postgres, require_redis, unique_prefix

OPTIONAL = ("redis", "psycopg", "psycopg_pool", "nats", "opentelemetry", "grpc")
# aiohttp: only for an HTTP application (app_http), a guest's proxy_http_call or worker 0 of `serve
# --workers N` asking its peers; the Dapr HTTP API when configured; protobuf, until a runtime API
# call (or listener); wasmtime's component model, until a component is deployed.
NOT_AT_START = ("aiohttp", "aiohttp.client", "aiohttp.web", "host.http.dapr", "host.http.dapr.app_channel",
                "google.protobuf", "wasmtime.component", "host.functions.components.deploy")

# Serves `config` (JSON of HostConfig fields) on port 0 with a real host, calls `hello` over HTTP,
# stops, and prints which optional libraries the process imported.
_SERVE = r"""
import asyncio, json, sys, urllib.request
from host.config import HostConfig
from host.process.serve import start_server

async def main():
    server = await start_server(HostConfig.model_validate(json.loads(sys.argv[1])))
    try:
        url = f"http://127.0.0.1:{server.listen_port}/"
        request = urllib.request.Request(url, headers={"id": "hello"})
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).status)
        ready = f"http://127.0.0.1:{server.admin_port}/actuator/health/readiness"
        with await asyncio.to_thread(urllib.request.urlopen, ready, timeout=10) as answer:
            assert json.load(answer)["status"] == "UP"
    finally:
        await server.stop()
    return status

status = asyncio.run(main())
print(json.dumps({"status": status, "imported": sorted(m for m in sys.argv[2].split(",") if m in sys.modules)}))
"""


def _fresh(code: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def _serve_and_report(config_fields: dict, modules: tuple[str, ...] = OPTIONAL) -> dict:
    return json.loads(_fresh(_SERVE, json.dumps(config_fields), ",".join(modules)))


def _fields(tmp_path: Path, **sections) -> dict:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    config = make_config(tmp_path, folder, **sections)
    fields = config.model_dump(mode="json", exclude_unset=True)
    fields["base_dir"] = str(tmp_path)
    return fields


def test_importing_the_host_imports_no_optional_client_library() -> None:
    code = f"import host.process.serve, host.cli, sys; print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))"
    assert _fresh(code) == "[]"


def test_importing_the_host_imports_neither_aiohttp_nor_protobuf() -> None:
    code = f"import host.process.serve, host.cli, sys; print(sorted(m for m in {NOT_AT_START!r} if m in sys.modules))"
    assert _fresh(code) == "[]"


def test_a_memory_only_host_without_grpc_never_imports_them(tmp_path: Path) -> None:
    fields = _fields(tmp_path, server={"grpc": "", "dapr_http": "127.0.0.1:0"})
    assert _serve_and_report(fields) == {"status": 200, "imported": []}


def test_a_host_without_runtime_api_listeners_imports_no_aiohttp_protobuf_or_dapr_http(tmp_path: Path) -> None:
    fields = _fields(tmp_path, server={"grpc": "", "dapr_http": ""})
    assert _serve_and_report(fields, NOT_AT_START) == {"status": 200, "imported": []}
    fields = _fields(tmp_path, server={"grpc": "", "dapr_http": "127.0.0.1:0"})
    assert _serve_and_report(fields, NOT_AT_START)["imported"] == ["google.protobuf", "host.http.dapr"]


def test_watchdog_is_imported_only_to_watch_the_functions_folders(tmp_path: Path) -> None:
    assert _fresh("import host.process.serve, host.cli, sys; print('watchdog' in sys.modules)") == "False"
    fields = _fields(tmp_path, server={"grpc": "", "dapr_http": "", "watch": False})
    assert _serve_and_report(fields, ("watchdog",)) == {"status": 200, "imported": []}
    fields = _fields(tmp_path, server={"grpc": "", "dapr_http": "", "watch": True})
    assert _serve_and_report(fields, ("watchdog",)) == {"status": 200, "imported": ["watchdog"]}


def test_what_a_configuration_uses_is_imported(tmp_path: Path) -> None:
    require_redis()
    require_postgres()
    prefix = unique_prefix("lazy")
    table = prefix.replace("-", "_")
    fields = _fields(tmp_path, server={"grpc": "127.0.0.1:0", "dapr_http": ""}, state={
        "redis_store": {"type": "redis", "address": REDIS_ADDRESS, "key_prefix": prefix},
        "pg_store": {"type": "postgresql", "connection_string": POSTGRES_DSN, "table": table}})
    try:
        report = _serve_and_report(fields)
    finally:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:  # in case the host created it
            connection.execute(f'DROP TABLE IF EXISTS "{table}"')
    assert report["status"] == 200
    assert {"redis", "psycopg", "psycopg_pool", "grpc"} <= set(report["imported"])
    assert "nats" not in report["imported"]


async def test_readiness_is_up_only_after_every_listener_listens(serve, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="host")
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm"),
                                     server={"grpc": "127.0.0.1:0", "dapr_http": "127.0.0.1:0"}))
    messages = [record.getMessage() for record in caplog.records]
    ready = next(i for i, m in enumerate(messages) if m.startswith("host ready"))
    grpc = next(i for i, m in enumerate(messages) if m.startswith("runtime gRPC API"))
    dapr = next(i for i, m in enumerate(messages) if m.startswith("Dapr HTTP API listening"))
    assert grpc < ready and dapr < ready, messages
    status, body = await client.admin_get("/actuator/health/readiness")
    assert status == 200 and body["status"] == "UP"
    for port in (client.server.grpc_port, client.server.dapr_http_port):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# `python -m host` pauses the cyclic collector while the host imports (issue 16: ~60-90 ms of partial
# and full passes at start-up); `run` freezes what was imported and runs the collector again before
# serving. Reported by a host stopped (SIGTERM) as soon as it is ready.
_RUN_PAUSED = r"""
import asyncio, gc, json, os, signal, sys
gc.disable()
from host.config import HostConfig
from host.process import serve

started = serve.start_server

async def report_when_ready(config, **kwargs):
    server = await started(config, **kwargs)
    print(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count() > 0}), flush=True)
    asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)  # once it waits for signals
    return server

serve.start_server = report_when_ready
serve.run(HostConfig.model_validate(json.loads(sys.argv[1])), collector_paused=True)
"""


def test_the_collector_paused_for_the_imports_runs_again_when_serving(tmp_path: Path) -> None:
    fields = _fields(tmp_path, server={"grpc": "", "dapr_http": ""})
    assert json.loads(_fresh(_RUN_PAUSED, json.dumps(fields))) == {"enabled": True, "frozen": True}


def test_other_commands_run_the_collector_again_at_once() -> None:
    code = ("import gc; gc.disable()\nfrom host.cli import main\n"
            f"main(['inspect', {str(EXAMPLES / 'hello.wasm')!r}], collector_paused=True)\n"
            "print(gc.isenabled(), gc.get_freeze_count())")
    assert _fresh(code) == "True 0"

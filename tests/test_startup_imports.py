"""Start-up (issue 16): what a configuration does not use is not imported — the Redis, PostgreSQL and
NATS client libraries (and the OpenTelemetry SDK redis-py pulls in), and grpc without a gRPC listener,
app callback or gRPC upstream — and each is imported once a configuration uses it. Readiness is UP
only once every configured listener accepts connections.

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


def _serve_and_report(config_fields: dict) -> dict:
    return json.loads(_fresh(_SERVE, json.dumps(config_fields), ",".join(OPTIONAL)))


def _fields(tmp_path: Path, **sections) -> dict:
    folder = functions_dir(tmp_path, EXAMPLES / "hello.wasm")
    config = make_config(tmp_path, folder, **sections)
    fields = config.model_dump(mode="json", exclude_unset=True)
    fields["base_dir"] = str(tmp_path)
    return fields


def test_importing_the_host_imports_no_optional_client_library() -> None:
    code = f"import host.process.serve, host.cli, sys; print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))"
    assert _fresh(code) == "[]"


def test_a_memory_only_host_without_grpc_never_imports_them(tmp_path: Path) -> None:
    fields = _fields(tmp_path, server={"grpc": "", "dapr_http": "127.0.0.1:0"})
    assert _serve_and_report(fields) == {"status": 200, "imported": []}


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

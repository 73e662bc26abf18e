"""Limits and faults of component functions over real HTTP: a looping Python function answers 504 at
its deadline while the host keeps serving, one that raises answers 500 and the next request succeeds
(on a replacement instance), the memory cap, `sys.exit`, and guest output in the host's log."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from tests.components_wasm.cw_support import BUILD_TIMEOUT, C_HELLO, Components, components, config_for, folder_of

pytestmark = BUILD_TIMEOUT
__all__ = ["components"]


async def test_a_looping_function_answers_504_at_its_deadline_and_the_host_keeps_serving(
        serve, tmp_path: Path, components: Components) -> None:
    folder = folder_of(tmp_path, components.probe, C_HELLO)
    client = await serve(config_for(tmp_path, folder, functions={"cw_probe": {"timeout_ms": 400, "instance_num": 1}}))
    started = time.monotonic()
    looping = asyncio.ensure_future(client.call("cw_probe", "/loop"))
    # While the guest spins (in a guest thread), the host answers other functions at once.
    await asyncio.sleep(0.1)
    for _ in range(5):
        status, _, body = await client.call("hello")
        assert status == 200, body
    assert not looping.done()
    status, _, body = await looping
    elapsed = time.monotonic() - started
    assert status == 504, body
    assert b"deadline" in body
    assert 0.4 <= elapsed < 2.5
    # The interrupted instance was replaced; the function answers again.
    status, _, body = await client.call("cw_probe", "/")
    assert (status, body) == (200, b"probe")
    _, described = await client.admin_get("/functions/cw_probe")
    [version] = described["versions"]
    assert (version["replaced_instances"], version["errors"]) == (1, 1)
    assert version["abi_version"] == "wasm-faas:function@0.1.0 (component)"


async def test_a_raising_function_answers_500_and_the_next_request_succeeds(
        serve, tmp_path: Path, components: Components, caplog: pytest.LogCaptureFixture) -> None:
    folder = folder_of(tmp_path, components.probe)
    client = await serve(config_for(tmp_path, folder, functions={"cw_probe": {"instance_num": 1}}))
    for _ in range(3):  # the instance keeps its memory between requests
        await client.call("cw_probe", "/count")
    status, _, body = await client.call("cw_probe", "/count")
    assert (status, body) == (200, b"4")
    with caplog.at_level(logging.WARNING, logger="wasm.guest"):
        status, _, body = await client.call("cw_probe", "/raise")
        assert status == 500, body
        assert b"trapped" in body
        status, _, body = await client.call("cw_probe", "/")
        assert (status, body) == (200, b"probe")
        # A fresh instance: its memory starts over.
        status, _, body = await client.call("cw_probe", "/count")
        assert (status, body) == (200, b"2")
        await _wait_for_log(caplog, "ValueError: probe was asked to raise")
    traceback = [r for r in caplog.records if r.name == "wasm.guest" and "ValueError" in r.getMessage()]
    assert traceback[0].levelno == logging.WARNING
    assert traceback[0].getMessage().startswith("[cw_probe] ")


async def test_the_memory_cap_stops_a_hoarding_function(serve, tmp_path: Path, components: Components) -> None:
    folder = folder_of(tmp_path, components.probe)
    client = await serve(config_for(tmp_path, folder,
                                    functions={"cw_probe": {"instance_num": 1, "memory_limit_mb": 96}}))
    status, _, body = await client.call("cw_probe", "/memory")
    assert status == 500, body
    status, _, body = await client.call("cw_probe", "/")
    assert (status, body) == (200, b"probe")


async def test_sys_exit_is_a_trap(serve, tmp_path: Path, components: Components) -> None:
    client = await serve(config_for(tmp_path, folder_of(tmp_path, components.probe)))
    status, _, body = await client.call("cw_probe", "/exit")
    assert status == 500, body
    assert (await client.call("cw_probe", "/"))[0] == 200


async def test_stdout_and_stderr_are_logged_with_the_function_id(
        serve, tmp_path: Path, components: Components, caplog: pytest.LogCaptureFixture) -> None:
    client = await serve(config_for(tmp_path, folder_of(tmp_path, components.probe)))
    with caplog.at_level(logging.INFO, logger="wasm.guest"):
        status, _, body = await client.call("cw_probe", "/print")
        assert (status, body) == (200, b"printed")
        await _wait_for_log(caplog, "probe says hello on stderr")
        await _wait_for_log(caplog, "probe says hello on stdout")
    levels = {r.getMessage(): r.levelno for r in caplog.records if r.name == "wasm.guest"}
    assert levels["[cw_probe] probe says hello on stdout"] == logging.INFO
    assert levels["[cw_probe] probe says hello on stderr"] == logging.WARNING


async def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 5.0) -> None:
    """Output arrives from wasmtime's writer threads through a pipe, shortly after the call."""
    deadline = time.monotonic() + timeout
    while not any(text in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, f"no log line with {text!r}"
        await asyncio.sleep(0.02)

"""Configuration and command line: wrong fields are named, Layotto's config.json converts, the CLI runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from abi.maps import decode_map
from host.components.state.redis import Config as RedisStoreConfig
from host.config import ConfigError, load_config
from tests.conftest import EXAMPLES, REPO, functions_dir, make_config
from tests.guest_wat import RET, Results, WatGuest, write_guest


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs)


# -- native TOML -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("toml", "field", "message"), [
    ('[functions.x]\npath = "x.wasm"\ninstance_num = "two"\n', "functions.x.instance_num", "valid integer"),
    ('[server]\nlisen = "127.0.0.1:2045"\n', "server.lisen", "Extra inputs are not permitted"),
    ('[server]\nlisten = "nowhere"\n', "server.listen", "expected HOST:PORT"),
    ('[state.s]\ntype = "etcd"\n', "state.s", "type"),
    ('[function_defaults]\ntimeout_ms = 0\n', "function_defaults.timeout_ms", "greater than 0"),
])
def test_wrong_field_is_named(tmp_path: Path, toml: str, field: str, message: str) -> None:
    path = _write(tmp_path, "bad.toml", toml)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = str(error.value)
    assert str(path) in text and f"{field}:" in text and message in text


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "broken.toml", "[server\n"))
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(_write(tmp_path, "broken.json", "{"))


def test_serve_with_a_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.toml", '[functions.x]\npath = "x.wasm"\ninstance_num = "two"\n')
    result = _run(sys.executable, "-m", "host", "serve", "--config", str(path))
    assert result.returncode == 2
    assert "functions.x.instance_num" in result.stderr
    # A flag that breaks validation is reported the same way.
    result = _run(sys.executable, "-m", "host", "serve", "--listen", "no-port-here")
    assert result.returncode == 2 and "server.listen" in result.stderr


def test_help_lists_the_flags() -> None:
    result = _run(sys.executable, "-m", "host", "--help")
    assert result.returncode == 0 and "serve" in result.stdout
    result = _run(sys.executable, "-m", "host", "serve", "--help")
    assert result.returncode == 0
    for flag in ("--config", "--functions", "--listen", "--admin"):
        assert flag in result.stdout


def test_console_script_is_installed() -> None:
    script = shutil.which("wasm-faas", path=str(Path(sys.executable).parent)) or shutil.which("wasm-faas")
    assert script, "wasm-faas is not installed: pip install -e ."
    result = _run(script, "--help")
    assert result.returncode == 0 and "serve" in result.stdout
    assert "--functions" in _run(script, "serve", "--help").stdout


# -- Layotto's config.json -------------------------------------------------------------------------

def _layotto_json(function_items: dict, state: dict) -> dict:
    return {"servers": [{"listeners": [
        {"name": "wasm", "address": "127.0.0.1:0",
         "stream_filters": [{"type": "Layotto", "config": function_items}]},
        {"name": "grpc", "address": "127.0.0.1:34904", "filter_chains": [{"filters": [{"type": "grpc", "config": {
            "server_name": "runtime", "grpc_config": {"state": state}}}]}]}]}]}


def test_layotto_config_conversion(tmp_path: Path) -> None:
    folder = functions_dir(tmp_path, EXAMPLES / "function_1.wasm")
    md5 = hashlib.md5((folder / "function_1.wasm").read_bytes()).hexdigest()
    raw = _layotto_json(
        {"function1": {"name": "function1", "instance_num": 3, "color": "blue", "weight": 7,
                       "vm_config": {"engine": "wasmer", "path": "functions/function_1.wasm", "md5": md5.upper()}}},
        {"state_demo": {"type": "redis", "metadata": {"redisHost": "10.1.2.3:6380", "redisPassword": "s3cret",
                                                      "redisDB": "2"}}})
    config = load_config(_write(tmp_path, "config.json", json.dumps(raw)))
    function = config.functions["function1"]
    assert function.instance_num == 3
    assert function.md5 == md5  # normalised to lower case
    assert function.engine == "wasmer"
    assert config.resolve(function.path) == folder / "function_1.wasm"  # relative to the config file
    # Top-level string fields (name included) are the plugin configuration; other types are dropped.
    assert function.plugin_config == {"name": "function1", "color": "blue"}
    store = config.state["state_demo"]
    assert isinstance(store, RedisStoreConfig)
    assert (store.address, store.password, store.db) == ("10.1.2.3:6380", "s3cret", 2)
    assert config.server.listen == "127.0.0.1:0"


@pytest.mark.parametrize(("item", "message"), [
    ({"name": "f", "vm_config": {"engine": "wasmtime"}}, "vm_config.path is required"),
    ({"name": "f", "vm_config": {"path": "f.wasm", "sha": "x"}}, "unknown vm_config field"),
    ({"name": "f", "instance_num": "two", "vm_config": {"path": "f.wasm"}}, "functions.f.instance_num"),
])
def test_layotto_config_errors_name_the_function(tmp_path: Path, item: dict, message: str) -> None:
    path = _write(tmp_path, "config.json", json.dumps(_layotto_json({"f": item}, {})))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


async def test_layotto_plugin_config_reaches_the_guest(serve, tmp_path: Path) -> None:
    g = WatGuest()
    module = g.module(proxy_on_request_headers=f"""
    (call $emit_ret {g.call("proxy_get_buffer_bytes", 7, 0, 4096, RET)})
    (call $emit_ret {g.call("proxy_get_configuration", RET)})
    (call $flush)
    (i32.const 0)""")
    write_guest(tmp_path / "functions", "configured", module)
    raw = _layotto_json({"configured": {"name": "configured", "instance_num": 1, "greeting": "hej",
                                        "vm_config": {"engine": "wasmtime", "path": "functions/configured.wat"}}},
                        {"state_demo": {"type": "in-memory"}})
    config = load_config(_write(tmp_path, "config.json", json.dumps(raw)))
    config = config.model_copy(update={"server": config.server.model_copy(
        update={"admin": "127.0.0.1:0", "cache_dir": str(tmp_path / "cache")})})
    client = await serve(config)
    status, _, body = await client.call("configured")
    assert status == 200
    r = Results(body)
    status_buffer, buffer = r.ret()
    status_legacy, legacy = r.ret()  # ABI 0.1.0's proxy_get_configuration returns the same bytes
    assert (status_buffer, status_legacy) == (0, 0) and buffer == legacy
    # Layotto hands these fields over as a proxy-wasm map (correctly encoded: NUL, not ASCII '0').
    assert sorted(decode_map(buffer)) == [("greeting", "hej"), ("name", "configured")]


async def test_missing_functions_folder_makes_readiness_down(serve, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    client = await serve(make_config(tmp_path, missing))
    status, readiness = await client.admin_get("/actuator/health/readiness")
    assert (status, readiness["status"]) == (503, "DOWN")
    assert str(missing) in readiness["details"]["failed"]["functions_dirs"]
    assert "does not exist" in readiness["details"]["failed"]["functions_dirs"]


# -- the real process ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_serve_subprocess_answers_the_demo_and_stops_on_sigterm(tmp_path: Path) -> None:
    listen, admin = _free_port(), _free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # keep compiled modules out of ~/.cache
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "host", "serve", "--functions", "examples/functions",
         "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for readiness UP
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if _get(f"http://127.0.0.1:{admin}/actuator/health/readiness")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not ready after 60 s"
            time.sleep(0.1)
        status, body = _get(f"http://127.0.0.1:{listen}/?name=book1", {"id": "id_1"})
        assert (status, body) == (200, b"There are 100 inventories for book1.")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0  # a clean shutdown, promptly
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_the_readme_sample_config_is_valid() -> None:
    """The TOML sample in the README is the reference users copy: it must load as written."""
    import re
    import tomllib

    from host.config import validate_config

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    sample = re.search(r"### Native config \(TOML\)\n\n```toml\n(.*?)```", readme, re.S).group(1)
    raw = tomllib.loads(sample.replace('md5 = "..."', 'md5 = "' + "0" * 32 + '"'))
    config = validate_config(raw, "README")
    assert config.upstreams["echo"].startswith("http://") and config.functions["function_1"].instance_num == 2

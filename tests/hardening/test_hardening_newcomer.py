"""Issue 15 item 12: what a newcomer does first works.

- a wheel built from the source tree (what `pip install .` builds) and installed into a fresh
  virtual environment runs `wasm-faas serve` with the embedded default: the quickstart config and its
  example functions are package data (host/quickstart/), not files of a repository checkout;
- the admin API works with a Layotto config.json (which names modules, not functions folders);
- the test suite leaves nothing in Redis: tests/conftest.py checks it for the whole session.

(Per-function configuration errors are flagged, not fatal: tests/hardening/test_hardening_deployments.py.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from host.config import load_config, validate_config
from tests.conftest import EXAMPLES, IN_CI, REPO
from tests.host_process import request, wait_until

# Not copied into the build tree: what is not source, and what the package does not ship.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__",
                                     "*.so", "*_pb2.py", "*_pb2_grpc.py", "*_pb2.pyi", "node_modules", "target",
                                     "tests", "bench", "deploy", "sdk-guest", "scripts")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_an_installed_wheel_serves_the_embedded_quickstart(tmp_path: Path) -> None:
    # The quickstart's runtime API listens on fixed ports; the function and admin ports are overridden.
    if not (_port_free(34904) and _port_free(3500)):
        if IN_CI:
            pytest.fail("ports 34904 and 3500 (the quickstart's runtime API) must be free in CI")
        pytest.skip("another process holds port 34904 or 3500, which the quickstart listens on")
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=120)
    wheel = next((tmp_path / "dist").glob("wasm_faas_host-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=120)
    # The dependencies come from this environment (no registry): its site-packages, appended to the
    # new one's path. Its own .pth files (this checkout's editable install) are not processed there.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    built_s = time.monotonic() - started

    log = (tmp_path / "serve.log").open("w")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    serving = subprocess.Popen([str(venv / "bin" / "wasm-faas"), "serve", "--listen", "127.0.0.1:0", "--admin",
                                "127.0.0.1:0"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               env={**env, "XDG_CACHE_HOME": str(tmp_path / "xdg")}, start_new_session=True)
    try:
        def ports() -> tuple[int, int] | None:
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            text = (tmp_path / "serve.log").read_text()
            if "functions listening on" not in text:
                return None
            found = re.search(r"functions listening on \S+ \(port (\d+)\), admin on \S+ \(port (\d+)\)", text)
            return (int(found[1]), int(found[2])) if found else None

        listen, _admin = wait_until(ports, 60, "the installed host serving")
        text = (tmp_path / "serve.log").read_text()
        installed = str(Path(site) / "host" / "quickstart" / "functions")
        assert f"from {installed}/hello.wasm" in text, text[-3000:]  # the packaged examples, not the checkout's
        assert str(REPO) not in text
        status, _, body = request(f"http://127.0.0.1:{listen}/", headers={"id": "hello"})
        assert status == 200 and body, body
    finally:
        serving.terminate()
        try:
            serving.wait(20)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.wait()
        log.close()
    print(f"wheel built and installed in {built_s:.1f}s")


# -- the admin API with a Layotto config.json ---------------------------------------------------------------------

def _layotto_config(tmp_path: Path) -> Path:
    folder = tmp_path / "wasm"
    folder.mkdir()
    for name in ("function_1.wasm", "hello.wasm"):
        shutil.copy(EXAMPLES / name, folder / name)
    config = {"servers": [{"listeners": [
        {"name": "wasm", "address": "127.0.0.1:0", "stream_filters": [{"type": "Layotto", "config": {
            "function1": {"name": "function1", "instance_num": 1,
                          "vm_config": {"engine": "wasmtime", "path": "wasm/function_1.wasm"}}}}]}]}]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


async def test_the_admin_api_works_with_a_layotto_config(serve, tmp_path: Path) -> None:
    loaded = load_config(_layotto_config(tmp_path))
    raw = loaded.model_dump()
    raw["server"].update({"admin": "127.0.0.1:0", "grpc": "", "dapr_http": "", "cache_dir": str(tmp_path / "cache")})
    client = await serve(validate_config(raw, "test"))
    assert client.server.app.router.pick("id_1") is not None  # the configured function

    async def post(action: str, body: dict) -> tuple[int, str]:
        async with client.session.post(f"{client.admin}/wasm/{action}", json=body) as response:
            return response.status, await response.text()

    # A module beside the configured ones installs (the config has no functions_dirs)...
    assert await post("install", {"name": "hello", "instance_num": 1,
                                  "vm_config": {"engine": "wasmtime", "path": "wasm/hello.wasm"}}) == (200, "")
    assert (await client.call("hello"))[0] == 200
    assert await post("update", {"name": "hello", "instance_num": 2}) == (200, "")
    assert client.server.app.deployments.find("hello").version.pool.size == 2
    assert await post("uninstall", {"name": "hello"}) == (200, "")
    assert (await client.call("hello"))[0] == 404
    # ...one elsewhere does not.
    shutil.copy(EXAMPLES / "hello.wasm", tmp_path / "loose.wasm")
    status, text = await post("install", {"name": "loose", "vm_config": {"path": "loose.wasm"}})
    assert status == 500 and "outside the functions folders" in text

"""The developer CLI (issue 14), end to end against a real host process: new -> build -> deploy ->
invoke -> ls / describe / logs (-f) -> rm, each verb's exit code; build errors as file:line:col;
`dev` rebuilding on a source change; the Rust and AssemblyScript scaffolds."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.host_process import HostProcess, free_ports, request, wait_until, write_host_config

TOKEN = "ops-cli-token"
# The zig cache the C test guests use (tests/conftest.py c_guests): wasi-libc is compiled once.
ZIG_CACHE = REPO / ".cache" / "zig"


def environment(tmp_path: Path) -> dict[str, str]:
    """For the verbs run as their own process (`logs -f`, `dev`)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WASM_FAAS_")}
    env.update({"ZIG_GLOBAL_CACHE_DIR": str(ZIG_CACHE / "global"), "ZIG_LOCAL_CACHE_DIR": str(ZIG_CACHE / "local"),
                "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "PYTHONPATH": str(REPO)})
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """Runs `python -m host ARGS` in this process (what `main` returns is the exit code): the verbs
    are plain HTTP clients and build drivers, and a fresh interpreter per call costs seconds on a
    loaded machine."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.tmp_path = tmp_path
        for key in [k for k in os.environ if k.startswith("WASM_FAAS_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("ZIG_GLOBAL_CACHE_DIR", str(ZIG_CACHE / "global"))
        monkeypatch.setenv("ZIG_LOCAL_CACHE_DIR", str(ZIG_CACHE / "local"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, cwd: Path | None = None) -> Result:
        from host.cli import main

        out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
        with self.monkeypatch.context() as patch:
            patch.chdir(cwd or self.tmp_path)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exited:  # argparse: --help, bad arguments
                    code = exited.code if isinstance(exited.code, int) else 2
            out.flush()
        return Result(code, out.buffer.getvalue().decode(), err.getvalue())


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(tmp_path, monkeypatch)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A host with an empty functions folder and an admin token: (function URL, admin URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    listen, admin = free_ports(2)
    config = write_host_config(tmp_path, folder, listen, admin,
                               server=f'admin_token = "{TOKEN}"\nwatch_debounce_ms = 50',
                               rest="[function_defaults]\ninstance_num = 1\n")
    process = HostProcess(tmp_path, "--config", str(config))
    try:
        process.wait_ready(admin)
        yield f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{admin}"
    finally:
        process.close()


def test_new_build_deploy_invoke_logs_rm(tmp_path: Path, served: tuple[str, str], cli: Cli) -> None:
    host, admin = served
    auth = ("--admin", admin, "--token", TOKEN)

    created = cli("new", "greet", "--lang", "c")
    assert created.returncode == 0, created.stderr
    project = tmp_path / "greet"
    assert (project / "greet.c").is_file() and (project / "wasm-faas.toml").is_file()
    assert cli("new", "greet", "--lang", "c").returncode == 2  # exists
    assert cli("new", "Bad-Name").returncode == 2

    built = cli("build", cwd=project)
    assert built.returncode == 0, built.stderr
    module = project / "build" / "greet.wasm"
    assert module.read_bytes()[:4] == b"\0asm" and "runs on this host" in built.stdout
    assert "building greet (c): done in" in built.stderr  # the progress line

    deployed = cli("deploy", str(module), *auth)
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed greet (new) as id greet" in deployed.stdout
    assert cli("deploy", str(module), "--admin", admin).returncode == 1  # no token: 401

    invoked = cli("invoke", "greet", "-d", "you", "--host", host)
    assert (invoked.returncode, invoked.stdout) == (0, "hello, you from greet\n")
    assert cli("invoke", "greet", "--host", host).stdout == "hello, world from greet\n"
    missing = cli("invoke", "nothing-here", "--host", host)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr

    listed = cli("ls", *auth)
    assert listed.returncode == 0 and re.search(r"^greet\s+0/1\s+2\s+0\s+deployed", listed.stdout, re.M), listed.stdout
    described = cli("describe", "greet", *auth)
    assert described.returncode == 0 and '"id": "greet"' in described.stdout

    logs = cli("logs", "greet", *auth)
    assert logs.returncode == 0, logs.stderr
    you, world = logs.stdout.find("INFO    hello, you from greet"), logs.stdout.find("INFO    hello, world from greet")
    assert 0 <= you < world, logs.stdout  # oldest first
    followed = tmp_path / "followed.txt"
    with followed.open("w") as out:
        follower = subprocess.Popen([sys.executable, "-m", "host", "logs", "greet", "-f", *auth], cwd=tmp_path,
                                    env=environment(tmp_path), stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: "hello, world from greet" in followed.read_text(), 15, "the backlog")
            assert request(f"{host}/", method="POST", headers={"id": "greet"}, data=b"follower")[0] == 200
            wait_until(lambda: "hello, follower from greet" in followed.read_text(), 15, "the followed line")
        finally:
            follower.send_signal(signal.SIGINT)
            assert follower.wait(10) == 0

    removed = cli("rm", "greet", *auth)
    assert removed.returncode == 0 and "deleted" in removed.stdout, removed.stderr
    assert not (tmp_path / "served" / "greet.wasm").exists()
    assert cli("describe", "greet", *auth).returncode == 4
    assert cli("rm", "greet", *auth).returncode == 4
    assert cli("invoke", "greet", "--host", host).returncode == 1
    assert cli("ls", "--admin", "http://127.0.0.1:9", "--token", TOKEN).returncode == 3  # unreachable


def test_build_errors_name_file_and_line_and_usage_errors(tmp_path: Path, cli: Cli) -> None:
    assert cli("new", "broken", "--lang", "c").returncode == 0
    source = tmp_path / "broken" / "broken.c"
    lines = source.read_text().splitlines()
    lines.insert(20, "int oops = ;")
    source.write_text("\n".join(lines) + "\n")
    failed = cli("build", "broken")
    assert failed.returncode == 1
    assert re.search(r"broken\.c:21:\d+: error: expected expression", failed.stderr), failed.stderr
    assert cli("build", "no-such-project").returncode == 2
    assert cli("deploy", "no-such.wasm").returncode == 2


def test_every_verb_has_help_with_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from host.cli import main

    for verb in ("new", "build", "dev", "invoke", "deploy", "ls", "describe", "rm", "logs"):
        with pytest.raises(SystemExit) as exited:
            main([verb, "--help"])
        assert exited.value.code == 0
        assert "exit codes: 0 ok, 1 failed" in capsys.readouterr().out, verb


def test_rust_and_assemblyscript_scaffolds(tmp_path: Path, cli: Cli) -> None:
    for lang, source in (("rust", "hey.rs"), ("assemblyscript", "assembly/hey.ts")):
        folder = tmp_path / lang
        folder.mkdir()
        assert cli("new", "hey", "--lang", lang, cwd=folder).returncode == 0
        text = (folder / "hey" / source).read_text()
        assert "{{name}}" not in text and '"hey"' in text
        assert 'lang = "' + lang + '"' in (folder / "hey" / "wasm-faas.toml").read_text()
    assert (tmp_path / "assemblyscript" / "hey" / "host" / "hey.toml").read_text().count('root_id = "hey"') == 1
    built = cli("build", "hey", cwd=tmp_path / "rust")
    if Path("/usr/bin/rustc").exists():
        assert built.returncode == 0, built.stderr
        assert (tmp_path / "rust" / "hey" / "build" / "hey.wasm").read_bytes()[:4] == b"\0asm"
    else:  # Rust needs Debian's rustc: a clear error and its own exit code
        assert built.returncode == 5 and "/usr/bin/rustc not found" in built.stderr


def test_dev_rebuilds_on_a_source_change(tmp_path: Path, cli: Cli) -> None:
    assert cli("new", "live", "--lang", "c").returncode == 0
    listen, admin = free_ports(2)
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen([sys.executable, "-m", "host", "dev", "live", "--listen", f"127.0.0.1:{listen}",
                            "--admin", f"127.0.0.1:{admin}"], cwd=tmp_path, env=environment(tmp_path),
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{listen}/"

    def answer() -> bytes:
        status, _, body = request(url, headers={"id": "live"}, timeout=5)
        return body if status == 200 else b""

    try:
        wait_until(lambda: answer() == b"hello, world from live\n", 60, "first build served")
        source = tmp_path / "live" / "live.c"
        source.write_text(source.read_text().replace('"hello, "', '"howdy, "'))
        wait_until(lambda: answer() == b"howdy, world from live\n", 30, "rebuilt and reloaded")
        source.write_text(source.read_text().replace("proxy_wasm_str_t out = {0};", "proxy_wasm_str_t out = ;"))
        wait_until(lambda: re.search(r"live\.c:\d+:\d+: error:", (tmp_path / "dev.log").read_text()), 30,
                   "build error shown")
        assert answer() == b"howdy, world from live\n"  # the last good module keeps serving
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(20)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()

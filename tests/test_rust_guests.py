"""The Rust guest SDK (sdk-guest/rust) and the Layotto demo rewritten in Rust (examples/functions/rust).

The committed modules in examples/functions-rust/ are served through a real server (no compiler needed)
and must answer exactly like the C examples. The freshness check and the SDK probe need Debian's rustc
with the wasm32 standard library: without it they skip locally and fail in CI.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import wasmtime

from tests.conftest import ENGINE_BACKENDS, EXAMPLES, IN_CI, REPO, functions_dir, make_config

RUST_EXAMPLES = REPO / "examples" / "functions-rust"
MODULES = ("function_1", "function_2", "hello")


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_rust_guests", REPO / "scripts" / "build_rust_guests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_toolchain(*, pinned: bool) -> ModuleType:
    """The build script's module, or skip (locally) / fail (CI) when the toolchain is missing."""
    script = _build_script()
    try:
        script.check_toolchain(any_rustc=not pinned)
    except script.BuildError as error:
        if IN_CI:
            pytest.fail(f"the Rust guest toolchain must be installed in CI: {error}")
        pytest.skip(f"Rust guest toolchain not usable: {error}")
    return script


def _rust(*names: str) -> list[Path]:
    return [RUST_EXAMPLES / f"{name}.wasm" for name in names]


def _c(*names: str) -> list[Path]:
    return [EXAMPLES / f"{name}.wasm" for name in names]


def _subdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


# -- the demo through a real server ------------------------------------------------------------

@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
async def test_rust_demo(serve, tmp_path: Path, backend: str) -> None:
    folder = functions_dir(tmp_path, *_rust(*MODULES))
    client = await serve(make_config(tmp_path, folder), engine_backend=backend)
    status, _, body = await client.call("id_1", "/?name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")
    # A key that does not exist is an empty value (a 0-byte host allocation the guest frees).
    status, _, body = await client.call("id_1", "/?name=book2")
    assert (status, body) == (200, b"There are  inventories for book2.")
    # The body instead of the query string.
    status, _, body = await client.call("id_1", "/", method="POST", data=b"name=book1")
    assert (status, body) == (200, b"There are 100 inventories for book1.")
    # id_2 alone: the body is the key.
    status, _, body = await client.call("id_2", "/", method="POST", data=b"book1")
    assert (status, body) == (200, b"100")


@pytest.mark.parametrize("path", ["/", "/?", "/?other=1", "/?name=", "/?name=&name=book1"])
async def test_rust_demo_missing_name_is_400(serve, tmp_path: Path, path: str) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, *_rust(*MODULES))))
    status, _, body = await client.call("id_1", path)
    assert (status, body) == (400, b"missing query parameter 'name'\n")


async def test_rust_hello(serve, tmp_path: Path) -> None:
    client = await serve(make_config(tmp_path, functions_dir(tmp_path, *_rust("hello"))))
    status, headers, body = await client.call("hello", "/x", headers={"greeting": "hi"})
    assert (status, body) == (200, b"hello method=GET path=/x greeting=hi\n")
    assert headers["x-hello"] == "1"
    status, _, body = await client.call("hello", "/a/b?c=d", method="PUT", data=b"ignored")
    assert (status, body) == (200, b"hello method=PUT path=/a/b?c=d greeting=-\n")


# -- the Rust examples answer exactly like the C ones -------------------------------------------

REQUESTS = [
    ("id_1", "/?name=book1", "GET", {}, None),
    ("id_1", "/?name=book2", "GET", {}, None),
    ("id_1", "/?name=my+book%21", "GET", {}, None),
    ("id_1", "/?name=%zz%4", "GET", {}, None),
    ("id_1", "/?a=1&name=book1&name=x", "GET", {}, None),
    ("id_1", "/", "POST", {}, b"name=book1"),
    ("id_1", "/", "POST", {}, b"nothing"),
    ("id_1", "/", "GET", {}, None),
    ("id_1", "/?other", "GET", {}, None),
    ("id_2", "/", "POST", {}, b"book1"),
    ("id_2", "/", "GET", {}, None),
    ("hello", "/", "GET", {}, None),
    ("hello", "/x?y=z", "DELETE", {"greeting": "hi there"}, None),
]


def _comparable(headers) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers.items() if k.lower() not in {"date", "server"})


async def test_rust_examples_answer_like_the_c_examples(serve, tmp_path: Path) -> None:
    c_dir, rust_dir = _subdir(tmp_path, "c"), _subdir(tmp_path, "rust")
    c_client = await serve(make_config(c_dir, functions_dir(c_dir, *_c(*MODULES))))
    rust_client = await serve(make_config(rust_dir, functions_dir(rust_dir, *_rust(*MODULES))))
    for function_id, path, method, headers, data in REQUESTS:
        c_status, c_headers, c_body = await c_client.call(function_id, path, method=method, headers=headers, data=data)
        r_status, r_headers, r_body = await rust_client.call(function_id, path, method=method, headers=headers,
                                                             data=data)
        request = f"{method} {path} id={function_id}"
        assert (r_status, r_body) == (c_status, c_body), request
        assert _comparable(r_headers) == _comparable(c_headers), request


async def test_rust_invoke_failure_answers_like_c(serve, tmp_path: Path) -> None:
    """Without id_2, id_1's proxy_invoke_service fails (status 10): 502 with the status in the body."""
    c_dir, rust_dir = _subdir(tmp_path, "c"), _subdir(tmp_path, "rust")
    c_client = await serve(make_config(c_dir, functions_dir(c_dir, *_c("function_1"))))
    rust_client = await serve(make_config(rust_dir, functions_dir(rust_dir, *_rust("function_1"))))
    expected = (502, b"invoke id_2 failed: status 10\n")
    for client in (c_client, rust_client):
        status, _, body = await client.call("id_1", "/?name=book1")
        assert (status, body) == expected


def _interface(path: Path) -> tuple[set, dict]:
    module = wasmtime.Module(wasmtime.Engine(), path.read_bytes())

    def sig(t) -> tuple:
        return tuple(str(p) for p in t.params), tuple(str(r) for r in t.results)

    imports = {(i.module, i.name, sig(i.type)) for i in module.imports}
    exports = {e.name: sig(e.type) for e in module.exports if isinstance(e.type, wasmtime.FuncType)}
    return imports, exports


@pytest.mark.parametrize("name", MODULES)
def test_rust_modules_have_the_c_modules_interface(name: str) -> None:
    rust_imports, rust_exports = _interface(RUST_EXAMPLES / f"{name}.wasm")
    c_imports, c_exports = _interface(EXAMPLES / f"{name}.wasm")
    assert rust_imports == c_imports
    c_exports.pop("_initialize")  # the C modules are WASI reactors; the Rust ones need no start function
    assert rust_exports == c_exports
    assert (RUST_EXAMPLES / f"{name}.wasm").stat().st_size < 32 * 1024


def test_rust_examples_folder_holds_only_modules() -> None:
    """examples/functions-rust is a functions folder of its own; the host's default folder is untouched."""
    assert sorted(p.name for p in RUST_EXAMPLES.iterdir()) == sorted(f"{n}.wasm" for n in MODULES)
    assert not list(EXAMPLES.glob("rust_*.wasm"))


# -- the committed modules are a fresh build ----------------------------------------------------

def test_committed_rust_modules_match_a_fresh_build() -> None:
    _require_toolchain(pinned=True)
    result = subprocess.run([sys.executable, "scripts/build_rust_guests.py", "--check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_script_names_the_debian_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = _build_script()
    monkeypatch.setattr(script, "RUSTC", tmp_path / "no-rustc")
    with pytest.raises(script.BuildError, match="apt-get install -y rustc libstd-rust-dev-wasm32"):
        script.check_toolchain(any_rustc=False)


# -- SDK wrappers the examples do not use -------------------------------------------------------

PROBE_RS = r'''
//! sdk_probe: exercises SDK wrappers the examples do not use.
use proxy_wasm_sdk::{self as sdk, Action, BufferType, LogLevel, MapType, Status};

sdk::export_abi!();
sdk::function_id!("sdk_probe");

fn line(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn code<T>(result: Result<T, Status>) -> Vec<u8> {
    let mut out = Vec::new();
    sdk::push_decimal(&mut out, match result { Ok(_) => 0, Err(status) => status.code() });
    out
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _num_headers: usize, end_of_stream: u32) -> Action {
    if end_of_stream == 0 {
        return Action::Continue;
    }
    let headers = sdk::get_headers(MapType::HttpRequestHeaders).unwrap_or_default();
    let probe = headers.iter().find(|(k, _)| k == b"x-probe").map(|(_, v)| v.clone()).unwrap_or_default();
    let path = sdk::get_property(&["request", "path"]).unwrap_or_default();
    let mut body = Vec::new();
    line(&mut body, "x-probe", &probe);
    line(&mut body, "id", FUNCTION_ID.as_bytes());
    line(&mut body, "missing", &code(sdk::get_header(MapType::HttpRequestHeaders, "x-absent")));
    line(&mut body, "no-property", &code(sdk::get_property(&["no", "such"])));
    line(&mut body, "path", &path);
    let now = sdk::now_nanos().unwrap_or(0);
    line(&mut body, "time", if now > 1_600_000_000_000_000_000 { b"ok" } else { b"bad" });
    line(&mut body, "log", &code(sdk::log(LogLevel::Info, "sdk_probe says hi")));
    let sub = sdk::invoke_service("hello", "/sub", b"").unwrap_or_default();
    line(&mut body, "invoke", sub.strip_suffix(b"\n").unwrap_or(&sub));
    line(&mut body, "invoke-unknown", &code(sdk::invoke_service("no_such_function", "", b"")));
    line(&mut body, "state-unknown-store", &code(sdk::get_state("no_such_store", b"k")));
    let mut big = Vec::new();
    sdk::push_decimal(&mut big, u32::MAX);
    line(&mut body, "decimal", &big);
    let _ = sdk::send_local_response(
        201,
        "probe",
        &body,
        &[("x-path", path.as_slice()), ("x-empty", b"".as_slice()), ("X-Upper", b"v".as_slice())],
    );
    Action::Pause
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context_id: u32, _body_size: usize, _end_of_stream: u32) -> Action {
    let part = sdk::get_buffer_bytes(BufferType::HttpRequestBody, 2, 3).unwrap_or_default();
    let _ = sdk::append_buffer(BufferType::HttpResponseBody, b"to be replaced");
    let _ = sdk::replace_buffer(BufferType::HttpResponseBody, b"part=");
    let _ = sdk::append_buffer(BufferType::HttpResponseBody, &part);
    let _ = sdk::set_buffer_bytes(BufferType::HttpResponseBody, 0, 0, b"<");
    let map = sdk::serialize_map(&[("a", "1"), ("bb", "")]);
    let round_trip = sdk::deserialize_map(&map) == Some(vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), vec![])]);
    let truncated = sdk::deserialize_map(&map[..map.len() - 1]).is_none();
    let _ = sdk::append_buffer(BufferType::HttpResponseBody, if round_trip && truncated { b">map-ok" } else { b">map-bad" });
    let _ = sdk::replace_header(MapType::HttpResponseHeaders, "x-replaced", b"yes");
    Action::Continue
}
'''


@pytest.fixture(scope="module")
def probe_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = _require_toolchain(pinned=False)
    work = tmp_path_factory.mktemp("rust-probe")
    source = work / "sdk_probe.rs"
    source.write_text(PROBE_RS)
    out = work / "out" / "sdk_probe.wasm"
    build = work / "build"
    build.mkdir()
    rlib = script.build_sdk(build)
    script.build_example(source, out, rlib, build)
    return out


async def test_sdk_wrappers_through_the_host(serve, tmp_path: Path, probe_wasm: Path) -> None:
    folder = functions_dir(tmp_path, probe_wasm, *_rust("hello"))
    client = await serve(make_config(tmp_path, folder))
    # No query string: the host would hand it over as the body (end_of_stream 0 on the headers).
    status, headers, body = await client.call("sdk_probe", "/p/q", headers={"x-probe": "42"})
    assert status == 201, body
    assert body.decode().splitlines() == [
        "x-probe=42",
        "id=sdk_probe",
        "missing=1",           # NOT_FOUND
        "no-property=1",       # NOT_FOUND
        "path=/p/q",
        "time=ok",
        "log=0",
        "invoke=hello method=GET path=/sub greeting=-",
        "invoke-unknown=10",   # INTERNAL_FAILURE
        "state-unknown-store=10",
        "decimal=4294967295",
    ]
    assert headers["x-path"] == "/p/q"
    assert headers["x-empty"] == ""
    assert headers["x-upper"] == "v"

    status, headers, body = await client.call("sdk_probe", "/", method="POST", data=b"0123456789")
    assert (status, body) == (200, b"<part=234>map-ok")
    assert headers["x-replaced"] == "yes"

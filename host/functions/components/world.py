"""The names of the function world (sdk-guest/wit/function.wit) the host provides to components:
one place for the package version, the interfaces' instance names and the runtime functions, so the
linker, the deployer's checks and `inspect` agree on them."""

from __future__ import annotations

PACKAGE = "wasm-faas:function"
VERSION = "0.1.0"

RUNTIME = f"{PACKAGE}/runtime@{VERSION}"
TYPES = f"{PACKAGE}/types@{VERSION}"
HANDLER = f"{PACKAGE}/handler@{VERSION}"
IDENTITY = f"{PACKAGE}/identity@{VERSION}"
HANDLE = "handle"
FUNCTION_ID = "function-id"

# What a version's record reports as its ABI (GET /functions/{id}, inspect).
ABI_LABEL = f"{PACKAGE}@{VERSION} (component)"

RUNTIME_FUNCTIONS = ("get-state", "set-state", "delete-state", "invoke", "publish", "try-lock", "unlock",
                     "next-id", "get-configuration", "log")

# The WASI 0.2 interfaces wasmtime's `add_wasip2` links (any 0.2.x patch version: wasmtime matches
# imports by semver). A component may import a subset; `wasi:http` is not offered (functions reach
# other functions with `invoke`, and upstreams are the host's to configure).
WASI_P2_INTERFACES = frozenset({
    "wasi:io/error", "wasi:io/poll", "wasi:io/streams",
    "wasi:clocks/monotonic-clock", "wasi:clocks/wall-clock",
    "wasi:random/random", "wasi:random/insecure", "wasi:random/insecure-seed",
    "wasi:cli/environment", "wasi:cli/exit", "wasi:cli/stdin", "wasi:cli/stdout", "wasi:cli/stderr",
    "wasi:cli/terminal-input", "wasi:cli/terminal-output", "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout", "wasi:cli/terminal-stderr",
    "wasi:filesystem/types", "wasi:filesystem/preopens",
    "wasi:sockets/network", "wasi:sockets/instance-network", "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket", "wasi:sockets/tcp", "wasi:sockets/tcp-create-socket",
    "wasi:sockets/ip-name-lookup",
})
WASI_P2_VERSION_PREFIX = "0.2."


def provided_import(name: str) -> bool:
    """Whether the host links the component import `name` (e.g. "wasi:cli/stdout@0.2.9")."""
    if name in (RUNTIME, TYPES):
        return True
    interface, _, version = name.partition("@")
    return interface in WASI_P2_INTERFACES and version.startswith(WASI_P2_VERSION_PREFIX)

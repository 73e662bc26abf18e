"""`wasm-faas deploy FILE --admin URL [--token T]`: upload a module's bytes to a host (on this
machine or another) through its admin API: `PUT /functions/{name}`. The host writes it into its
functions folder and installs it on every worker. A settings file beside FILE (`name.toml`) goes
along."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

from host.cli._common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_admin_options,
    admin,
    error,
    error_text,
    progress,
)

SETTINGS_HEADER = "X-Wasm-Faas-Settings"  # base64 of the name.toml to write beside the module


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "deploy", help="upload a module to a host's admin API",
        description="Upload FILE (.wasm) to the host; it is deployed on every worker before this returns. The "
                    "host must have server.admin_token set (uploads are refused otherwise).",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, metavar="FILE", help="the module (e.g. build/NAME.wasm)")
    parser.add_argument("--name", help="the name to deploy it under (default: the file's stem)")
    add_admin_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        error(f"no such file: {path}")
        return EXIT_USAGE
    wasm = path.read_bytes()
    if wasm[:4] != b"\0asm":
        error(f"{path} is not a WebAssembly module")
        return EXIT_USAGE
    name = args.name or path.stem
    headers = {"Content-Type": "application/wasm"}
    settings = path.with_suffix(".toml")
    if settings.is_file():
        headers[SETTINGS_HEADER] = base64.b64encode(settings.read_bytes()).decode()
    try:
        with progress(f"deploying {name} ({len(wasm):,} bytes) to {args.admin}"):
            status, body = admin(args, "PUT", f"/functions/{name}", data=wasm, headers=headers)
    except CliError as failure:
        error(str(failure))
        return failure.code
    if status not in (200, 201):
        error(f"the host refused {name} (HTTP {status}): {error_text(body)}")
        return EXIT_FAILED
    versions = body.get("versions", []) if isinstance(body, dict) else []
    ids = sorted({str(v.get("id")) for v in versions if isinstance(v, dict)})
    print(f"deployed {name} ({'new' if status == 201 else 'replaced'}) as id {', '.join(ids) or name}")
    if isinstance(body, dict) and body.get("path"):
        print(json.dumps({"path": body["path"]}))
    return EXIT_OK

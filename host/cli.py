"""`python -m host` / `wasm-faas`: serve functions, with flags that override the config file."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import DEFAULT_CONFIG, ConfigError, load_config, validate_config

DESCRIPTION = """\
A WebAssembly FaaS host: drop proxy-wasm/Layotto .wasm functions in a folder, call them over HTTP
with the header `id: <function id>`.

  python -m host serve                           # embedded quickstart (memory state store)
  python -m host serve --config configs/redis.toml
  curl -H 'id: id_1' 'http://127.0.0.1:2045/?name=book1'
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m host", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the function listener and the admin listener",
                                description="Run the host. Flags override the config file.")
    serve.add_argument("--config", type=Path, default=None,
                       help=f"native .toml or Layotto .json config (default: {DEFAULT_CONFIG.name}, "
                            "the embedded quickstart: memory store, example functions)")
    serve.add_argument("--functions", action="append", metavar="DIR",
                       help="folder of .wasm functions (repeatable; replaces functions_dirs from the config)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="function listener (default 127.0.0.1:2045)")
    serve.add_argument("--admin", metavar="HOST:PORT",
                       help="admin and actuator listener (default 127.0.0.1:34998)")
    serve.add_argument("--log-level", choices=["trace", "debug", "info", "warning", "error", "critical"])
    return parser


def _load(args: argparse.Namespace):
    config = load_config(args.config)
    overrides = config.model_dump()
    if args.functions:
        overrides["functions_dirs"] = [str(Path(d).resolve()) for d in args.functions]
    for flag in ("listen", "admin", "log_level"):
        value = getattr(args, flag)
        if value:
            overrides["server"][flag] = value
    return validate_config(overrides, "command line")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    level = config.server.log_level.upper()
    logging.basicConfig(level=5 if level == "TRACE" else getattr(logging, level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .server import run

    run(config)
    return 0

"""`wasm-faas invoke ID [-d DATA|@FILE] [-H K:V] [--host URL]`: call a function over HTTP (the
header `id` picks it) and print its answer."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from host.cli._common import (
    DEFAULT_HOST,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    error,
    fetch,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "invoke", help="call a function and print its answer",
        description="Send one request to a function (header `id: ID`) and print the body on stdout. Exits 1 "
                    "when the answer is an HTTP error (status >= 400).", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("id", metavar="ID", help="the function id")
    parser.add_argument("-d", "--data", help="request body; @FILE reads it from a file, @- from stdin")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="K:V", help="a request header "
                        "(repeatable)")
    parser.add_argument("-X", "--method", help="HTTP method (default: GET, POST with --data)")
    parser.add_argument("--path", default="/", help="request path and query (default: /)")
    parser.add_argument("--host", default=os.environ.get("WASM_FAAS_HOST", DEFAULT_HOST), metavar="URL",
                        help="the function listener (default: $WASM_FAAS_HOST or %(default)s)")
    parser.add_argument("-i", "--include", action="store_true", help="print the status line and headers first")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait (default: %(default)s)")
    parser.set_defaults(handler=run)


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode()


def run(args: argparse.Namespace) -> int:
    headers = {"id": args.id}
    for item in args.header:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            error(f"header {item!r}: expected K:V")
            return EXIT_USAGE
        headers[key.strip()] = value.strip()
    try:
        body = _body(args.data)
    except OSError as failure:
        error(f"cannot read the body: {failure}")
        return EXIT_USAGE
    method = args.method or ("POST" if body is not None else "GET")
    path = args.path if args.path.startswith("/") else "/" + args.path
    try:
        status, answer_headers, answer = fetch(method, args.host.rstrip("/") + path, data=body, headers=headers,
                                               timeout=args.timeout)
    except CliError as failure:
        error(str(failure))
        return failure.code
    if args.include:
        print(f"HTTP {status}")
        for key, value in answer_headers.items():
            print(f"{key}: {value}")
        print()
    sys.stdout.buffer.write(answer)
    sys.stdout.flush()
    if status >= 400:
        if not args.include:
            print(f"HTTP {status}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK

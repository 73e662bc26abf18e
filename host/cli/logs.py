"""`wasm-faas logs ID [-f]`: a function's recent log lines (its guest's `proxy_log` lines and the
host's lines about its requests), from the admin API's `GET /functions/{id}/logs`; `-f` keeps
following (a long poll with a cursor) until interrupted."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any
from urllib.parse import quote

from host.cli._common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    add_admin_options,
    admin,
    error,
    error_text,
)

FOLLOW_WAIT_S = 10


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "logs", help="print (and follow) a function's log lines",
        description="The function's recent log lines from the host's memory (the last few thousand lines per "
                    "host process), oldest first; with --workers N, from every worker.", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("id", metavar="ID")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line, as the host keeps them")
    add_admin_options(parser)
    parser.set_defaults(handler=run)


def _format(line: dict[str, Any]) -> str:
    stamp = dt.datetime.fromtimestamp(float(line.get("time", 0))).strftime("%H:%M:%S.%f")[:-3]
    worker = f" [worker {line['worker']}]" if "worker" in line else ""
    request = f" ({line['request_id']})" if line.get("request_id") else ""
    return f"{stamp} {str(line.get('level', '')).upper():<7}{worker} {line.get('message', '')}{request}"


def run(args: argparse.Namespace) -> int:
    import json

    cursor = ""
    first = True
    try:
        while True:
            wait = FOLLOW_WAIT_S if args.follow and not first else 0
            path = f"/functions/{quote(args.id, safe='')}/logs?after={quote(cursor)}&wait={wait}"
            status, body = admin(args, "GET", path, timeout=wait + 15)
            if status != 200 or not isinstance(body, dict):
                error(f"HTTP {status}: {error_text(body)}")
                return EXIT_FAILED
            lines = body.get("lines", [])
            if first and not lines and not body.get("deployed"):
                error(f"no function {args.id!r} on {args.admin} (and no lines of it)")
                return EXIT_NOT_FOUND
            for line in lines:
                print(json.dumps(line) if args.json else _format(line), flush=True)
            cursor = str(body.get("cursor", cursor))
            first = False
            if not args.follow:
                return EXIT_OK
    except CliError as failure:
        error(str(failure))
        return failure.code
    except KeyboardInterrupt:
        return EXIT_OK

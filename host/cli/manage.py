"""`wasm-faas ls`, `describe ID`, `rm ID`: what a host serves, one function in detail, and removing
one — through the admin API (`GET /functions`, `GET /functions/{id}`, `DELETE /functions/{id}`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
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


def add_parsers(commands: argparse._SubParsersAction) -> None:
    def verb(name: str, help: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=description, epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        return parser

    ls = verb("ls", "list the functions a host serves",
              "One line per deployed function: id, instances, requests, errors, last (re)load.")
    ls.add_argument("--json", action="store_true", help="print the admin API's answer as JSON")
    add_admin_options(ls)
    ls.set_defaults(handler=run_ls)

    describe = verb("describe", "show one function in detail (JSON)",
                    "Every deployed version of function ID (on every worker).")
    describe.add_argument("id", metavar="ID")
    add_admin_options(describe)
    describe.set_defaults(handler=run_describe)

    rm = verb("rm", "undeploy a function (and delete its module file)",
              "Undeploy function ID on every worker and delete its module file when it lies in a functions "
              "folder (so a restart does not bring it back).")
    rm.add_argument("id", metavar="ID")
    rm.add_argument("--keep-file", action="store_true", help="undeploy only; leave the module file")
    add_admin_options(rm)
    rm.set_defaults(handler=run_rm)


def _call(args: argparse.Namespace, method: str, path: str) -> tuple[int, Any] | int:
    try:
        return admin(args, method, path)
    except CliError as failure:
        error(str(failure))
        return failure.code


def _row(function: dict[str, Any]) -> str:
    instances = function.get("instances", {})
    reload = function.get("last_reload", {})
    outcome = reload.get("outcome", "?") + (f" ({reload['error']})" if reload.get("error") else "")
    name = function.get("id") or Path(str(function.get("source", "-"))).stem  # a rejected module has no id
    return (f"{name:<24} {instances.get('busy', 0)}/{instances.get('total', 0):<9} "
            f"{function.get('requests', 0):>9} {function.get('errors', 0):>7}  {outcome}")


def run_ls(args: argparse.Namespace) -> int:
    answer = _call(args, "GET", "/functions")
    if isinstance(answer, int):
        return answer
    status, body = answer
    if status != 200 or not isinstance(body, dict):
        error(f"HTTP {status}: {error_text(body)}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(body, indent=2))
        return EXIT_OK
    print(f"{'ID':<24} {'BUSY/INST':<11} {'REQUESTS':>9} {'ERRORS':>7}  LAST LOAD")
    for function in body.get("functions", []):
        print(_row(function))
    for name, reason in sorted(body.get("failed", {}).items()):
        print(f"{name:<24} {'-':<11} {'-':>9} {'-':>7}  failed: {reason}")
    return EXIT_OK


def run_describe(args: argparse.Namespace) -> int:
    answer = _call(args, "GET", f"/functions/{quote(args.id, safe='')}")
    if isinstance(answer, int):
        return answer
    status, body = answer
    if status == 404:
        error(f"no function {args.id!r} on {args.admin}")
        return EXIT_NOT_FOUND
    if status != 200:
        error(f"HTTP {status}: {error_text(body)}")
        return EXIT_FAILED
    print(json.dumps(body, indent=2))
    return EXIT_OK


def run_rm(args: argparse.Namespace) -> int:
    query = "?keep_file=1" if args.keep_file else ""
    answer = _call(args, "DELETE", f"/functions/{quote(args.id, safe='')}{query}")
    if isinstance(answer, int):
        return answer
    status, body = answer
    if status == 404:
        error(f"no function {args.id!r} on {args.admin}")
        return EXIT_NOT_FOUND
    if status != 200 or not isinstance(body, dict):
        error(f"HTTP {status}: {error_text(body)}")
        return EXIT_FAILED
    deleted = body.get("deleted", [])
    print(f"removed {args.id}" + (f" (deleted {', '.join(deleted)})" if deleted else ""))
    return EXIT_OK

"""What the developer verbs share: exit codes, talking to a host over HTTP (stdlib only, so
`invoke` starts fast), the admin URL and token, and a one-line progress indicator on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# Exit codes every verb uses (documented in `python -m host --help`).
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed: a build error, a refused deploy, an HTTP error answer
EXIT_USAGE = 2  # bad arguments, no project, no such file (argparse uses 2 as well)
EXIT_UNREACHABLE = 3  # the host (function or admin listener) could not be reached
EXIT_NOT_FOUND = 4  # the host has no such function
EXIT_TOOLCHAIN = 5  # the language's compiler is not installed

EXIT_CODES_HELP = """\
exit codes: 0 ok, 1 failed (build error, refused, HTTP error answer), 2 usage (bad arguments,
no project, no such file), 3 host unreachable, 4 no such function, 5 toolchain missing"""

DEFAULT_HOST = "http://127.0.0.1:2045"
DEFAULT_ADMIN = "http://127.0.0.1:34998"
# Never through an http_proxy from the environment: these talk to a host the user names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CliError(Exception):
    """Ends a verb with `code` after printing `message` on stderr."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def fetch(method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); an HTTP error status is an answer too. Unreachable: CliError 3."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as answer:
        return answer.code, dict(answer.headers.items()), answer.read()
    except (urllib.error.URLError, OSError) as failure:
        reason = getattr(failure, "reason", failure)
        raise CliError(EXIT_UNREACHABLE, f"cannot reach {url}: {reason}") from None


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", metavar="URL", default=os.environ.get("WASM_FAAS_ADMIN", DEFAULT_ADMIN),
                        help="the host's admin listener (default: $WASM_FAAS_ADMIN or %(default)s)")
    parser.add_argument("--token", default=os.environ.get("WASM_FAAS_TOKEN"),
                        help="the admin bearer token (server.admin_token; default: $WASM_FAAS_TOKEN)")


def admin(args: argparse.Namespace, method: str, path: str, *, data: bytes | None = None,
          headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, Any]:
    """One admin API call: (status, parsed JSON body or text)."""
    sent = dict(headers or {})
    if args.token:
        sent["Authorization"] = f"Bearer {args.token}"
    status, _, body = fetch(method, args.admin.rstrip("/") + path, data=data, headers=sent, timeout=timeout)
    if status == 401:
        raise CliError(EXIT_FAILED, "the admin API refused the token (HTTP 401): pass --token or set "
                                    "WASM_FAAS_TOKEN")
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body.decode("utf-8", "replace")


def error_text(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return str(body)


@contextmanager
def progress(what: str, stream: TextIO | None = None) -> Iterator[None]:
    """`what...` on stderr while the block runs, with the elapsed seconds; on a terminal it ticks."""
    out = stream or sys.stderr
    started = time.monotonic()
    live = out.isatty()
    done = threading.Event()

    def tick() -> None:
        frames = "|/-\\"
        index = 0
        while not done.wait(0.1):
            out.write(f"\r{frames[index % 4]} {what} ({time.monotonic() - started:.1f}s)")
            out.flush()
            index += 1

    ticker = threading.Thread(target=tick, daemon=True) if live else None
    if ticker is not None:
        ticker.start()
    else:
        out.write(f"{what}...\n")
        out.flush()
    ok = False
    try:
        yield
        ok = True
    finally:
        done.set()
        if ticker is not None:
            ticker.join()
            out.write("\r\033[K")
        out.write(f"{what}: {'done' if ok else 'failed'} in {time.monotonic() - started:.1f}s\n")
        out.flush()

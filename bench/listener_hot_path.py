"""Micro-benchmark (not a test): CPU time per request through the function listener in process —
httptools parsing, the one call path, the answer's bytes — without sockets or the event loop's I/O.

    python bench/listener_hot_path.py [--ids hello,noop] [--requests N] [--rounds R] [--tree DIR]

Feeds one keep-alive connection (host/http/protocol.py HttpConnection over a transport that keeps
what is written) the same request again and again, and prints the best round's CPU per request.
What a wrk run adds to this is the kernel's and the event loop's share (socket calls, epoll).
`--tree DIR` measures another checkout's host (same venv), e.g. the commit before a change.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class KeptTransport:
    """What HttpConnection uses of a transport; the answers are kept (and counted)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True


async def measure(function_id: str, requests: int, rounds: int) -> tuple[float, bytes]:
    from host.app import App
    from host.config import validate_config
    from host.http.functions import create_function_server
    from host.http.protocol import HttpConnection

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "functions"
        folder.mkdir()
        shutil.copy(REPO / "examples" / "functions" / "hello.wasm", folder)
        shutil.copy(REPO / "bench" / "functions" / "noop.wat", folder)
        config = validate_config({"server": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": "",
                                             "dapr_http": "", "watch": False,
                                             "cache_dir": str(REPO / ".cache" / "bench-modules")},
                                  "functions_dirs": [str(folder)], "function_defaults": {"instance_num": 2}})
        app = App(config)
        await app.start()
        try:
            connection = HttpConnection(create_function_server(app.dispatcher, config.server))
            transport = KeptTransport()
            connection.connection_made(transport)  # type: ignore[arg-type]
            raw = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nid: {function_id}\r\n\r\n".encode()
            version = app.dispatcher.find(function_id)
            for _ in range(20000):  # until the function runs inline (answers at once)
                connection.data_received(raw)
                while connection.busy:
                    await asyncio.sleep(0)
                if version.policy.inline:
                    break
            best = float("inf")
            for _ in range(rounds):
                transport.written.clear()
                started = time.process_time()
                for _ in range(requests):
                    connection.data_received(raw)
                best = min(best, (time.process_time() - started) / requests * 1e6)
                assert len(transport.written) == requests
            return best, transport.written[-1]
        finally:
            await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", default="hello,noop")
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout whose host is measured")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    for function_id in args.ids.split(","):
        best, answer = asyncio.run(measure(function_id, args.requests, args.rounds))
        status_line = answer.split(b"\r\n", 1)[0].decode()
        print(f"{function_id}: {best:.2f} µs CPU per request (best of {args.rounds} rounds of {args.requests}); "
              f"answer {status_line}")


if __name__ == "__main__":
    main()

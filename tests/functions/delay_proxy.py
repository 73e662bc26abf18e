"""A TCP proxy that can hold replies back, run as its own process (tests/functions/test_fn_inline_reads.py):

    python -m tests.functions.delay_proxy TARGET_HOST:PORT DELAY_FILE

prints the port it listens on, then forwards every connection to the target; each reply chunk waits
the seconds written in DELAY_FILE (read for each chunk; missing or empty: none). Its own process,
so neither its threads nor their GIL slow the host under test by themselves."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class DelayingProxy:
    """This module in its own process, in front of `target` (HOST:PORT); `delay(s)` holds every reply
    back s seconds from then on, `close()` ends it and every connection it carries."""

    def __init__(self, target: str, delay_file: Path):
        self.delay_file = delay_file
        delay_file.write_text("0")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.functions.delay_proxy", target, str(delay_file)],
                                        cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def delay(self, seconds: float) -> None:
        self.delay_file.write_text(str(seconds))

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def _delay(path: Path) -> float:
    with contextlib.suppress(OSError, ValueError):
        return float(path.read_text() or 0)
    return 0.0


def _pump(source: socket.socket, sink: socket.socket, delay_file: Path | None) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            if delay_file is not None and (delay := _delay(delay_file)):
                time.sleep(delay)
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    delay_file = Path(sys.argv[2])
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        server = socket.create_connection((host, int(port)))
        threading.Thread(target=_pump, args=(client, server, None), daemon=True).start()
        threading.Thread(target=_pump, args=(server, client, delay_file), daemon=True).start()


if __name__ == "__main__":
    main()

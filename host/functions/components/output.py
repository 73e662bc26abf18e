"""What components write to stdout and stderr (a Python `print`, a traceback, `console.log`, a Rust
panic message), as lines in the host's guest log, prefixed with the function's id.

wasmtime's WASI 0.2 writes a component's output from its own (tokio) threads, after the guest call
that produced it may have returned. A Python callback there would be called from a thread Python
does not know, possibly while the interpreter shuts down (which aborts the process). So each
instance writes into pipes instead (wasmtime opens `/proc/self/fd/N` itself, as a file), and one
daemon thread here reads every pipe and logs whole lines. A pipe ends (EOF) when the instance's
store is freed, and is forgotten then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
from dataclasses import dataclass, field

MAX_LINE = 16 * 1024  # longer lines are logged in pieces
_READ_SIZE = 64 * 1024


@dataclass
class OutputStream:
    logger: logging.Logger
    level: int
    label: str
    pending: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        self.pending += data
        while True:
            end = self.pending.find(b"\n")
            if end >= 0:
                line, cut = self.pending[:end], end + 1
            elif len(self.pending) >= MAX_LINE:
                line, cut = self.pending[:MAX_LINE], MAX_LINE
            else:
                return
            del self.pending[:cut]
            self._log(bytes(line).rstrip(b"\r"))

    def finish(self) -> None:
        if self.pending:
            self._log(bytes(self.pending))
            self.pending.clear()

    def _log(self, line: bytes) -> None:
        self.logger.log(self.level, "[%s] %s", self.label, line.decode("utf-8", "replace"))


class OutputCollector:
    """One reader thread for the output pipes of every component instance in the process."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Wakes the reader when a pipe is added (select() does not see registrations made meanwhile).
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)

    def open(self, logger: logging.Logger, level: int, label: str) -> tuple[str, int, OutputStream]:
        """A new pipe whose lines are logged: (the path wasmtime opens for writing; the write end's
        descriptor, which the caller closes once wasmtime has opened the path; the stream, whose
        `label` the caller may change, e.g. once the function has reported its id)."""
        read_end, write_end = os.pipe()
        stream = OutputStream(logger, level, label)
        with self._lock:
            self._selector.register(read_end, selectors.EVENT_READ, stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="component-output", daemon=True)
                self._thread.start()
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\0")
        return f"/proc/self/fd/{write_end}", write_end, stream

    def pipes(self) -> int:
        """Pipes still open (their instances' stores are alive): for tests and leak checks."""
        with self._lock:
            return len(self._selector.get_map()) - 1

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, _READ_SIZE)
                    continue
                self._read(key.fd, key.data)

    def _read(self, fd: int, stream: OutputStream) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except OSError:
            data = b""
        if data:
            stream.feed(data)
            return
        stream.finish()
        with self._lock:
            self._selector.unregister(fd)
        os.close(fd)


_collectors: dict[int, OutputCollector] = {}
_collectors_lock = threading.Lock()


def collector() -> OutputCollector:
    """This process's collector, started on first use (a forked worker process gets its own)."""
    pid = os.getpid()
    with _collectors_lock:
        found = _collectors.get(pid)
        if found is None:
            found = _collectors[pid] = OutputCollector()
        return found


def close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)

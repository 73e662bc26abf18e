"""Logging and clocks: proxy_log, proxy_get_log_level, proxy_get_current_time_nanoseconds — and the one
way guest text reaches the host's log (`emit`, also used by WASI's fd_write for stdout/stderr).

Guest text is the guest's, not the host's: every line is escaped (newlines, carriage returns, terminal
escape sequences and other control characters, Unicode line separators and bidi overrides, and the
undecodable bytes of invalid UTF-8 become visible `\\n`, `\\x1b`, `\\u2028`... escapes), so a guest
cannot forge host log lines or drive the operator's terminal; a line is cut at MAX_LINE_CHARS; and
each function may log LINES_PER_SECOND lines a second (bursts of BURST): the rest are dropped and
counted, and the count is logged with the function's next admitted line.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING

from abi.codes import LogLevel, Status
from abi.imports._registry import ImportGroup

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

hostcall = ImportGroup(pure=True)

MAX_LINE_CHARS = 8192
LINES_PER_SECOND = 100.0
BURST = 200.0
_TRACKED_FUNCTIONS = 4096  # rate-limit state kept for at most this many function ids (least recent dropped)


def _escapes() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
    table.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
    for code in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C):
        table[code] = f"\\u{code:04x}"  # line separators, bidi embeddings, overrides, isolates and marks
    for byte in range(0x80, 0x100):  # read with surrogateescape: an invalid UTF-8 byte
        table[0xDC00 + byte] = f"\\x{byte:02x}"
    return table


_ESCAPES = _escapes()


def escape(text: str) -> str:
    """`text` as one printable log line (see the module docstring), at most MAX_LINE_CHARS long."""
    if len(text) > MAX_LINE_CHARS:
        text = f"{text[:MAX_LINE_CHARS]}... ({len(text) - MAX_LINE_CHARS} more characters dropped)"
    return text.translate(_ESCAPES)


class LogLimiter:
    """A token bucket per function id: `rate` lines a second, bursts of `burst`; rate <= 0: no limit."""

    def __init__(self, rate: float = LINES_PER_SECOND, burst: float = BURST):
        self.rate = rate
        self.burst = burst
        self._lock = threading.Lock()
        # function id -> [tokens, last refill (monotonic s), lines suppressed since the last admitted one]
        self._buckets: collections.OrderedDict[str, list[float]] = collections.OrderedDict()

    def admit(self, key: str) -> int | None:
        """None: drop this line. Else it may be logged, and the number is how many were dropped before it."""
        if self.rate <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [self.burst, now, 0]
                if len(self._buckets) > _TRACKED_FUNCTIONS:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
            if bucket[0] < 1:
                bucket[2] += 1
                return None
            bucket[0] -= 1
            suppressed, bucket[2] = int(bucket[2]), 0
            return suppressed


LIMITER = LogLimiter()
_PY_LEVELS = {LogLevel.TRACE: 5, LogLevel.DEBUG: logging.DEBUG, LogLevel.INFO: logging.INFO,
              LogLevel.WARN: logging.WARNING, LogLevel.ERROR: logging.ERROR, LogLevel.CRITICAL: logging.CRITICAL}


def configure(lines_per_second: float, burst: float | None = None) -> None:
    """Set the per-function guest log rate for this process (0: unlimited)."""
    LIMITER.rate = lines_per_second
    LIMITER.burst = burst if burst is not None else max(1.0, 2 * lines_per_second)


def emit(vm: ProxyWasmVM, level: int, text: str, *, split_lines: bool = False) -> None:
    """Log guest text for `vm`'s function: escaped and rate limited. `split_lines`: one log line per
    line of `text` (a stream such as stdout), else `text` is one line whatever it contains."""
    if not vm.log.isEnabledFor(_PY_LEVELS.get(LogLevel(level), logging.INFO)):
        return  # not logged at this level: costs no escaping and no share of the rate
    lines = text.split("\n") if split_lines else [text]
    for line in lines:
        if split_lines and not line:
            continue
        suppressed = LIMITER.admit(vm.function_id)
        if suppressed is None:
            continue
        if suppressed:
            vm.guest_log(LogLevel.WARN, f"(host: {suppressed} log lines of this function dropped, more than "
                                        f"{LIMITER.rate:g} a second)")
        vm.guest_log(level, escape(line))


def host_warning(vm: ProxyWasmVM, message: str) -> None:
    """A warning about the guest's own behaviour (a refused call), rate limited like its log lines."""
    if LIMITER.admit(f"host:{vm.function_id}") is not None:
        vm.log.warning("function %s: %s", vm.function_id, message)


def _abi_level(python_level: int) -> int:
    if python_level <= 5:
        return LogLevel.TRACE
    if python_level <= logging.DEBUG:
        return LogLevel.DEBUG
    if python_level <= logging.INFO:
        return LogLevel.INFO
    if python_level <= logging.WARNING:
        return LogLevel.WARN
    if python_level <= logging.ERROR:
        return LogLevel.ERROR
    return LogLevel.CRITICAL


@hostcall("iii")
def proxy_log(vm: ProxyWasmVM, level: int, ptr: int, size: int) -> int:
    if level > LogLevel.CRITICAL:
        return Status.BAD_ARGUMENT
    emit(vm, level, vm.read_str(ptr, size))
    return Status.OK


@hostcall("i")
def proxy_get_log_level(vm: ProxyWasmVM, ptr: int) -> int:
    vm.guest.write_u32(ptr, _abi_level(vm.log.getEffectiveLevel()))
    return Status.OK


@hostcall("i")
def proxy_get_current_time_nanoseconds(vm: ProxyWasmVM, ptr: int) -> int:
    vm.guest.write_u64(ptr, vm.services.now_ns())
    return Status.OK

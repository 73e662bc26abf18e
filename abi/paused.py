"""Where root-context work goes while streams are paused: the instances of one pool that hold one.

In Envoy one VM per worker thread holds the root context and every stream of that worker, so a
timer or a queue delivery reaches the root context that can resume a paused stream
(`proxy_set_effective_context` + `proxy_continue_stream`). Here an instance serves one request at a
time and root work (`proxy_on_tick`, `proxy_on_queue_ready`) runs on an idle instance. So while an
instance holds a paused stream, its pool's root work is posted to it instead, and the thread that
serves the paused request runs it (abi/vm.py `ProxyWasmVM._wait_paused`).

Work that finds no paused instance waits for an idle one as a `Ticket`. An instance that pauses
meanwhile takes the waiting tickets: a delivery that raced the pause must not queue for an
instance behind the very request it would resume. Each ticket runs once, wherever it runs first.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from abi.vm import ProxyWasmVM

RootWork = Callable[["ProxyWasmVM"], None]


class PausedInstance:
    """The mailbox an instance registers while its stream is paused: work posted to it, and how
    to wake the thread waiting on it."""

    __slots__ = ("work", "wake")

    def __init__(self, wake: Callable[[], None]):
        self.work: collections.deque[RootWork] = collections.deque()
        self.wake = wake


class Ticket:
    """Root work waiting for an idle instance; taken by whichever comes first."""

    __slots__ = ("work", "taken", "_board")

    def __init__(self, work: RootWork, board: PausedStreams):
        self.work = work
        self.taken = False
        self._board = board

    def run(self, vm: ProxyWasmVM) -> None:
        """On the idle instance acquired for it: run the work unless a pausing instance took it."""
        if self._board.take(self):
            self.work(vm)

    def withdraw(self) -> None:
        """The idle-instance run is over (done, or dropped for want of an instance): from now on
        no pausing instance may take the ticket."""
        self._board.take(self)


class PausedStreams:
    """One pool's instances holding a paused stream (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paused: list[PausedInstance] = []
        self._tickets: collections.deque[Ticket] = collections.deque()

    def deliver(self, work: RootWork, *, wait_for_idle: bool = True) -> Ticket | None:
        """Post `work` to every paused instance (each holds its own root context) and return None;
        when there is none, return a ticket for an idle instance to run — or None as well when
        `wait_for_idle` is false (the work is dropped: a tick while another waits for an instance)."""
        with self._lock:
            if self._paused:
                for mailbox in self._paused:
                    mailbox.work.append(work)
                    mailbox.wake()
                return None
            if not wait_for_idle:
                return None
            ticket = Ticket(work, self)
            self._tickets.append(ticket)
            return ticket

    def pause(self, mailbox: PausedInstance) -> None:
        """An instance's stream paused: it receives the pool's root work from now on, starting
        with the work that is still waiting for an idle instance."""
        with self._lock:
            self._paused.append(mailbox)
            while self._tickets:
                ticket = self._tickets.popleft()
                ticket.taken = True
                mailbox.work.append(ticket.work)

    def next_work(self, mailbox: PausedInstance) -> RootWork | None:
        with self._lock:
            return mailbox.work.popleft() if mailbox.work else None

    def resume(self, mailbox: PausedInstance) -> list[RootWork]:
        """The instance's wait is over: it receives nothing more; returns the work it did not run
        (for the caller to hand on)."""
        with self._lock:
            self._paused.remove(mailbox)
            leftovers = list(mailbox.work)
            mailbox.work.clear()
        return leftovers

    def take(self, ticket: Ticket) -> bool:
        """True once per ticket: for whoever takes it first."""
        with self._lock:
            if ticket.taken:
                return False
            ticket.taken = True
            try:
                self._tickets.remove(ticket)
            except ValueError:
                pass
            return True

    def paused_count(self) -> int:
        with self._lock:
            return len(self._paused)

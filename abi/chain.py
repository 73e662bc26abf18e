"""One HTTP exchange through a chain of plugin instances: filters in order, then the function.

As in Envoy's filter manager, each step (request headers, then body, then trailers) passes through
every instance before the next step starts; response steps run in reverse order. Every instance has
its own stream context, but they share the request and response being built, so a filter can
rewrite headers and bodies on the way. A local response or a closed stream stops the chain: the
client gets what was produced. A Pause holds the chain where it is until a later callback of that
instance resumes the stream (abi/vm.py `run_step`); one the request's deadline overtakes closes every
stream (the instances stay usable) and raises StreamPausedTooLong. The response's status is what the
guest gave; whether it can be sent is the listener's to decide (host/http/protocol.py `serialize`).
"""

from __future__ import annotations

from collections.abc import Sequence

from abi.engine import GuestTrap
from abi.http import HttpRequest, HttpResponse
from abi.vm import ProxyWasmVM, StreamPausedTooLong, StreamState


def run_chain(vms: Sequence[ProxyWasmVM], request: HttpRequest, deadline_s: float) -> HttpResponse:
    """Raises GuestTrap (and marks the failing instance broken) when a guest traps."""
    if len(vms) == 1:
        return run_one(vms[0], request, deadline_s)
    streams: list[tuple[ProxyWasmVM, StreamState]] = []
    current = vms[0]
    try:
        shared = None
        for vm in vms:
            current = vm
            stream = vm.open_stream(request, shared, deadline_s)
            shared = shared or stream
            streams.append((vm, stream))
        first = streams[0][1]
        has_body, has_trailers = bool(first.request_body), bool(first.request_trailers)
        request_steps = [("request_headers", not has_body and not has_trailers)]
        if has_body:
            request_steps.append(("request_body", not has_trailers))
        if has_trailers:
            request_steps.append(("request_trailers", True))
        if _run(streams, request_steps) and _local_response(streams) is None:
            response_steps = [("response_headers", not first.response_body)]
            if first.response_body:
                response_steps.append(("response_body", True))
            _run(list(reversed(streams)), response_steps)
        for vm, stream in streams:
            current = vm
            vm.close_stream(stream)
    except StreamPausedTooLong:
        _close_expired(streams)
        raise
    except BaseException:
        current.broken = True
        raise
    return _final_response(streams)


def run_one(vm: ProxyWasmVM, request: HttpRequest, deadline_s: float) -> HttpResponse:
    """run_chain for a function without filters (the common case): the same steps, without the
    lists of streams and steps a chain needs (this is the hot path of every request)."""
    try:
        stream = vm.open_stream(request, None, deadline_s)
    except BaseException:
        vm.broken = True
        raise
    try:
        has_body, has_trailers = bool(stream.request_body), bool(stream.request_trailers)
        proceed = vm.run_step(stream, "request_headers", not has_body and not has_trailers)
        if proceed and has_body:
            proceed = vm.run_step(stream, "request_body", not has_trailers)
        if proceed and has_trailers:
            proceed = vm.run_step(stream, "request_trailers", True)
        if proceed:  # neither answered locally nor closed
            has_response_body = bool(stream.response_body)
            if vm.run_step(stream, "response_headers", not has_response_body) and has_response_body:
                vm.run_step(stream, "response_body", True)
        vm.close_stream(stream)
    except StreamPausedTooLong:
        _close_expired([(vm, stream)])
        raise
    except BaseException:
        vm.broken = True
        raise
    return _final_response(((vm, stream),))


def _run(streams: list[tuple[ProxyWasmVM, StreamState]], steps: list[tuple[str, bool]]) -> bool:
    for step, end_of_stream in steps:
        for vm, stream in streams:
            try:
                proceed = vm.run_step(stream, step, end_of_stream)
            except StreamPausedTooLong:
                raise  # no guest code was cut short: the instance is sound
            except GuestTrap:
                vm.broken = True
                raise
            if not proceed:
                return False
    return True


def _close_expired(streams: list[tuple[ProxyWasmVM, StreamState]]) -> None:
    """The deadline passed with a stream paused: every instance finishes its stream context, as Envoy
    destroys a timed-out stream's filters; one that traps meanwhile is broken (and replaced)."""
    for vm, stream in streams:
        try:
            vm.close_expired_stream(stream)
        except GuestTrap:
            vm.broken = True


def _local_response(streams: Sequence[tuple[ProxyWasmVM, StreamState]]) -> HttpResponse | None:
    for _, stream in streams:
        if stream.local_response is not None:
            return stream.local_response
    return None


def _final_response(streams: Sequence[tuple[ProxyWasmVM, StreamState]]) -> HttpResponse:
    local = _local_response(streams)
    if local is not None:
        return local
    stream = streams[0][1]
    response = stream.response
    response.body = bytes(stream.response_body)
    status_header = [v for k, v in response.headers if k == ":status"]
    if status_header:
        response.status = _status(status_header[-1])
    response.headers = [(k, v) for k, v in response.headers if not k.startswith(":")]
    return response


def _status(value: str) -> int:
    """A `:status` the guest set, as a number; 0 (which the listener refuses) when it is not one.
    ASCII digits only: str.isdigit also takes '²' and other digits int() refuses."""
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else 0

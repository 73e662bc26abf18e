"""Prometheus metrics (issue 14): exact counts and labels after known requests, a guest-defined
metric exported under its own name, runtime calls by component and outcome, and `GET /metrics`
of a real host process with one and with two workers (merged by worker 0, `worker` label)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from abi import HttpRequest
from host.app import App
from host.config import validate_config
from host.functions.dispatch import DispatchError, GuestFailed
from host.metrics import merge_workers
from host.metrics.collectors import sanitise
from tests.guest_wat import RET, U32_A, WatGuest, write_guest
from tests.host_process import HostProcess, free_ports, request, write_host_config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def answering(folder: Path, name: str) -> None:
    answer = "(call $emit (i32.const 7)) (call $flush) (i32.const 0)"
    write_guest(folder, name, WatGuest().module(proxy_on_request_headers=answer))


def counting(folder: Path, name: str) -> None:
    """Each request: guest counter `orders.seen` +1, gauge `queue/len` = 42, histogram `size` gets 5
    and 7; and a state read from `state_demo` plus one from a store nothing configures."""
    g = WatGuest()
    define = lambda kind, metric: g.call("proxy_define_metric", kind, g.s(metric), U32_A)  # noqa: E731
    the_id = f"(i32.load (i32.const {U32_A}))"
    body = f"""(drop {define(0, "orders.seen")}) (drop {g.call("proxy_increment_metric", the_id, 1)})
    (drop {define(1, "queue/len")}) (drop {g.call("proxy_record_metric", the_id, 42)})
    (drop {define(2, "size")}) (drop {g.call("proxy_record_metric", the_id, 5)})
    (drop {g.call("proxy_record_metric", the_id, 7)})
    (drop {g.call("proxy_get_state", g.s("state_demo"), g.s("book1"), RET)})
    (drop {g.call("proxy_get_state", g.s("no_such_store"), g.s("book1"), RET)})
    (call $emit (i32.const 1)) (call $flush) (i32.const 0)"""
    write_guest(folder, name, g.module(proxy_on_request_headers=body))


def trapping(folder: Path, name: str) -> None:
    write_guest(folder, name, WatGuest().module(proxy_on_request_headers="unreachable"))


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[App]:
    folder = tmp_path / "functions"
    answering(folder, "ok")
    counting(folder, "counting")
    trapping(folder, "trap")
    config = validate_config({"server": {"cache_dir": str(tmp_path / "cache"), "watch": False},
                              "functions_dirs": [str(folder)], "function_defaults": {"instance_num": 1},
                              "state": {"state_demo": {"type": "memory", "seed": {"book1": "100"}}}})
    app = App(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def _request() -> HttpRequest:
    return HttpRequest.build("GET", "/", [], authority="localhost")


async def _status(app: App, function_id: str) -> int | str:
    try:
        return (await app.dispatcher.call(app.dispatcher.find(function_id), _request())).status
    except GuestFailed as error:
        return error.kind
    except DispatchError as error:
        return error.status


async def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_counts_and_labels_after_known_requests(tmp_path: Path) -> None:
    async with running(tmp_path) as app:
        assert [await _status(app, "ok") for _ in range(3)] == [200, 200, 200]
        assert [await _status(app, "trap") for _ in range(2)] == ["trap", "trap"]
        assert [await _status(app, "counting") for _ in range(4)] == [200] * 4
        assert await _status(app, "missing") == 404
        trap_pool = app.router.pick("trap").pool  # type: ignore[union-attr]
        await _wait(lambda: trap_pool.stats()["instances"] == 1 and trap_pool.replaced == 2)
        found = samples(app.metrics.render().decode())

    assert value(found, "wasm_faas_requests_total", function="ok", code="200") == 3
    assert value(found, "wasm_faas_requests_total", function="trap", code="500") == 2
    assert value(found, "wasm_faas_requests_total", function="counting", code="200") == 4
    assert ("wasm_faas_requests_total", frozenset({("function", "missing"), ("code", "404")})) not in found
    assert value(found, "wasm_faas_unknown_function_requests_total") == 1
    assert value(found, "wasm_faas_errors_total", function="trap", kind="trap") == 2
    assert value(found, "wasm_faas_errors_total", function="ok", kind="trap") == 0
    # The histogram saw every request of the function, answered or refused.
    assert value(found, "wasm_faas_request_duration_seconds_count", function="trap") == 2
    assert value(found, "wasm_faas_request_duration_seconds_bucket", function="ok", le="+Inf") == 3
    assert value(found, "wasm_faas_request_duration_seconds_bucket", function="ok", le="60.0") == 3
    assert value(found, "wasm_faas_instance_starts_total", function="trap", reason="deploy") == 1
    assert value(found, "wasm_faas_instance_starts_total", function="trap", reason="replace") == 2
    assert value(found, "wasm_faas_instances", function="ok", state="idle") == 1
    assert value(found, "wasm_faas_instances", function="ok", state="busy") == 0
    assert value(found, "wasm_faas_queue_depth", function="ok") == 0
    assert value(found, "wasm_faas_deploys_total", function="ok", outcome="deployed") == 1
    assert value(found, "wasm_faas_module_cache_total", result="compiled") == 3
    # Runtime calls from functions: by component and outcome; an unknown store creates no series of its name.
    assert value(found, "wasm_faas_runtime_calls_total", api="function", capability="state", component="state_demo",
                 outcome="ok") == 4
    assert value(found, "wasm_faas_runtime_calls_total", api="function", capability="state", component="",
                 outcome="unknown_component") == 4
    assert value(found, "wasm_faas_runtime_call_duration_seconds_count", api="function", capability="state",
                 component="state_demo") == 4
    # The guest's own metrics, under their (sanitised) names, with no host prefix.
    assert value(found, "orders_seen_total") == 4
    assert value(found, "queue_len") == 42
    assert value(found, "size_count") == 8
    assert value(found, "size_sum") == 4 * (5 + 7)


async def test_deploy_outcomes_and_listener_refusals(tmp_path: Path) -> None:
    async with running(tmp_path) as app:
        broken = tmp_path / "functions" / "broken.wat"
        broken.write_text("(module (func")  # invalid WAT: rejected
        await app.deployments.deploy(broken)
        record = app.deployments.find("ok")
        assert record is not None
        await app.deployments.remove(record.path)
        app.metrics.requests.listener_refused("trap")  # as the listener counts a 413
        app.metrics.requests.listener_refused("made-up-id")  # a client-chosen id creates nothing
        found = samples(app.metrics.render().decode())
    assert value(found, "wasm_faas_deploys_total", function="broken", outcome="rejected") == 1
    assert value(found, "wasm_faas_deploys_total", function="ok", outcome="removed") == 1
    assert value(found, "wasm_faas_errors_total", function="trap", kind="too_large") == 1
    assert value(found, "wasm_faas_requests_total", function="trap", code="413") == 1
    assert not any(("function", "made-up-id") in labels for _, labels in found)


def test_guest_names_are_sanitised_and_merge_adds_worker_labels() -> None:
    assert sanitise("my.filter/hits") == "my_filter_hits"
    assert sanitise("9lives") == "_9lives"
    worker0 = "# TYPE a_total counter\na_total{function=\"f\"} 2.0\n"
    worker1 = "# TYPE a_total counter\na_total{function=\"f\"} 3.0\n"
    found = samples(merge_workers([(0, worker0), (1, worker1), (2, None)]).decode())
    assert value(found, "a_total", function="f", worker="0") == 2
    assert value(found, "a_total", function="f", worker="1") == 3
    assert [value(found, "wasm_faas_worker_up", worker=w) for w in "012"] == [1, 1, 0]


# -- a real `python -m host serve`, one and two workers --------------------------------------------
@contextlib.contextmanager
def host(tmp_path: Path, workers: int) -> Iterator[tuple[HostProcess, int, int]]:
    folder = tmp_path / f"functions-{workers}"
    answering(folder, "ok")
    counting(folder, "counting")
    ports = free_ports(2)
    config = write_host_config(tmp_path, folder, ports[0], ports[1], server=f"workers = {workers}",
                               rest='[function_defaults]\ninstance_num = 1\n[state.state_demo]\ntype = "memory"\n',
                               name=f"host-{workers}.toml")
    process = HostProcess(tmp_path, "--config", str(config))
    try:
        process.wait_ready(ports[1])
        yield process, ports[0], ports[1]
    finally:
        process.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_endpoint_of_a_real_host(tmp_path: Path, workers: int) -> None:
    with host(tmp_path, workers) as (_, listen, admin):
        for _ in range(6):  # fresh connections: SO_REUSEPORT spreads them over the workers
            assert request(f"http://127.0.0.1:{listen}/", headers={"id": "ok"})[0] == 200
        for _ in range(2):
            assert request(f"http://127.0.0.1:{listen}/", headers={"id": "counting"})[0] == 200
        status, headers, body = request(f"http://127.0.0.1:{admin}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(body.decode())
    requests = {dict(labels).get("worker"): v for (name, labels), v in found.items()
                if name == "wasm_faas_requests_total" and ("function", "ok") in labels}
    guest = {dict(labels).get("worker"): v for (name, labels), v in found.items() if name == "orders_seen_total"}
    state_reads = {dict(labels).get("worker"): v for (name, labels), v in found.items()
                   if name == "wasm_faas_runtime_calls_total"
                   and {("component", "state_demo"), ("outcome", "ok")} <= labels}
    if workers == 1:
        assert requests == {None: 6}
        assert guest == {None: 2}
        assert state_reads == {None: 2}
    else:
        assert set(requests) <= {"0", "1"} and sum(requests.values()) == 6
        assert sum(guest.values()) == 2
        assert set(state_reads) <= {"0", "1"} and sum(state_reads.values()) == 2  # each worker's own calls
        assert [value(found, "wasm_faas_worker_up", worker=w) for w in ("0", "1")] == [1, 1]
        # Every worker's pool is there, under its own label.
        assert value(found, "wasm_faas_instances_max", function="ok", worker="0") >= 1
        assert value(found, "wasm_faas_instances_max", function="ok", worker="1") >= 1
        assert value(found, "wasm_faas_instance_starts_total", function="ok", reason="deploy", worker="1") >= 1


async def test_a_body_the_listener_refuses_is_counted_under_its_function(serve, tmp_path: Path) -> None:
    from tests.conftest import EXAMPLES, functions_dir, make_config

    client = await serve(make_config(tmp_path, functions_dir(tmp_path, EXAMPLES / "hello.wasm"),
                                     server={"max_body_bytes": 16}))
    status, _, _ = await client.call("hello", method="POST", data=b"x" * 100)
    assert status == 413
    async with client.session.get(client.admin + "/metrics") as response:
        found = samples(await response.text())
    assert value(found, "wasm_faas_errors_total", function="hello", kind="too_large") == 1
    assert value(found, "wasm_faas_requests_total", function="hello", code="413") == 1

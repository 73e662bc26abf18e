"""stock (id "stock", its file stem) in Python: a stock counter kept consistent with ETags, and an
event for every reservation.

    curl -X PUT -H 'id: stock' -d 3 'localhost:2045/?item=book1'   # set the stock: {"item":"book1","stock":3}
    curl -X POST -H 'id: stock' 'localhost:2045/?item=book1'       # reserve one: {"item":"book1","stock":2}
    curl -H 'id: stock' 'localhost:2045/?item=book1'               # read it

A reservation reads "stock-<item>" from state store "statestore" with its ETag and writes the count
minus one with that ETag: if another request changed it meanwhile, the write fails with `conflict`
and the reservation starts again (at most 5 times, then 503). Each reservation is published to
topic "stock" of pub/sub "pubsub" as {"item", "stock"}. Out of stock answers 409, an unknown item
404.
"""

import json
from urllib.parse import parse_qs

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import runtime
from wit_world.imports.types import Request, Response

STORE = "statestore"
PUBSUB = "pubsub"
TOPIC = "stock"
TRIES = 5
JSON = [("content-type", "application/json")]


def answer(status: int, **fields: object) -> Response:
    return Response(status, JSON, json.dumps(fields, separators=(",", ":")).encode())


def item_of(request: Request) -> str:
    query = request.path.partition("?")[2]
    return parse_qs(query).get("item", [""])[0]


def reserve(item: str) -> Response:
    key = f"stock-{item}"
    for _ in range(TRIES):
        entry = runtime.get_state(STORE, key)
        if entry is None:
            return answer(404, item=item, error="unknown item")
        left = int(entry.value) - 1
        if left < 0:
            return answer(409, item=item, error="out of stock")
        try:
            runtime.set_state(STORE, key, str(left).encode(), entry.etag)
        except Err as error:
            if isinstance(error.value, runtime.Error_Conflict):
                continue  # someone reserved meanwhile: read again
            raise
        event = json.dumps({"item": item, "stock": left}).encode()
        runtime.publish(PUBSUB, TOPIC, event, "application/json")
        return answer(200, item=item, stock=left)
    return answer(503, item=item, error="too much contention, retry")


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        item = item_of(request)
        if not item:
            return answer(400, error="missing query parameter 'item'")
        try:
            if request.method == "PUT":
                runtime.set_state(STORE, f"stock-{item}", str(int(request.body)).encode(), None)
            elif request.method == "POST":
                return reserve(item)
            entry = runtime.get_state(STORE, f"stock-{item}")
        except ValueError:
            return answer(400, error="the body must be a number")
        except Err as error:
            runtime.log(runtime.LogLevel.ERROR, f"stock {item}: {error.value}")
            return answer(500, item=item, error=str(error.value))
        if entry is None:
            return answer(404, item=item, error="unknown item")
        return answer(200, item=item, stock=int(entry.value))

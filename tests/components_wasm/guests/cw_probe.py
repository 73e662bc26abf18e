"""The component the tests drive (world `function`, id = file stem): one build for every behaviour,
chosen by the request path, so CI builds one Python guest for the tests.

    /echo      the request as JSON: {method, path, headers, body (hex)}, with two x-echo headers
    /answer    answers what the JSON body says: {status, headers, body (hex)}
    /calls     runs the runtime calls in the JSON body ([{"call": name, "args": [...]}]) and answers
               each outcome: {"ok": value} or {"err": {"case": "not-found", "message": ...}}
               (bytes travel as {"hex": ...}, an absent option as null)
    /loop      never returns (only the deadline ends it)
    /raise     raises ValueError (a trap: 500, the instance is replaced)
    /memory    allocates until MemoryError (the store's memory cap), which escapes: a trap
    /print     writes a line to stdout and one to stderr
    /exit      sys.exit(3)
    /count     how many requests this instance has answered (instances keep their memory)
    anything else: 200 "probe"
"""

import json
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import runtime
from wit_world.imports.types import Request, Response

SERVED = [0]


def to_json(value):
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, runtime.StateEntry):
        return {"value": to_json(value.value), "etag": value.etag}
    if isinstance(value, runtime.UnlockStatus):
        return value.name.lower().replace("_", "-")
    return value


def from_json(value):
    if isinstance(value, dict) and "hex" in value:
        return bytes.fromhex(value["hex"])
    return value


CALLS = {
    "get-state": runtime.get_state,
    "set-state": runtime.set_state,
    "delete-state": runtime.delete_state,
    "invoke": runtime.invoke,
    "publish": runtime.publish,
    "try-lock": runtime.try_lock,
    "unlock": runtime.unlock,
    "next-id": runtime.next_id,
    "get-configuration": runtime.get_configuration,
}
LEVELS = {level.name.lower(): level for level in runtime.LogLevel}


def run(call):
    name, args = call["call"], [from_json(arg) for arg in call["args"]]
    if name == "log":
        return {"ok": runtime.log(LEVELS[args[0]], args[1])}
    try:
        return {"ok": to_json(CALLS[name](*args))}
    except Err as error:
        case = type(error.value).__name__.removeprefix("Error_")
        kebab = "".join("-" + c.lower() if c.isupper() else c for c in case).lstrip("-")
        return {"err": {"case": kebab, "message": error.value.value}}


def reply(status, body, headers=()):
    return Response(status, list(headers), body)


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        SERVED[0] += 1
        route = request.path.partition("?")[0]
        if route == "/echo":
            echoed = {"method": request.method, "path": request.path,
                      "headers": [list(pair) for pair in request.headers], "body": request.body.hex()}
            return reply(200, json.dumps(echoed).encode(),
                         [("content-type", "application/json"), ("x-echo", "1"), ("x-echo", "2")])
        if route == "/answer":
            wanted = json.loads(request.body)
            return reply(wanted["status"], bytes.fromhex(wanted["body"]), [tuple(h) for h in wanted["headers"]])
        if route == "/calls":
            outcomes = [run(call) for call in json.loads(request.body)]
            return reply(200, json.dumps(outcomes).encode(), [("content-type", "application/json")])
        if route == "/loop":
            while True:
                pass
        if route == "/raise":
            raise ValueError("probe was asked to raise")
        if route == "/memory":
            hoard = []
            while True:
                hoard.append(bytearray(4 << 20))
        if route == "/print":
            print("probe says hello on stdout")
            print("probe says hello on stderr", file=sys.stderr)
            return reply(200, b"printed")
        if route == "/exit":
            sys.exit(3)
        if route == "/count":
            return reply(200, str(SERVED[0]).encode())
        return reply(200, b"probe")

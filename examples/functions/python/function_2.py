"""function_2 (id "id_2") in Python: the server half of the Layotto FaaS demo, as a component.

    python scripts/build_components.py   # -> examples/functions-components/function_2.wasm

The whole request body is a book name; the answer is that key's value in the state store
"state_demo" (e.g. "100" after `redis-cli set book1 100`), empty for a missing key, as
examples/functions/function_2.c answers.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import runtime
from wit_world.imports.types import Request, Response


class Identity(exports.Identity):
    def function_id(self) -> str:
        return "id_2"


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        name = request.body.decode("utf-8", "replace")
        try:
            entry = runtime.get_state("state_demo", name)
        except Err as error:  # error.value is one of runtime.Error_NotFound, Error_Internal...
            reason = f"{type(error.value).__name__.removeprefix('Error_')}: {error.value.value}"
            return Response(500, [("content-type", "text/plain")], f"get_state failed: {reason}\n".encode())
        return Response(200, [], entry.value if entry is not None else b"")

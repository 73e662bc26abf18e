"""The WIT world in sdk-guest/wit (what guests are built against) and the host's view of it
(host/functions/components/world.py) name the same package, version and runtime functions."""

from __future__ import annotations

import re

from host.functions.components.world import PACKAGE, RUNTIME_FUNCTIONS, VERSION
from tests.conftest import REPO

WIT = (REPO / "sdk-guest" / "wit" / "function.wit").read_text()


def _interface(name: str) -> str:
    found = re.search(rf"^interface {name} \{{\n(.*?)^\}}", WIT, re.MULTILINE | re.DOTALL)
    assert found, f"no interface {name} in function.wit"
    return found[1]


def test_the_package_and_version_are_the_hosts() -> None:
    assert re.search(rf"^package {re.escape(PACKAGE)}@{re.escape(VERSION)};$", WIT, re.MULTILINE)


def test_the_runtime_functions_are_the_ones_the_host_links() -> None:
    declared = re.findall(r"^  ([a-z][a-z-]*): func\(", _interface("runtime"), re.MULTILINE)
    assert sorted(declared) == sorted(RUNTIME_FUNCTIONS)


def test_the_worlds_export_what_the_host_calls() -> None:
    assert re.search(r"^world function \{\n  import runtime;\n  export handler;\n\}", WIT, re.MULTILINE)
    assert re.search(r"^world named-function \{\n  include function;\n  export identity;\n\}", WIT, re.MULTILINE)
    assert "handle: func(request: request) -> response;" in _interface("handler")
    assert "function-id: func() -> string;" in _interface("identity")

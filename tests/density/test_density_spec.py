"""How a function's pool bounds are resolved from its settings and [function_defaults]: scale to zero by
default, Layotto's instance_num as a fixed pool, min/max_instances beside it winning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from host.config import FunctionConfig, FunctionDefaults, validate_config
from host.functions.errors import DeployError
from host.functions.spec import instance_bounds, spec_for

CPUS = os.cpu_count() or 1


@pytest.mark.parametrize(("defaults", "item", "bounds"), [
    ({}, {}, (0, CPUS, 60.0)),  # the default: nothing while idle, one per CPU under load
    ({}, {"instance_num": 3}, (3, 3, 60.0)),  # Layotto: a fixed pool
    ({}, {"instance_num": 0}, (CPUS, CPUS, 60.0)),  # <= 0: one per CPU, fixed
    ({"instance_num": 2}, {}, (2, 2, 60.0)),  # a fixed default for every function
    ({"instance_num": 2}, {"max_instances": 4}, (2, 4, 60.0)),
    ({}, {"instance_num": 4, "min_instances": 1}, (1, 4, 60.0)),  # min beside instance_num wins
    ({}, {"min_instances": 1, "max_instances": 5, "idle_timeout_ms": 250}, (1, 5, 0.25)),
    ({"min_instances": 1, "max_instances": 2, "idle_timeout_ms": 0}, {}, (1, 2, 0.0)),
    ({"min_instances": 3}, {"max_instances": 2}, (2, 2, 60.0)),  # across layers: the minimum lowered
    ({}, {"min_instances": 2, "max_instances": 0}, (min(2, CPUS), CPUS, 60.0)),  # 0 as max: one per CPU
])
def test_instance_bounds(defaults: dict[str, Any], item: dict[str, Any], bounds: tuple[int, int, float]) -> None:
    assert instance_bounds(FunctionDefaults(**defaults), FunctionConfig(**item)) == bounds


def test_a_minimum_over_the_maximum_in_one_table_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"min_instances \(3\) is over max_instances \(2\)"):
        FunctionConfig(min_instances=3, max_instances=2)
    with pytest.raises(ValueError, match="min_instances"):
        FunctionDefaults(min_instances=3, max_instances=2)


def test_the_spec_carries_the_bounds_to_the_function_and_its_filters(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "f.wasm").write_bytes(b"\0asm\x01\0\0\0")
    (folder / "f.toml").write_text("min_instances = 2\nmax_instances = 3\nidle_timeout_ms = 500\n"
                                   "[[filters]]\npath = 'f.wasm'\n")
    config = validate_config({"functions_dirs": [str(folder)], "base_dir": str(folder)})
    spec = spec_for(config, folder / "f.wasm")
    assert (spec.min_size, spec.instance_num, spec.idle_timeout_s) == (2, 3, 0.5)
    (flt,) = spec.filters
    assert (flt.min_size, flt.instance_num, flt.idle_timeout_s) == (2, 3, 0.5)
    # A maximum from another layer (the admin API) under the file's minimum lowers the minimum.
    spec = spec_for(config, folder / "f.wasm", FunctionConfig(max_instances=1))
    assert (spec.min_size, spec.instance_num) == (1, 1)
    (folder / "f.toml").write_text("min_instances = 3\nmax_instances = 2\n")
    with pytest.raises(DeployError, match=r"f.toml: .*min_instances \(3\) is over max_instances \(2\)"):
        spec_for(config, folder / "f.wasm")

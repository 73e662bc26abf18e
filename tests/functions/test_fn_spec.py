"""A function's resolved settings (host/functions/spec.py): the layering of defaults, `name.toml`,
the config entry and admin overrides, and the PluginSettings its instances start with."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from host.config import FunctionConfig, HostConfig
from host.functions.errors import DeployError
from host.functions.spec import instance_count, spec_for
from tests.conftest import make_config
from tests.guest_wat import WatGuest, serialize_map, write_guest


def _module(folder: Path, name: str) -> Path:
    write_guest(folder, name, WatGuest().module(proxy_on_request_headers="(i32.const 0)"))
    return folder / f"{name}.wat"


def _config(tmp_path: Path, folder: Path, functions: dict[str, Any] | None = None, **sections: Any) -> HostConfig:
    return make_config(tmp_path, folder, functions=functions or {}, **sections)


def test_settings_layer_defaults_then_settings_file_then_config_then_override(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    path = _module(folder, "layered")
    (folder / "layered.toml").write_text('instance_num = 3\ntimeout_ms = 2000\nmax_queue = 5\nroot_id = "from-file"\n')
    config = _config(tmp_path, folder, {"layered": {"timeout_ms": 3000, "root_id": "from-config"}},
                     function_defaults={"instance_num": 2, "timeout_ms": 1000, "memory_limit_mb": 64, "max_queue": 9})
    spec = spec_for(config, path)
    assert (spec.name, spec.path) == ("layered", path.resolve())
    assert spec.instance_num == 3  # the settings file beats the defaults...
    assert spec.max_queue == 5
    assert spec.timeout_s == 3.0 and spec.root_id == "from-config"  # ...and the config entry beats the file
    assert spec.memory_limit_bytes == 64 * 1024 * 1024  # nobody set it: the default
    override = FunctionConfig.model_validate({"instance_num": 4, "name": "renamed"})
    spec = spec_for(config, path, override)
    assert (spec.instance_num, spec.name, spec.timeout_s, spec.max_queue) == (4, "renamed", 3.0, 5)
    # A folder module with no settings at all: the defaults, named after the file.
    plain = spec_for(config, _module(folder, "plain"))
    assert (plain.name, plain.instance_num, plain.timeout_s, plain.max_queue) == ("plain", 2, 1.0, 9)


def test_an_explicit_zero_is_not_overridden_by_a_lower_layer(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    path = _module(folder, "zero")
    (folder / "zero.toml").write_text("instance_num = 0\nmax_queue = 0\n")
    default = (os.cpu_count() or 1) + 1  # unlike one per CPU
    spec = spec_for(_config(tmp_path, folder, function_defaults={"instance_num": default, "max_queue": 7}), path)
    assert spec.instance_num == (os.cpu_count() or 1) and spec.max_queue == 0


@pytest.mark.parametrize("configured", [0, -1, -8])
def test_instance_count_of_zero_or_less_is_one_per_cpu(configured: int) -> None:
    assert instance_count(configured) == (os.cpu_count() or 1)


def test_instance_count_keeps_a_positive_number() -> None:
    assert [instance_count(n) for n in (1, 3, 64)] == [1, 3, 64]


def test_plugin_and_vm_config_encodings(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    table = {"store": "redis", "retries": 3}
    config = _config(tmp_path, folder, {
        "as_json": {"path": str(_module(folder, "as_json")), "plugin_config": table, "vm_config": {"a": [1, 2]}},
        "as_map": {"path": str(_module(folder, "as_map")), "plugin_config": table,
                   "plugin_config_encoding": "proxy-wasm-map"},
        "as_text": {"path": str(_module(folder, "as_text")), "plugin_config": "raw text", "vm_config": "vm text"}})
    as_json = spec_for(config, folder / "as_json.wat").plugin_settings()
    assert json.loads(as_json.plugin_config) == table and json.loads(as_json.vm_config) == {"a": [1, 2]}
    as_map = spec_for(config, folder / "as_map.wat").plugin_settings()
    assert as_map.plugin_config == serialize_map([("store", "redis"), ("retries", "3")])
    as_text = spec_for(config, folder / "as_text.wat").plugin_settings()
    assert (as_text.plugin_config, as_text.vm_config) == (b"raw text", b"vm text")


def test_every_allow_list_reaches_plugin_settings_under_its_setting_name(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    path = _module(folder, "guarded")
    # Every allow-list field the config model has (read from the model, not from spec.py's list).
    fields = [name for name in FunctionConfig.model_fields if name.startswith("allowed_")]
    assert len(fields) >= 7
    lists = {name: [f"{name}-a", f"{name}-b"] for name in fields}
    lists[fields[0]] = []  # an empty list allows nothing; it must not vanish
    settings = spec_for(_config(tmp_path, folder, {"guarded": lists}), path).plugin_settings()
    assert settings.allow_lists == {name: tuple(names) for name, names in lists.items()}
    # A list not given is absent (everything allowed), not empty (nothing allowed).
    only_one = spec_for(_config(tmp_path, folder, {"guarded": {fields[1]: ["x"]}}), path).plugin_settings()
    assert only_one.allow_lists == {fields[1]: ("x",)}


def test_fuel_needs_metering(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    path = _module(folder, "metered")
    with pytest.raises(DeployError, match=r"functions\.metered\.fuel needs server\.fuel_metering"):
        spec_for(_config(tmp_path, folder, {"metered": {"fuel": 1000}}), path)
    spec = spec_for(_config(tmp_path, folder, {"metered": {"fuel": 1000}}, server={"fuel_metering": True}), path)
    assert spec.fuel == 1000 and spec.plugin_settings().fuel_per_request == 1000
    assert spec_for(_config(tmp_path, folder), path).plugin_settings().fuel_per_request is None


def test_filters_inherit_the_functions_instances_and_timeout(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    path = _module(folder, "fronted")
    auth, rewrite = _module(tmp_path / "filters", "auth"), _module(tmp_path / "filters", "rewrite")
    config = _config(tmp_path, folder, {"fronted": {
        "instance_num": 3, "timeout_ms": 1500, "filters": [
            {"path": str(auth), "plugin_config": {"k": "v"}, "plugin_config_encoding": "proxy-wasm-map"},
            {"path": str(rewrite), "name": "rw", "root_id": "r"}]}},
        function_defaults={"memory_limit_mb": 32})
    spec = spec_for(config, path)
    assert [f.name for f in spec.filters] == ["auth", "rw"]
    assert [f.path for f in spec.filters] == [auth.resolve(), rewrite.resolve()]
    for filter_spec in spec.filters:
        assert (filter_spec.instance_num, filter_spec.timeout_s) == (3, 1.5)
        assert filter_spec.memory_limit_bytes == 32 * 1024 * 1024 and filter_spec.filters == ()
    assert spec.filters[0].plugin_config == serialize_map([("k", "v")]) and spec.filters[1].root_id == "r"


@pytest.mark.parametrize(("text", "words"), [
    ('instance_num = "many"\n', "instance_num"),
    ("timeout_ms = -5\n", "timeout_ms"),
    ("no_such_setting = 1\n", "no_such_setting"),
    ("instance_num = \n", "not valid TOML"),
])
def test_a_bad_settings_file_is_a_deploy_error_naming_the_field(tmp_path: Path, text: str, words: str) -> None:
    folder = tmp_path / "functions"
    path = _module(folder, "broken")
    (folder / "broken.toml").write_text(text)
    with pytest.raises(DeployError) as caught:
        spec_for(_config(tmp_path, folder), path)
    assert "broken.toml" in str(caught.value) and words in str(caught.value)

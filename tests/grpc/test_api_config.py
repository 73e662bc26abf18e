"""The runtime API's settings: defaults, validation that names the field, and what a Layotto
`config.json` says about them (its gRPC listener's address, its `app` callback)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from host.config import ConfigError, load_config, validate_config
from host.config.model import REPO_ROOT

LAYOTTO = REPO_ROOT / "configs" / "layotto.json"


def test_defaults_and_validation() -> None:
    server = validate_config({}).server
    assert (server.grpc, server.dapr_http, server.api_token) == ("127.0.0.1:34904", "127.0.0.1:3500", None)
    assert (server.app_callback, server.app_http) == ("", "")
    assert validate_config({"server": {"grpc": "", "dapr_http": ""}}).server.grpc == ""  # "" disables
    for field, value in (("grpc", "34904"), ("dapr_http", "localhost"), ("app_callback", "x:y"),
                         ("app_http", "127.0.0.1:3000"), ("api_max_message_bytes", 0)):
        with pytest.raises(ConfigError, match=f"server.{field}"):
            validate_config({"server": {field: value}})


def test_layotto_config_json_grpc_listener_and_app_callback(tmp_path: Path) -> None:
    raw = json.loads(LAYOTTO.read_text())
    assert load_config(LAYOTTO).server.grpc == "127.0.0.1:34904"

    moved = copy.deepcopy(raw)
    listener = next(listener for server in moved["servers"] for listener in server["listeners"]
                    if any("grpc_config" in (f.get("config") or {}) for chain in listener.get("filter_chains", [])
                           for f in chain["filters"]))
    listener["address"] = "0.0.0.0:45000"
    grpc_config = listener["filter_chains"][0]["filters"][0]["config"]["grpc_config"]
    grpc_config["app"] = {"app_id": "app1", "grpc_callback_port": 9999}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(moved))
    config = load_config(path)
    assert config.server.grpc == "0.0.0.0:45000" and config.app_id == "app1"
    assert (config.server.app_callback, config.server.app_callback_protocol) == ("127.0.0.1:9999", "layotto")

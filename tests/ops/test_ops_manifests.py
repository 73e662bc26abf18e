"""Containers and Kubernetes (issue 14): the Containerfile is hadolint-clean, `kubectl kustomize`
renders the base and the Redis overlay, `kubernetes-validate --strict` accepts every rendered
manifest, the host configs they ship are valid, and the base's function (a ConfigMap-borne .wat)
deploys and answers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from abi import HttpRequest
from host.app import App
from host.config import validate_config
from tests.conftest import IN_CI, REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
K8S_VERSION = "1.32.0"
TOOLS = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS))
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return found


def test_containerfile_is_hadolint_clean() -> None:
    done = subprocess.run([tool("hadolint"), str(DEPLOY / "Containerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("target", ["base", "overlays/redis"])
def test_kustomize_renders_and_every_manifest_validates_strictly(tmp_path: Path, target: str) -> None:
    rendered = subprocess.run([tool("kubectl"), "kustomize", str(KUBERNETES / target)], capture_output=True,
                              text=True)
    assert rendered.returncode == 0, rendered.stderr
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    kinds = sorted(doc["kind"] for doc in documents)
    expected = ["ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    if target == "overlays/redis":
        expected = sorted([*expected, "Deployment", "Namespace", "Service"])
    assert kinds == expected
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered.stdout)
    validated = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(out)],
                               capture_output=True, text=True)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert validated.stdout.count("passed for resource") == len(documents), validated.stdout

    host = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "wasm-faas")
    container = host["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/actuator/health/liveness"
    assert container["readinessProbe"]["httpGet"]["path"] == "/actuator/health/readiness"
    config_maps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
    mounted = {v["configMap"]["name"] for v in host["spec"]["template"]["spec"]["volumes"] if "configMap" in v}
    assert mounted == set(config_maps)  # the hashed names kustomize generated
    for config_map in config_maps.values():
        if "host.toml" in config_map["data"]:
            validate_config(tomllib.loads(config_map["data"]["host.toml"]), config_map["metadata"]["name"])
    hpa = next(d for d in documents if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == host["metadata"]["name"]


def test_container_config_is_valid() -> None:
    validate_config(tomllib.loads((DEPLOY / "container" / "host.toml").read_text()), "deploy/container/host.toml")


async def test_the_base_function_deploys_and_answers(tmp_path: Path) -> None:
    config = validate_config({"server": {"cache_dir": str(tmp_path / "cache"), "watch": False},
                              "functions_dirs": [str(KUBERNETES / "base" / "functions")]})
    app = App(config)
    await app.start()
    try:
        response = await app.dispatcher.call(app.dispatcher.find("hello"),
                                             HttpRequest.build("GET", "/", [], authority="localhost"))
    finally:
        await app.stop()
    assert (response.status, response.body) == (200, b"hello from wasm-faas on kubernetes\n")

"""The deploy files load as YAML, and every Steno process reads its Redis URL from a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def _documents(path: Path) -> list[Any]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def _steno_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
        return []
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec["template"]["spec"]
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    return [c for c in containers if c.get("command", [""])[0] == "steno"]


def test_there_are_deploy_files() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"compose.yaml", "k8s/api.yaml", "k8s/worker-io.yaml", "k8s/worker-gpu.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_document_loads(path: Path) -> None:
    documents = _documents(path)
    assert documents and all(isinstance(doc, dict) for doc in documents)


def test_every_k8s_steno_container_reads_the_redis_url_from_a_secret() -> None:
    # Given every Steno container in the manifests (the example Secret aside)
    manifests = [p for p in YAML_FILES if p.parent.name == "k8s"]
    containers = [c for p in manifests for doc in _documents(p) for c in _steno_containers(doc)]
    commands = {" ".join(c["command"]) for c in containers}
    assert {"steno api", "steno beat", "steno worker io", "steno worker gpu"} <= commands

    # then each one's STENO_REDIS_URL comes from a Secret's key, never a literal
    for container in containers:
        env = {e["name"]: e for e in container.get("env", [])}
        url = env.get("STENO_REDIS_URL")
        assert url is not None, f"{container['name']} has no STENO_REDIS_URL"
        assert "value" not in url
        ref = url["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("steno-redis", "url"), container["name"]


def test_the_example_secret_holds_no_real_password() -> None:
    [secret] = _documents(DEPLOY / "k8s" / "examples" / "redis-secret.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "steno-redis"
    assert set(secret["stringData"]) == {"username", "password", "url"}
    assert secret["stringData"]["password"] == "CHANGE-ME"
    assert "CHANGE-ME@" in secret["stringData"]["url"]


def test_keda_reads_the_queues_with_the_same_credentials() -> None:
    manifests = [p for p in YAML_FILES if p.parent.name == "k8s"]
    docs = [doc for p in manifests for doc in _documents(p)]
    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    scalers = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scalers
    for scaler in scalers:
        for trigger in scaler["spec"]["triggers"]:
            ref = trigger["authenticationRef"]["name"]
            targets = auths[ref]["spec"]["secretTargetRef"]
            assert {(t["parameter"], t["name"]) for t in targets} >= {("password", "steno-redis")}


def test_compose_redis_wants_the_password_every_steno_service_presents() -> None:
    [compose] = _documents(DEPLOY / "compose.yaml")
    services = compose["services"]

    # Redis starts with --requirepass from REDIS_PASSWORD
    command = services["redis"]["command"]
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD")

    # and every Steno service's STENO_REDIS_URL carries that same interpolation
    steno = {n: s for n, s in services.items() if s.get("command", [""])[0] == "steno"}
    assert {"api", "worker-io", "worker-gpu", "beat"} <= set(steno)
    for name, service in steno.items():
        url = service["environment"]["STENO_REDIS_URL"]
        assert f":{password}@redis:" in url, name

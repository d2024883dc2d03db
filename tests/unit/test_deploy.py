"""The deploy files are valid and wired together.

Every YAML loads; the Kubernetes manifests match the Kubernetes API schema (kubernetes-validate)
and KEDA's objects are checked by structure; the compose file matches the compose-spec JSON
schema (as check-jsonschema vendors it); every PromQL expression of the dashboard, the alerts
and the KEDA triggers parses and reads only Steno's own series (or ``up``); every Steno process
reads its Redis URL from a secret.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
MONITORING = DEPLOY / "monitoring"
KUBERNETES_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests promise to apply on."""

CRD_KINDS = {"ScaledObject", "TriggerAuthentication"}
"""KEDA's kinds: kubernetes-validate knows only the built-in API, so these are checked by hand."""

STENO_SERIES = {
    "steno_jobs_submitted_total",
    "steno_jobs_finished_total",
    "steno_job_attempts_total",
    "steno_queue_depth_jobs",
    "steno_queue_depth_audio_seconds",
    "steno_sse_streams",
    *(
        f"{histogram}{suffix}"
        for histogram in (
            "steno_job_duration_seconds",
            "steno_stage_duration_seconds",
            "steno_transcribe_realtime_factor",
            # The HTTP series' names are assumed: the metrics change names them.
            "steno_http_request_duration_seconds",
        )
        for suffix in ("_bucket", "_sum", "_count")
    ),
    "steno_http_requests_total",
}
"""The series Steno exports (service metrics); ``up`` is Prometheus's own."""


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


# --- Kubernetes ---------------------------------------------------------------------------


def _k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in K8S_FILES for doc in _documents(path)]


def _workloads() -> list[dict[str, Any]]:
    return [d for d in _k8s_documents() if _steno_containers(d)]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]
    return spec["template"]["spec"]


def _built_in(doc: dict[str, Any]) -> bool:
    return doc["kind"] not in CRD_KINDS


@pytest.mark.parametrize(
    "doc",
    [d for d in _k8s_documents() if _built_in(d)],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_every_built_in_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    # strict: a misspelt or misplaced field fails too, not only a wrong type
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misplaced_field() -> None:
    # Given the API Deployment with its probe moved to the pod, where Kubernetes has no such field
    [api] = [d for d in _workloads() if d["metadata"]["name"] == "steno-api"]
    broken = json.loads(json.dumps(api))
    container = _pod_spec(broken)["containers"][0]
    _pod_spec(broken)["livenessProbe"] = container.pop("livenessProbe")

    # then validation refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_only_known_custom_resources() -> None:
    kinds = {d["kind"] for d in _k8s_documents() if not _built_in(d)}
    assert kinds <= CRD_KINDS
    assert all(d["apiVersion"] == "keda.sh/v1alpha1" for d in _k8s_documents() if not _built_in(d))


def test_every_steno_container_has_probes_and_resources() -> None:
    for workload in _workloads():
        for container in _steno_containers(workload):
            name = f"{workload['metadata']['name']}/{container['name']}"
            resources_ = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources_.get("requests", {})), name
            assert "memory" in resources_.get("limits", {}), name
            if workload["kind"] != "Job":
                assert "livenessProbe" in container, name


def test_the_api_is_probed_on_healthz_and_readyz() -> None:
    [api] = [d for d in _workloads() if d["metadata"]["name"] == "steno-api"]
    [container] = _pod_spec(api)["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("pool", ["io", "gpu"])
def test_each_worker_pings_its_own_celery_node(pool: str) -> None:
    # `steno worker <pool>` names its node <pool>@<hostname> (service/cli/processes.py)
    [worker] = [d for d in _workloads() if d["metadata"]["name"] == f"steno-worker-{pool}"]
    [container] = _pod_spec(worker)["containers"]
    for probe in ("startupProbe", "livenessProbe"):
        command = " ".join(container[probe]["exec"]["command"])
        assert "celery -A workers.app inspect ping" in command, probe
        assert f'--destination "{pool}@$HOSTNAME"' in command, probe


def test_the_io_worker_is_ready_by_arqs_health_check() -> None:
    [worker] = [d for d in _workloads() if d["metadata"]["name"] == "steno-worker-io"]
    [container] = _pod_spec(worker)["containers"]
    command = container["readinessProbe"]["exec"]["command"]
    assert command == ["python", "-m", "workers.arq", "workers.io.worker.WorkerSettings", "--check"]


def test_the_gpu_worker_requests_a_gpu() -> None:
    [worker] = [d for d in _workloads() if d["metadata"]["name"] == "steno-worker-gpu"]
    [container] = _pod_spec(worker)["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_a_job_migrates_the_schema_once() -> None:
    jobs = [d for d in _workloads() if d["kind"] == "Job"]
    commands = [c["command"] for job in jobs for c in _steno_containers(job)]
    assert commands == [["steno", "migrate"]]
    assert _pod_spec(jobs[0])["restartPolicy"] == "Never"
    # and no long-running pod migrates too (steno migrate takes no lock)
    for workload in _workloads():
        if workload["kind"] != "Job":
            assert ["steno", "migrate"] not in [c["command"] for c in _steno_containers(workload)]


def _series(expr: str) -> set[str]:
    """Every series an expression selects (Grafana's interval variables made concrete)."""
    concrete = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(concrete), visit)
    return names


def _assert_steno_only(expr: str, where: str) -> set[str]:
    names = _series(expr)
    assert names, f"{where}: {expr!r} selects no series"
    assert names <= STENO_SERIES | {"up"}, f"{where}: unknown series {names - STENO_SERIES}"
    return names


def test_keda_scales_the_pools_on_stenos_queue_depth() -> None:
    docs = _k8s_documents()
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    scalers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    expected = {
        "steno-worker-gpu": ("steno_queue_depth_audio_seconds", '{queue="gpu"}'),
        "steno-worker-io": ("steno_queue_depth_jobs", '{queue="io"}'),
    }
    assert set(scalers) == set(expected)
    for name, scaler in scalers.items():
        spec = scaler["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        assert float(metadata["threshold"]) > 0
        series, matcher = expected[name]
        assert _assert_steno_only(metadata["query"], name) == {series}
        assert matcher in metadata["query"].replace(" ", ""), name


def test_every_trigger_authentication_is_defined_and_used() -> None:
    docs = _k8s_documents()
    auths = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    refs = {
        t["authenticationRef"]["name"]
        for d in docs
        if d["kind"] == "ScaledObject"
        for t in d["spec"]["triggers"]
        if "authenticationRef" in t
    }
    assert refs == auths


# --- compose ------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    [compose] = _documents(DEPLOY / "compose.yaml")
    return dict(compose)


def _compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return dict(json.loads(vendor.joinpath("compose-spec.json").read_text()))


def test_compose_matches_the_compose_spec() -> None:
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(_compose())
    ]
    assert not errors


def test_the_compose_spec_check_catches_a_wrong_condition() -> None:
    compose = _compose()
    compose["services"]["api"]["depends_on"] = {"migrate": {"condition": "service_finished"}}
    schema = _compose_schema()
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(compose)


def test_compose_starts_in_order_with_health_checks() -> None:
    services = _compose()["services"]
    # Given the migrate one-shot after a healthy PostgreSQL
    assert services["migrate"]["command"] == ["steno", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    # then every long-running Steno process starts after it completed and after healthy stores
    for name in ("api", "worker-io", "worker-gpu", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name

    # and everything but the one-shot restarts and reports its health
    for name, service in services.items():
        if name == "migrate":
            assert service.get("restart", "no") == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        if name != "flower":
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name

    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "--check" in services["worker-io"]["healthcheck"]["test"]
    assert "inspect ping" in services["worker-gpu"]["healthcheck"]["test"][1]


def test_flower_is_an_optional_profile_on_the_broker() -> None:
    flower = _compose()["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    assert flower["command"][:4] == ["celery", "-A", "workers.app", "flower"]
    assert flower["build"]["target"] == "flower"
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    dockerfile = (DEPLOY / "Dockerfile.api").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, flags=re.MULTILINE)
    # flower is a stage of its own, and the default (last) stage is the API's
    assert "flower" in stages and stages[-1] == "api"


# --- monitoring ---------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return dict(json.loads((MONITORING / "grafana-dashboard.json").read_text()))


def test_every_dashboard_query_parses_and_reads_only_steno_series() -> None:
    panels = _dashboard()["panels"]
    assert panels
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= _assert_steno_only(target["expr"], panel["title"])
    # and every series Steno exports has a panel
    histograms = {s for s in STENO_SERIES if s.endswith(("_sum", "_count"))}
    assert STENO_SERIES - histograms <= used, STENO_SERIES - histograms - used


def test_the_dashboard_shows_the_quantiles_asked_for() -> None:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    for histogram in (
        "steno_job_duration_seconds",
        "steno_stage_duration_seconds",
        "steno_transcribe_realtime_factor",
    ):
        quantiles = {
            q
            for e in exprs
            if f"{histogram}_bucket" in e
            for q in re.findall(r"histogram_quantile\((0\.\d+)", e)
        }
        assert quantiles == {"0.5", "0.95"}, histogram


def test_a_query_reading_an_unknown_series_is_caught() -> None:
    with pytest.raises(AssertionError):
        _assert_steno_only("sum(rate(steno_jobs_submited_total[5m]))", "typo")
    with pytest.raises(ValueError):
        _series("sum(rate(steno_jobs_submitted_total[5m])")


def _alert_rules() -> dict[str, dict[str, Any]]:
    [rules] = _documents(MONITORING / "alerts.yaml")
    return {r["alert"]: r for group in rules["groups"] for r in group["rules"]}


def test_the_alert_rules_are_there_and_parse() -> None:
    rules = _alert_rules()
    assert set(rules) == {
        "StenoJobFailureRatioHigh",
        "StenoAudioBacklogHigh",
        "StenoNoGpuWorker",
        "StenoGpuQueueStalled",
    }
    for name, rule in rules.items():
        _assert_steno_only(rule["expr"], name)
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name

    failure = rules["StenoJobFailureRatioHigh"]["expr"]
    assert "[15m]" in failure and "> 0.05" in failure
    assert rules["StenoAudioBacklogHigh"]["for"] == "10m"
    assert _series(rules["StenoAudioBacklogHigh"]["expr"]) == {"steno_queue_depth_audio_seconds"}
    assert 'up{job="steno-worker-gpu"}' in rules["StenoNoGpuWorker"]["expr"]


def test_prometheus_scrapes_steno_with_a_token_from_a_file() -> None:
    [config] = _documents(MONITORING / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"steno-api", "steno-worker-gpu"} <= set(jobs)
    for name, job in jobs.items():
        auth = job["authorization"]
        # the bearer token comes from a mounted Secret, never written here
        assert auth["type"] == "Bearer" and "credentials" not in auth, name
        assert auth["credentials_file"].startswith("/etc/prometheus/secrets/"), name
    assert any(f.endswith("steno-alerts.yaml") for f in config["rule_files"])
    # and the GPU alert watches the job this config defines
    assert 'job="steno-worker-gpu"' in _alert_rules()["StenoNoGpuWorker"]["expr"]

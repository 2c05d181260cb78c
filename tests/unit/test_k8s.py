"""`coordinator cluster k8s render`, checked without a cluster.

- Schema: every rendered object is read into the official Kubernetes Python client's model of its kind
  (the API's OpenAPI schema: required fields, types) and written back; the round trip must give the
  object unchanged, so no field is unknown, misspelled or of the wrong type.
- Structure: GPU limits on the workers, the database URL and password only through Secret
  references, no trust authentication, probes on the long-running services.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator.cli import main
from coordinator.cluster.k8s import Values, load_values, manifests, render
from coordinator.errors import UserError

kubernetes = pytest.importorskip("kubernetes", reason="the kubernetes client (dev extra) is not installed")

MODEL = {  # (apiVersion, kind) -> the client's model class name
    ("v1", "Service"): "V1Service",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
}

VARIANTS = [
    Values(),
    Values(workers=16, gpus_per_worker=2, postgres_tls_secret="pg-tls", postgres_storage_class="fast-ssd"),
    Values(gpus_per_worker=0, postgres=False, dashboard=False, namespace="research"),
]


class Response:
    """What ApiClient.deserialize reads before client 35: a response whose body is JSON text."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj)


def round_trip(obj: dict[str, Any]) -> dict[str, Any]:
    """Read `obj` as the API server's response body of its kind, then write the model back."""
    client = kubernetes.client.ApiClient()
    model_name = MODEL[(obj["apiVersion"], obj["kind"])]
    if "response_text" in inspect.signature(client.deserialize).parameters:  # client >= 35
        model = client.deserialize(json.dumps(obj), model_name, "application/json")
    else:
        model = client.deserialize(Response(obj), model_name)
    return client.sanitize_for_serialization(model)


def rendered(values: Values) -> list[dict[str, Any]]:
    """The objects as `kubectl apply` reads them: parsed back from the rendered YAML text."""
    return [doc for doc in yaml.safe_load_all(render(values)) if doc is not None]


@pytest.mark.parametrize("values", VARIANTS, ids=["defaults", "gpus-tls", "cpu-external-db"])
def test_every_object_matches_the_kubernetes_schema(values: Values) -> None:
    objects = rendered(values)
    assert objects == manifests(values), "the YAML text says what the objects say"
    for obj in objects:
        assert (obj["apiVersion"], obj["kind"]) in MODEL, f"unexpected kind {obj['kind']}"
        assert round_trip(obj) == obj, f"{obj['kind']} {obj['metadata']['name']} does not survive the schema"


def test_schema_check_catches_a_misspelled_field() -> None:
    job = manifests(Values())[-1]
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {"limits": {"cpu": "1"}}  # not "resources"
    assert round_trip(job) != job
    with pytest.raises(ValueError):  # a required field missing
        round_trip({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_workers_get_gpu_limits_and_the_url_from_a_secret() -> None:
    values = Values(workers=8, gpus_per_worker=2)
    (job,) = by_kind(rendered(values), "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 8
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure", "exit 0 is done, a crash is restarted"
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert worker["args"][:2] == ["worker", "--studies"] and worker["args"][-2:] == ["--device", "cuda"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["HPO_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "scalesweep-db", "key": "url"}

    (cpu_job,) = by_kind(rendered(Values(gpus_per_worker=0)), "Job")
    cpu_worker = cpu_job["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu_worker["resources"]["limits"] and cpu_worker["args"][-1] == "cpu"


@pytest.mark.parametrize("values", VARIANTS, ids=["defaults", "gpus-tls", "cpu-external-db"])
def test_no_secret_in_plain_text_and_no_trust(values: Values) -> None:
    text = render(values)
    objects = rendered(values)
    assert not by_kind(objects, "Secret"), "Secrets are created by the user, never rendered"
    assert "trust" not in text.lower().replace("trusted", "")
    for obj in objects:
        pod = obj["spec"].get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("PASSWORD", "URL")):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], f"{env['name']} must come from a Secret"
                else:
                    assert "postgresql://" not in env.get("value", ""), env
            assert not any("postgresql://" in arg for arg in container.get("args", []))


def test_probes_and_auth_of_the_bundled_postgres() -> None:
    objects = rendered(Values(postgres_tls_secret="pg-tls"))
    (statefulset,) = by_kind(objects, "StatefulSet")
    (postgres,) = statefulset["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert postgres[probe]["exec"]["command"][0] == "pg_isready"
    env = {e["name"]: e for e in postgres["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "scalesweep-db", "key": "password"}
    assert env["POSTGRES_HOST_AUTH_METHOD"]["value"] == "scram-sha-256"
    assert "--auth-local=scram-sha-256" in env["POSTGRES_INITDB_ARGS"]["value"]
    assert "ssl=on" in postgres["args"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    (deployment,) = by_kind(objects, "Deployment")
    (dashboard,) = deployment["spec"]["template"]["spec"]["containers"]
    assert dashboard["readinessProbe"]["httpGet"]["port"] == "http" and "livenessProbe" in dashboard
    assert dashboard["args"][-1] == "$(HPO_DATABASE_URL)", "Kubernetes expands it from the Secret-backed env"
    services = {s["metadata"]["name"] for s in by_kind(objects, "Service")}
    assert services == {"scalesweep-postgres", "scalesweep-dashboard"}
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in by_kind(objects, "Service")), "nothing exposed outside"


def run_cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code


def test_render_command_with_values_file_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text("workers: 3\ngpus-per-worker: 4\nimage: reg.example/scalesweep:1\nworker_cpu: 8\n")
    assert run_cli("cluster", "k8s", "render", "--values", str(values_file), "--workers", "5", "--no-dashboard") == 0
    objects = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    (job,) = by_kind(objects, "Job")
    worker = job["spec"]["template"]["spec"]["containers"][0]
    assert job["spec"]["completions"] == 5, "a flag beats the file"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "4" and worker["image"] == "reg.example/scalesweep:1"
    assert worker["resources"]["requests"]["cpu"] == "8"
    assert not by_kind(objects, "Deployment")
    out = tmp_path / "k8s.yaml"
    assert run_cli("cluster", "k8s", "render", "--out", str(out)) == 0
    assert len([d for d in yaml.safe_load_all(out.read_text()) if d]) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wrokers: 3\n", "unknown value(s) wrokers"),
        ("workers: many\n", "value workers must be int"),
        ("namespace: Research_Lab\n", "is not a Kubernetes name"),
        ("worker_memory: lots\n", "is not a Kubernetes quantity"),
        ("- a\n- b\n", "must be a mapping"),
        ("workers: [\n", "is not valid YAML"),
    ],
)
def test_bad_values_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_values(values_file, {})

"""`coordinator cluster k8s render`: Kubernetes manifests for the worker fleet, printed for `kubectl apply`.

    kubectl create secret generic scalesweep-db --from-literal=password=... --from-literal=url=...
    coordinator cluster k8s render --workers 8 --image registry.example/scalesweep:1 | kubectl apply -f -

What it renders, from a few values (flags, or a YAML values file that flags override):
- workers: an indexed Job, one pod per worker, each limited to `nvidia.com/gpu` GPUs, the database
  URL from a Secret; a worker that exits 0 (every target met) is done, a crash is restarted;
- PostgreSQL for those without one: a StatefulSet with a volume claim, password auth with the password
  from the same Secret (never trust), optionally TLS from a `kubernetes.io/tls` Secret, and its Service;
- optuna-dashboard: a Deployment and a ClusterIP Service (reach it with `kubectl port-forward`).

No Secret object is rendered: secret values never pass through this command or its output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from coordinator.errors import UserError

APP = "scalesweep"
POSTGRES_USER = "scalesweep"
POSTGRES_DB = "scalesweep"
POSTGRES_PORT = 5432
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


@dataclass(frozen=True)
class Values:
    """Everything a render depends on; the YAML values file uses these names."""

    namespace: str = "scalesweep"
    image: str = "scalesweep:latest"
    image_pull_policy: str = "IfNotPresent"
    workers: int = 4
    gpus_per_worker: int = 1
    worker_cpu: str = "4"
    worker_memory: str = "16Gi"
    studies: str = "*"
    database_secret: str = "scalesweep-db"  # keys: `url` (workers, dashboard), `password` (bundled PostgreSQL)
    postgres: bool = True  # render the bundled PostgreSQL (false: `url` points at your own server)
    postgres_image: str = "postgres:16-bookworm"
    postgres_storage: str = "20Gi"
    postgres_storage_class: str | None = None
    postgres_max_connections: int = 300  # ~2 per worker, plus the dashboard and your own sessions
    postgres_tls_secret: str | None = None  # a kubernetes.io/tls Secret: the server then takes TLS
    dashboard: bool = True
    dashboard_port: int = 8080

    def check(self) -> None:
        for name in ("namespace", "database_secret", "postgres_tls_secret", "postgres_storage_class"):
            value = getattr(self, name)
            if value is not None and not DNS_NAME.match(value):
                raise UserError(f"{name} {value!r} is not a Kubernetes name (lower-case letters, digits and '-')")
        for name in ("worker_cpu", "worker_memory", "postgres_storage"):
            if not QUANTITY.match(getattr(self, name)):
                raise UserError(f"{name} {getattr(self, name)!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)")
        if self.workers < 1 or self.gpus_per_worker < 0:
            raise UserError(f"workers must be >= 1 and gpus_per_worker >= 0, got {self.workers} and {self.gpus_per_worker}")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise UserError(f"image_pull_policy must be Always, IfNotPresent or Never, got {self.image_pull_policy!r}")
        if not 1 <= self.dashboard_port <= 65535 or self.postgres_max_connections < 10:
            raise UserError("dashboard_port must be a port number and postgres_max_connections at least 10")


def load_values(path: Path | None, overrides: dict[str, Any]) -> Values:
    """Defaults, then the values file, then the flags that were given."""
    given: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise UserError(f"cannot read values file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise UserError(f"values file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"values file {path} must be a mapping of names to values")
        given.update({str(k).replace("-", "_"): v for k, v in (loaded or {}).items()})
    given.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(Values)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UserError(f"unknown value(s) {', '.join(unknown)}; known: {', '.join(known)}")
    defaults = Values()
    for name, value in given.items():
        expected = type(getattr(defaults, name)) if getattr(defaults, name) is not None else str
        if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            given[name] = value = str(value)  # `worker_cpu: 4` in YAML is a number
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise UserError(f"value {name} must be {expected.__name__}, got {value!r}")
    values = replace(defaults, **given)
    values.check()
    return values


# --------------------------------------------------------------------------------------------------
# The objects


def metadata(name: str, values: Values, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": values.namespace, "labels": labels(component)}


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def worker_job(values: Values) -> dict[str, Any]:
    """One pod per worker. Indexed, so each keeps its index through restarts and the Job is done when
    every worker has exited 0 (targets met); a crash (non-zero exit) restarts the container."""
    resources: dict[str, Any] = {
        "requests": {"cpu": values.worker_cpu, "memory": values.worker_memory},
        "limits": {"memory": values.worker_memory},
    }
    if values.gpus_per_worker:
        # Extended resources are set as limits (requests default to them): the device plugin gives
        # each pod its own GPUs, which the worker then leases in PostgreSQL as on any host.
        resources["limits"]["nvidia.com/gpu"] = str(values.gpus_per_worker)  # a quantity: a string
    container = {
        "name": "worker",
        "image": values.image,
        "imagePullPolicy": values.image_pull_policy,
        "args": ["worker", "--studies", values.studies, "--device", "cuda" if values.gpus_per_worker else "cpu"],
        "env": [
            secret_env("HPO_DATABASE_URL", values.database_secret, "url"),
            {"name": "SCALESWEEP_GPU_SHARE", "value": "1"},
        ],
        "resources": resources,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(f"{APP}-workers", values, "worker"),
        "spec": {
            "completionMode": "Indexed",
            "completions": values.workers,
            "parallelism": values.workers,
            "backoffLimit": 6 * values.workers,
            "template": {
                "metadata": {"labels": labels("worker")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    # SIGTERM (eviction, `kubectl delete`): the trial is failed, re-enqueued, exit 0.
                    "terminationGracePeriodSeconds": 120,
                    "containers": [container],
                },
            },
        },
    }


def postgres_objects(values: Values) -> list[dict[str, Any]]:
    name = f"{APP}-postgres"
    args = ["-c", f"max_connections={values.postgres_max_connections}"]
    volume_mounts = [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]
    volumes = []
    if values.postgres_tls_secret:
        args += ["-c", "ssl=on", "-c", "ssl_cert_file=/etc/postgresql/tls/tls.crt", "-c", "ssl_key_file=/etc/postgresql/tls/tls.key"]
        volume_mounts.append({"name": "tls", "mountPath": "/etc/postgresql/tls", "readOnly": True})
        # Root-owned, group-readable by the postgres group (fsGroup): PostgreSQL accepts such a key.
        volumes.append({"name": "tls", "secret": {"secretName": values.postgres_tls_secret, "defaultMode": 0o640}})
    ready = {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", POSTGRES_USER, "-d", POSTGRES_DB]}}
    claim: dict[str, Any] = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": values.postgres_storage}}},
    }
    if values.postgres_storage_class:
        claim["spec"]["storageClassName"] = values.postgres_storage_class
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(name, values, "database"),
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels("database")},
            "template": {
                "metadata": {"labels": labels("database")},
                "spec": {
                    "securityContext": {"fsGroup": 999},  # the image's postgres group
                    "containers": [
                        {
                            "name": "postgres",
                            "image": values.postgres_image,
                            "args": args,
                            "env": [
                                {"name": "POSTGRES_USER", "value": POSTGRES_USER},
                                {"name": "POSTGRES_DB", "value": POSTGRES_DB},
                                secret_env("POSTGRES_PASSWORD", values.database_secret, "password"),
                                # Password auth (scram-sha-256) for every connection, the pod's own socket included.
                                {"name": "POSTGRES_HOST_AUTH_METHOD", "value": "scram-sha-256"},
                                {"name": "POSTGRES_INITDB_ARGS", "value": "--auth-local=scram-sha-256 --auth-host=scram-sha-256"},
                                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
                            ],
                            "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
                            "readinessProbe": {**ready, "periodSeconds": 5, "failureThreshold": 6},
                            "livenessProbe": {**ready, "initialDelaySeconds": 30, "periodSeconds": 20, "failureThreshold": 6},
                            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
                            "volumeMounts": volume_mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, values, "database"),
        "spec": {
            "selector": labels("database"),
            "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres"}],
        },
    }
    return [service, statefulset]


def dashboard_objects(values: Values) -> list[dict[str, Any]]:
    name = f"{APP}-dashboard"
    http = {"httpGet": {"path": "/", "port": "http"}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, values, "dashboard"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels("dashboard")},
            "template": {
                "metadata": {"labels": labels("dashboard")},
                "spec": {
                    "containers": [
                        {
                            "name": "dashboard",
                            "image": values.image,
                            "imagePullPolicy": values.image_pull_policy,
                            # $(VAR) is expanded by Kubernetes from the container's env: no shell, no copy of the URL.
                            "args": ["optuna-dashboard", "--host", "0.0.0.0", "--port", str(values.dashboard_port), "$(HPO_DATABASE_URL)"],
                            "env": [secret_env("HPO_DATABASE_URL", values.database_secret, "url")],
                            "ports": [{"name": "http", "containerPort": values.dashboard_port}],
                            "readinessProbe": {**http, "periodSeconds": 10},
                            "livenessProbe": {**http, "initialDelaySeconds": 30, "periodSeconds": 30},
                            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, values, "dashboard"),
        "spec": {"selector": labels("dashboard"), "ports": [{"name": "http", "port": values.dashboard_port, "targetPort": "http"}]},
    }
    return [service, deployment]


def manifests(values: Values) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    if values.postgres:
        objects += postgres_objects(values)
    if values.dashboard:
        objects += dashboard_objects(values)
    objects.append(worker_job(values))
    return objects


def header(values: Values) -> str:
    url = (
        f"postgresql://{POSTGRES_USER}:PASSWORD@{APP}-postgres:{POSTGRES_PORT}/{POSTGRES_DB}"
        + ("?sslmode=require" if values.postgres_tls_secret else "")
        if values.postgres
        else "postgresql://USER:PASSWORD@HOST:5432/DB?sslmode=verify-full"
    )
    return (
        "# scalesweep on Kubernetes, rendered by `coordinator cluster k8s render`.\n"
        f"# Before `kubectl apply`, create the Secret it reads (values never appear here), e.g.:\n"
        f"#   kubectl -n {values.namespace} create secret generic {values.database_secret} \\\n"
        '#     --from-literal=password="$PGPASS" \\\n'
        f"#     --from-literal=url=\"{url.replace('PASSWORD', '$PGPASS')}\"\n"
    )


def render(values: Values) -> str:
    docs = [yaml.safe_dump(obj, sort_keys=False, default_flow_style=False) for obj in manifests(values)]
    return header(values) + "---\n" + "---\n".join(docs)


# --------------------------------------------------------------------------------------------------
# CLI


k8s_app = typer.Typer(help="Kubernetes manifests for workers, PostgreSQL and the dashboard.", no_args_is_help=True)


@k8s_app.command("render")
def render_command(
    values_file: Annotated[Optional[Path], typer.Option("--values", "-f", help="YAML file of values (names as in `Values`).")] = None,
    namespace: Annotated[Optional[str], typer.Option("--namespace", help="Namespace of every object.")] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="The scalesweep image (workers and dashboard).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-n", help="Worker pods.")] = None,
    gpus_per_worker: Annotated[Optional[int], typer.Option("--gpus-per-worker", help="nvidia.com/gpu limit per worker (0: CPU).")] = None,
    studies: Annotated[Optional[str], typer.Option("--studies", help="Only studies whose name matches this glob.")] = None,
    database_secret: Annotated[Optional[str], typer.Option("--database-secret", help="Secret with keys url and password.")] = None,
    postgres: Annotated[Optional[bool], typer.Option("--postgres/--no-postgres", help="Render the bundled PostgreSQL StatefulSet.")] = None,
    postgres_tls_secret: Annotated[Optional[str], typer.Option("--postgres-tls-secret", help="kubernetes.io/tls Secret: the bundled PostgreSQL takes TLS.")] = None,
    dashboard: Annotated[Optional[bool], typer.Option("--dashboard/--no-dashboard", help="Render optuna-dashboard.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Print the manifests (pipe to `kubectl apply -f -`)."""
    values = load_values(
        values_file,
        {
            "namespace": namespace,
            "image": image,
            "workers": workers,
            "gpus_per_worker": gpus_per_worker,
            "studies": studies,
            "database_secret": database_secret,
            "postgres": postgres,
            "postgres_tls_secret": postgres_tls_secret,
            "dashboard": dashboard,
        },
    )
    text = render(values)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    typer.echo(f"wrote {out}: {len(manifests(values))} objects in namespace {values.namespace}")

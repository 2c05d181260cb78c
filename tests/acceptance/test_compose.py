"""The container setup, checked without a Docker engine.

- docker-compose.yml and the e2e override follow the rules users depend on (GPU reservation on a
  scalable worker, healthy db first, 127.0.0.1-only ports, secrets from .env), read as YAML and,
  where Compose v2 is installed, as `docker compose config` resolves them.
- `coordinator cluster ...` builds the right docker compose command lines: a stand-in `docker`
  on PATH records them (python-on-whales runs it exactly as it would run the real one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from coordinator.cli import main
from tests.system_binaries import requires

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
E2E_OVERRIDE = REPO / "docker" / "compose.e2e.yml"
E2E_ENV = REPO / "docker" / "e2e.env"
ENV_EXAMPLE = REPO / ".env.example"


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's `!reset` tag (an override that empties a key)."""


RESET = "!reset"
ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


ARTIFACT_SETTINGS = {"SCALESWEEP_ARTIFACTS", "SCALESWEEP_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def env_keys(path: Path) -> set[str]:
    return {line.split("=", 1)[0] for line in path.read_text().splitlines() if re.match(r"^[A-Z0-9_]+=", line)}


def test_compose_file_rules() -> None:
    services = load(COMPOSE_FILE)["services"]
    assert set(services) == {"db", "worker", "dashboard", "coordinator", "pgbouncer", "minio", "minio-bucket"}

    db = services["db"]
    assert db["healthcheck"]["test"][0] == "CMD-SHELL" and "pg_isready" in db["healthcheck"]["test"][1]
    assert any(v.startswith("pgdata:") for v in db["volumes"]), "the database lives on a named volume"
    assert "pgdata" in load(COMPOSE_FILE)["volumes"]

    worker = services["worker"]
    assert "container_name" not in worker, "a container_name would make --scale impossible"
    assert "ports" not in worker, "published ports would make --scale collide"
    assert worker["restart"] == "on-failure", "exit 0 (targets met) must stay down, crashes restart"
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    (gpu,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert set(worker["environment"]) == {"SCALESWEEP_DATABASE_URL", "SCALESWEEP_GPU_SHARE", "NVIDIA_DRIVER_CAPABILITIES", *ARTIFACT_SETTINGS}
    assert "utility" in worker["environment"]["NVIDIA_DRIVER_CAPABILITIES"], "the GPU lease lists GPUs with nvidia-smi"

    assert services["dashboard"]["command"][-1].startswith("exec optuna-dashboard")
    assert services["coordinator"]["profiles"], "run-once: `up` must not start the coordinator"

    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


def test_checkpoint_store_services() -> None:
    """Checkpoints: one `artifacts` volume for the services of one host, or MinIO (`--profile s3`) with
    its credentials from .env; every service that trains, predicts or shows them gets the settings."""
    compose = load(COMPOSE_FILE)
    services = compose["services"]
    assert "artifacts" in compose["volumes"] and "miniodata" in compose["volumes"]
    for name in ("worker", "coordinator", "dashboard"):
        assert "artifacts:/artifacts" in services[name]["volumes"], name
        assert ARTIFACT_SETTINGS <= set(services[name]["environment"]), name
    assert "--artifact-dir /artifacts" in services["dashboard"]["command"][-1]
    minio, bucket = services["minio"], services["minio-bucket"]
    assert minio["profiles"] == bucket["profiles"] == ["s3"], "started on request only"
    assert minio["environment"]["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD"), "password from .env only"
    assert any(v.startswith("miniodata:") for v in minio["volumes"])
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"


def test_pgbouncer_service_rules() -> None:
    services = load(COMPOSE_FILE)["services"]
    bouncer = services["pgbouncer"]
    assert bouncer["profiles"] == ["pooler"], "started on request, like any pooler"
    assert bouncer["depends_on"]["db"]["condition"] == "service_healthy"
    assert bouncer["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?"), "password from .env only"
    entrypoint = (REPO / "docker" / "pgbouncer" / "entrypoint.sh").read_text()
    assert "pool_mode = transaction" in entrypoint and "auth_type = scram-sha-256" in entrypoint
    assert "trust" not in entrypoint
    assert "${WORKER_DB_HOST:-db}:${WORKER_DB_PORT:-5432}" in COMPOSE_FILE.read_text(), "workers may be routed through it"


def test_secrets_come_from_env_file() -> None:
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD"} <= required, "no default password in the compose file"
    assert required <= env_keys(ENV_EXAMPLE), ".env.example documents every required variable"
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert used - env_keys(ENV_EXAMPLE) <= {"DB_HOST", "DB_PORT", "DASHBOARD_LISTEN"}, "undocumented variables"


def test_e2e_override_keeps_everything_on_localhost() -> None:
    services = load(E2E_OVERRIDE)["services"]
    assert set(services) == set(load(COMPOSE_FILE)["services"])
    for name, service in services.items():
        assert service["network_mode"] == "host", name
    assert services["db"]["ports"] == services["dashboard"]["ports"] == RESET
    assert services["worker"]["deploy"] == RESET, "no GPU reservation where there is no GPU"
    assert "listen_addresses=127.0.0.1" in services["db"]["command"]
    settings = dict(line.split("=", 1) for line in E2E_ENV.read_text().splitlines() if re.match(r"^[A-Z0-9_]+=", line))
    assert settings["DB_HOST"] == "127.0.0.1" and settings["DASHBOARD_LISTEN"] == "127.0.0.1"
    # The workers' own URL (WORKER_DB_*, for routing them through pgbouncer) must point there too.
    assert (settings["WORKER_DB_HOST"], settings["WORKER_DB_PORT"]) == (settings["DB_HOST"], settings["DB_PORT"])
    assert settings["DB_PORT"] != "5432" and settings["DASHBOARD_PORT"] not in ("8080", "80")


def compose_config(*args: str) -> dict:
    out = subprocess.run(
        ["docker", "compose", *args, "config", "--format", "json"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(out.stdout)


needs_compose = requires("docker", "docker-compose")


@needs_compose
def test_docker_compose_config_resolves() -> None:
    config = compose_config("--env-file", str(ENV_EXAMPLE), "--profile", "tools")
    services = config["services"]
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["worker"]["environment"]["SCALESWEEP_DATABASE_URL"].startswith("postgresql+psycopg://scalesweep:")
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published)


@needs_compose
def test_docker_compose_config_with_e2e_override() -> None:
    config = compose_config(
        "-f", str(COMPOSE_FILE), "-f", str(E2E_OVERRIDE), "--env-file", str(E2E_ENV), "--profile", "tools"
    )
    services = config["services"]
    assert set(services) == {"db", "worker", "dashboard", "coordinator"}, "the pooler is not started without its profile"
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert not service.get("ports"), name
    assert "deploy" not in services["worker"] or not services["worker"]["deploy"].get("resources")
    assert "@127.0.0.1:55432/" in services["worker"]["environment"]["SCALESWEEP_DATABASE_URL"]
    assert config.get("networks", {}) == {}, "no bridge network: the engine runs with --bridge=none"


# --- coordinator cluster: the command lines it hands to docker ------------------------------------

FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_DOCKER_LOG"
case "$*" in
  *" version") [ -n "$FAKE_NO_COMPOSE" ] && { echo "docker: unknown command: docker compose" >&2; exit 1; }
               echo "Docker Compose version v2.26.1" ;;
  *" ps --all --format json") while IFS= read -r line; do printf '%s\\n' "$line"; done < "$FAKE_PS_JSON" ;;
esac
exit 0
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` that records its arguments, alone on PATH; returns the log file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_PS_JSON", str(tmp_path / "ps.json"))
    (tmp_path / "ps.json").write_text("")
    return log


def run_cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code


PROJECT = ("cluster", "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "-p", "t")
COMPOSE = f"compose --file {COMPOSE_FILE} --env-file {ENV_EXAMPLE} --project-name t"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("up", "--workers", "4"), "up --detach --scale worker=4 db dashboard worker"),
        (("up", "--workers", "0", "--build"), "up --build --detach --scale worker=0 db dashboard worker"),
        (("scale", "7"), "up --detach --scale worker=7 --no-recreate worker"),
        (("down",), "down --remove-orphans"),
        (("down", "--volumes"), "down --remove-orphans --volumes"),
        (("logs", "worker", "--tail", "5"), "logs --no-color --tail 5 worker"),
    ],
)
def test_cluster_commands(fake_docker: Path, args: tuple[str, ...], expected: str) -> None:
    assert run_cli(*PROJECT, *args) == 0
    calls = fake_docker.read_text().splitlines()
    assert calls == [f"{COMPOSE} version", f"{COMPOSE} {expected}"]


def test_cluster_without_options_leaves_discovery_to_compose(fake_docker: Path) -> None:
    assert run_cli("cluster", "scale", "2") == 0
    assert fake_docker.read_text().splitlines()[-1] == "compose up --detach --scale worker=2 --no-recreate worker"


def test_cluster_status(fake_docker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"Name": "t-db-1", "Service": "db", "State": "running", "Health": "healthy", "ExitCode": 0},
        {"Name": "t-worker-1", "Service": "worker", "State": "running", "Health": "", "ExitCode": 0},
        {"Name": "t-worker-2", "Service": "worker", "State": "exited", "Health": "", "ExitCode": 137},
        {"Name": "t-worker-3", "Service": "worker", "State": "exited", "Health": "", "ExitCode": 0},
    ]
    Path(os.environ["FAKE_PS_JSON"]).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert run_cli(*PROJECT, "status") == 0
    out = capsys.readouterr().out.splitlines()
    assert fake_docker.read_text().splitlines()[-1] == f"{COMPOSE} ps --all --format json"
    assert out[0].split() == ["t-db-1", "db", "running", "(healthy)"]
    assert out[2].split() == ["t-worker-2", "worker", "exited", "exit", "137"]
    assert out[-1] == "db running: 1  worker exited: 2  worker running: 1"


def test_cluster_needs_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert run_cli("cluster", "status") == 2
    assert capsys.readouterr().err.startswith("error: Docker is not installed")


def test_cluster_needs_compose_v2(
    fake_docker: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_NO_COMPOSE", "1")
    assert run_cli(*PROJECT, "up", "--workers", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Docker Compose v2 is not installed") and err.count("\n") == 1
    assert len(fake_docker.read_text().splitlines()) == 1, "nothing beyond the version check ran"


def test_cluster_missing_compose_file(fake_docker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("cluster", "-f", "nope.yml", "status") == 2
    assert capsys.readouterr().err == "error: no such file: nope.yml\n"

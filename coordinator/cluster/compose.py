"""`coordinator cluster`: the docker compose stack (db, workers, dashboard) driven through python-on-whales.

    coordinator cluster up --workers 4      # db + dashboard + 4 workers, detached
    coordinator cluster scale 8             # more (or fewer) workers, the rest untouched
    coordinator cluster status              # one line per container
    coordinator cluster logs worker --tail 50
    coordinator cluster down [--volumes]

Group options pick the compose project like `docker compose` does: `-f FILE` (repeatable),
`--env-file`, `--project-name`; without them compose finds ./docker-compose.yml and its .env.
Docker missing, Compose v2 missing or an engine that does not answer are one-line user errors.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from coordinator.errors import UserError, require_extra

if TYPE_CHECKING:
    from python_on_whales import DockerClient

WORKER_SERVICE = "worker"
# `up` starts these; the coordinator service is run-once (`docker compose run --rm coordinator ...`).
STACK_SERVICES = ["db", "dashboard", WORKER_SERVICE]

cluster_app = typer.Typer(
    help="The docker compose stack: PostgreSQL, scalable workers, the Optuna dashboard.",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class ComposeProject:
    """Which compose project to talk to; empty fields leave the choice to `docker compose`."""

    files: list[Path] = field(default_factory=list)
    env_file: Path | None = None
    project_name: str | None = None


def docker_client(project: ComposeProject) -> DockerClient:
    """A python-on-whales client for the project, after checking Docker and Compose v2 are installed."""
    if shutil.which("docker") is None:
        raise UserError("Docker is not installed (no `docker` on PATH): see https://docs.docker.com/engine/install/")
    require_extra("python_on_whales", "cluster", "`coordinator cluster`")
    from python_on_whales import DockerClient
    from python_on_whales.exceptions import DockerException

    for path in [*project.files, *([project.env_file] if project.env_file else [])]:
        if not path.is_file():
            raise UserError(f"no such file: {path}")
    client = DockerClient(
        compose_files=list(project.files),
        compose_env_files=[project.env_file] if project.env_file else [],
        compose_project_name=project.project_name,
    )
    try:
        client.compose.version()
    except DockerException:
        raise UserError(
            "Docker Compose v2 is not installed (`docker compose version` failed): "
            "install the docker-compose-plugin package, see https://docs.docker.com/compose/install/"
        ) from None
    return client


@contextmanager
def compose_errors(action: str) -> Iterator[None]:
    """Turn a failed docker command into one line: its last stderr line, else its exit code."""
    from python_on_whales.exceptions import DockerException

    try:
        yield
    except DockerException as exc:
        lines = [line.strip() for line in (exc.stderr or "").splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit code {exc.return_code}; see the messages above"
        raise UserError(f"docker compose {action} failed: {detail}") from None


def project_of(ctx: typer.Context) -> ComposeProject:
    return ctx.find_object(ComposeProject) or ComposeProject()


@cluster_app.callback()
def cluster(
    ctx: typer.Context,
    file: Annotated[
        Optional[list[Path]], typer.Option("--file", "-f", help="Compose file (repeat to add overrides).")
    ] = None,
    env_file: Annotated[Optional[Path], typer.Option("--env-file", help="Variables file (default: .env).")] = None,
    project_name: Annotated[Optional[str], typer.Option("--project-name", "-p", help="Compose project name.")] = None,
) -> None:
    ctx.obj = ComposeProject(files=list(file or []), env_file=env_file, project_name=project_name)


@cluster_app.command("up")
def up(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option("--workers", "-n", min=0, help="Number of worker containers.")] = 1,
    build: Annotated[bool, typer.Option("--build", help="Build the image first.")] = False,
) -> None:
    """Start db, dashboard and N workers in the background (0 workers: just the database and dashboard)."""
    client = docker_client(project_of(ctx))
    with compose_errors("up"):
        client.compose.up(STACK_SERVICES, detach=True, build=build, scales={WORKER_SERVICE: workers})
    typer.echo(f"cluster up: {workers} worker(s); `coordinator cluster status` to watch")


@cluster_app.command("scale")
def scale(
    ctx: typer.Context,
    workers: Annotated[int, typer.Argument(min=0, help="Number of worker containers wanted.")],
) -> None:
    """Add or remove worker containers; running workers and the database are left as they are."""
    client = docker_client(project_of(ctx))
    with compose_errors("scale"):
        client.compose.up([WORKER_SERVICE], detach=True, recreate=False, scales={WORKER_SERVICE: workers})
    typer.echo(f"workers scaled to {workers}")


@cluster_app.command("down")
def down(
    ctx: typer.Context,
    volumes: Annotated[bool, typer.Option("--volumes", help="Also delete the database volume (all results!).")] = False,
) -> None:
    """Stop and remove the containers (the database volume stays unless --volumes)."""
    client = docker_client(project_of(ctx))
    with compose_errors("down"):
        client.compose.down(remove_orphans=True, volumes=volumes)


@cluster_app.command("logs")
def logs(
    ctx: typer.Context,
    services: Annotated[Optional[list[str]], typer.Argument(help="Services (default: all).")] = None,
    tail: Annotated[Optional[int], typer.Option("--tail", help="Last N lines per container.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep streaming.")] = False,
) -> None:
    """Print the containers' logs."""
    client = docker_client(project_of(ctx))
    with compose_errors("logs"):
        stream = client.compose.logs(
            services or [], tail=None if tail is None else str(tail), follow=follow, stream=True
        )
        for _source, line in stream:
            typer.echo(line.decode(errors="replace"), nl=False)


@cluster_app.command("status")
def status(ctx: typer.Context) -> None:
    """One line per container (service, state, health, exit code), then a count per service and state."""
    containers = list_containers(docker_client(project_of(ctx)))
    if not containers:
        typer.echo("no containers: start the stack with `coordinator cluster up --workers N`")
        return
    width = max(len(c["Name"]) for c in containers)
    for c in containers:
        health = f" ({c['Health']})" if c.get("Health") else ""
        exit_code = f" exit {c['ExitCode']}" if c.get("State") == "exited" else ""
        typer.echo(f"{c['Name']:<{width}}  {c['Service']:<10} {c['State']}{health}{exit_code}")
    counts = Counter((c["Service"], c["State"]) for c in containers)
    typer.echo("  ".join(f"{service} {state}: {n}" for (service, state), n in sorted(counts.items())))


def list_containers(client: DockerClient) -> list[dict]:
    """`docker compose ps --all --format json`, one dict per container, whichever JSON layout compose uses."""
    from python_on_whales.utils import run

    with compose_errors("ps"):
        out = run(client.compose.docker_compose_cmd + ["ps", "--all", "--format", "json"])
    out = out.strip()
    if not out:
        return []
    if out.startswith("["):  # compose < 2.21: one array
        return json.loads(out)
    return [json.loads(line) for line in out.splitlines() if line.strip()]  # one object per line


# Engines beyond one host: Slurm job arrays and Kubernetes manifests (their own modules).
from coordinator.cluster.slurm import slurm_command  # noqa: E402

cluster_app.command("slurm")(slurm_command)

from coordinator.cluster.k8s import k8s_app  # noqa: E402

cluster_app.add_typer(k8s_app, name="k8s")

"""Checkpoints kept outside the database, through Optuna's artifact API (`optuna.artifacts`).

Where they go is one setting, SCALESWEEP_ARTIFACTS:
- unset: a file store under $SCALESWEEP_HOME/artifacts (default .scalesweep/artifacts), the
  embedded default;
- `file:///absolute/path` (or a plain path): a file store, e.g. a volume that every compose service
  mounts;
- `s3://bucket[/prefix]`: any S3-compatible server (AWS S3, MinIO). Credentials come from boto3's
  usual chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, ...); a server other
  than AWS is named by SCALESWEEP_S3_ENDPOINT_URL (e.g. http://minio:9000).

A checkpoint is content addressed: the sha256 of its bytes is the key of the `checkpoints` table,
beside the artifact id Optuna gave it and the store it went to. Storing a file whose sha256 is
already recorded writes nothing and returns the recorded checkpoint, so a re-run never writes a
second copy. Reading a checkpoint back checks its bytes against the recorded sha256.

Optuna's artifact functions and the file and Boto3 stores are stable API in optuna 5 (they were
experimental in 3.x); tests/unit/test_artifacts.py fails if that changes. Optuna names its objects
by a fresh uuid, so a prefix inside a bucket is added here by `PrefixedStore`, a store in Optuna's
own `ArtifactStore` shape that hands every call on with the prefix.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import optuna
import sqlalchemy as sa
from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.dialects.postgresql import insert

from coordinator.errors import UserError, first_line
from coordinator.store.embedded import home_dir
from coordinator.store.tables import checkpoints

ENV_ARTIFACTS = "SCALESWEEP_ARTIFACTS"
ENV_S3_ENDPOINT = "SCALESWEEP_S3_ENDPOINT_URL"
S3_CONNECT_TIMEOUT_S = 5  # an unreachable server is reported within seconds, not after boto3's minute
S3_ATTEMPTS = 3
CHUNK = 1 << 20


class ArtifactError(UserError):
    """The artifact store cannot be reached, or an artifact is missing or corrupt."""


@dataclass(frozen=True)
class Checkpoint:
    """One stored checkpoint, as recorded in the `checkpoints` table."""

    sha256: str
    artifact_id: str
    store: str  # where it was written: file:///... or s3://bucket/prefix (never credentials)
    size_bytes: int
    n_params: int
    seen_through: date  # the last day whose data shaped the weights (training or early-stopping labels)
    created_at: datetime | None = None


class PrefixedStore:
    """An Optuna artifact store whose objects live under `prefix` in another store."""

    def __init__(self, backend: Any, prefix: str) -> None:
        self.backend = backend
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.backend.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.backend.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.backend.remove(self.prefix + artifact_id)


@dataclass(frozen=True)
class ArtifactStore:
    """An opened, reachable store: its URL (for records and messages) and Optuna's store object."""

    url: str
    backend: Any


def store_url(raw: str | None = None) -> str:
    """The store's URL: `raw`, else $SCALESWEEP_ARTIFACTS, else the file store under $SCALESWEEP_HOME."""
    raw = raw or os.environ.get(ENV_ARTIFACTS) or str(home_dir() / "artifacts")
    if raw.startswith("s3://"):
        parts = urlsplit(raw)
        if not parts.netloc:
            raise ArtifactError(f"bad artifact store {raw!r}: expected s3://bucket[/prefix]")
        prefix = parts.path.strip("/")
        return f"s3://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    if raw.startswith("file://"):
        raw = urlsplit(raw).path
    elif "://" in raw:
        raise ArtifactError(f"bad artifact store {raw!r}: use file:///path, a plain path or s3://bucket[/prefix] (${ENV_ARTIFACTS})")
    return f"file://{Path(raw).absolute()}"


def open_store(raw: str | None = None) -> ArtifactStore:
    """The store named by `raw` (see `store_url`), checked to be reachable; one line when it is not."""
    url = store_url(raw)
    if url.startswith("s3://"):
        return ArtifactStore(url, open_s3(url))
    path = Path(urlsplit(url).path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"artifact store {url} unreachable: {exc.strerror or first_line(exc)}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ArtifactError(f"artifact store {url} unreachable: {path} is not readable and writable by this user")
    return ArtifactStore(url, FileSystemArtifactStore(path))


def open_s3(url: str) -> PrefixedStore:
    """A Boto3 store on the bucket, with short timeouts, after checking that the bucket answers."""
    try:
        import boto3
        from botocore.config import Config
    except ModuleNotFoundError:
        raise ArtifactError(f"the S3 artifact store ({url}) needs the 's3' extra: pip install 'scalesweep[s3]'") from None
    parts = urlsplit(url)
    endpoint = os.environ.get(ENV_S3_ENDPOINT) or None
    config = Config(connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=60, retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"})
    client = boto3.client("s3", endpoint_url=endpoint, config=config)
    where = f"{url}" + (f" at {endpoint}" if endpoint else "")
    try:
        client.head_bucket(Bucket=parts.netloc)
    except Exception as exc:  # botocore's connection, credential and client errors: all mean "cannot use it"
        raise ArtifactError(f"artifact store {where} unreachable: {first_line(exc)}") from None
    return PrefixedStore(Boto3ArtifactStore(parts.netloc, client=client), parts.path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def from_s3_client(exc: Exception) -> bool:
    """An error of the S3 client (connection, credentials, access denied...): boto3 is an optional
    extra, so its exception classes are recognised by their package instead of being imported."""
    return type(exc).__module__.split(".")[0] in ("botocore", "boto3", "s3transfer")


def recorded(engine: sa.Engine, sha256: str) -> Checkpoint | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(checkpoints).where(checkpoints.c.sha256 == sha256)).mappings().first()
    return None if row is None else Checkpoint(**row)


def put_checkpoint(
    engine: sa.Engine,
    store: ArtifactStore,
    path: Path,
    *,
    n_params: int,
    seen_through: str,
    attach_to: optuna.Study | optuna.Trial | optuna.trial.FrozenTrial,
    storage: Any = None,
) -> Checkpoint:
    """Store the file at `path` unless its content is recorded already; returns its record.

    `attach_to` is the Optuna study or trial the artifact is listed under (optuna-dashboard shows
    it there); `storage` is needed for a FrozenTrial only.
    """
    sha256 = file_sha256(path)
    known = recorded(engine, sha256)
    if known is not None:
        return known
    try:
        artifact_id = upload_artifact(artifact_store=store.backend, file_path=str(path), study_or_trial=attach_to, storage=storage)
    except OSError as exc:
        raise ArtifactError(f"cannot write to artifact store {store.url}: {exc.strerror or first_line(exc)}") from None
    except Exception as exc:
        if not from_s3_client(exc):
            raise
        raise ArtifactError(f"cannot write to artifact store {store.url}: {first_line(exc)}") from None
    row = {"sha256": sha256, "artifact_id": artifact_id, "store": store.url, "size_bytes": path.stat().st_size, "n_params": n_params,
           "seen_through": date.fromisoformat(seen_through)}
    with engine.begin() as conn:
        # Two attempts racing with identical bytes: the first record wins; the loser's copy is unreferenced.
        conn.execute(insert(checkpoints).values(**row).on_conflict_do_nothing(index_elements=["sha256"]))
    found = recorded(engine, sha256)
    assert found is not None
    return found


def reading_store(checkpoint: Checkpoint) -> ArtifactStore:
    """Where to read a checkpoint: $SCALESWEEP_ARTIFACTS when set (the same store seen from here), else where it was written."""
    return open_store(os.environ.get(ENV_ARTIFACTS) or checkpoint.store)


def fetch_checkpoint(checkpoint: Checkpoint, directory: Path, store: ArtifactStore | None = None) -> Path:
    """Download a checkpoint into `directory` and check its sha256; one line when missing or corrupt."""
    store = store or reading_store(checkpoint)
    target = Path(tempfile.mkdtemp(dir=directory)) / f"{checkpoint.sha256[:16]}.pt"
    try:
        download_artifact(artifact_store=store.backend, file_path=str(target), artifact_id=checkpoint.artifact_id)
    except ArtifactNotFound:
        elsewhere = "" if store.url == checkpoint.store else f" (it was written to {checkpoint.store})"
        raise ArtifactError(f"checkpoint {checkpoint.sha256[:12]}… (artifact {checkpoint.artifact_id}) is missing from {store.url}{elsewhere}") from None
    except Exception as exc:
        if not from_s3_client(exc):
            raise
        raise ArtifactError(f"cannot read from artifact store {store.url}: {first_line(exc)}") from None
    actual = file_sha256(target)
    if actual != checkpoint.sha256:
        target.unlink()
        raise ArtifactError(
            f"checkpoint {checkpoint.artifact_id} in {store.url} is corrupt: sha256 {actual[:12]}… != recorded {checkpoint.sha256[:12]}…"
        )
    return target

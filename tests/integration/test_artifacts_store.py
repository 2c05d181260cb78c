"""Checkpoints through both stores on a real PostgreSQL: the file store and the S3 store (against a
real S3-API server process, moto's): round trip with checksums, one copy per content, and one line
for a missing or corrupt artifact."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from coordinator.store import artifacts
from coordinator.store.engines import optuna_storage
from tests.s3_server import s3_bucket, s3_server  # noqa: F401  (fixtures)
from tests.service_helpers import rows


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'artifacts'}"
    url, _ = request.getfixturevalue("s3_bucket")
    return url


def objects(store: artifacts.ArtifactStore) -> list[str]:
    """Every object in the store (as the store itself lists them)."""
    if store.url.startswith("file://"):
        return sorted(os.listdir(store.url.removeprefix("file://")))
    backend = store.backend.backend
    listed = backend.client.list_objects_v2(Bucket=backend.bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def put(engine: sa.Engine, url: str, initialised_db: str, path: Path) -> artifacts.Checkpoint:
    study = optuna.create_study(study_name="holder", storage=optuna_storage(initialised_db), load_if_exists=True)
    return artifacts.put_checkpoint(engine, artifacts.open_store(url), path, n_params=7, seen_through="2020-01-31", attach_to=study)


def test_round_trip_with_checksum_and_one_copy_per_content(engine: sa.Engine, initialised_db: str, store_url: str, tmp_path: Path) -> None:
    source = tmp_path / "weights.pt"
    source.write_bytes(os.urandom(3000))
    first = put(engine, store_url, initialised_db, source)
    assert first.sha256 == artifacts.file_sha256(source) and first.store == store_url and first.size_bytes == 3000
    again = put(engine, store_url, initialised_db, source)  # a re-run with the same content
    assert again == first
    store = artifacts.open_store(store_url)
    assert len(objects(store)) == 1 and objects(store)[0].endswith(first.artifact_id)
    assert rows(engine, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 1
    study = optuna.load_study(study_name="holder", storage=optuna_storage(initialised_db))
    assert [m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(study)] == [first.artifact_id]  # optuna-dashboard lists it

    back = artifacts.fetch_checkpoint(first, tmp_path, store)
    assert back.read_bytes() == source.read_bytes()

    other = tmp_path / "other.pt"
    other.write_bytes(os.urandom(10))
    assert put(engine, store_url, initialised_db, other).artifact_id != first.artifact_id  # new content, new artifact
    assert len(objects(store)) == 2


def test_corrupt_and_missing_artifacts_are_one_line(engine: sa.Engine, initialised_db: str, store_url: str, tmp_path: Path) -> None:
    source = tmp_path / "weights.pt"
    source.write_bytes(b"the real weights")
    checkpoint = put(engine, store_url, initialised_db, source)
    store = artifacts.open_store(store_url)
    tampered = tmp_path / "tampered"
    tampered.write_bytes(b"other weights!!!")
    with open(tampered, "rb") as f:
        store.backend.write(checkpoint.artifact_id, f)  # the object changed behind the record's back
    with pytest.raises(artifacts.ArtifactError, match=r"is corrupt: sha256 .* != recorded"):
        artifacts.fetch_checkpoint(checkpoint, tmp_path, store)
    store.backend.remove(checkpoint.artifact_id)
    with pytest.raises(artifacts.ArtifactError, match=r"is missing from"):
        artifacts.fetch_checkpoint(checkpoint, tmp_path, store)

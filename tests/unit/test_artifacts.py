"""The artifact store's settings and the Optuna API it rides on (no database here)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest
from packaging.version import Version

from coordinator.errors import UserError
from coordinator.store import artifacts


def test_optuna_artifact_api_is_stable_in_the_pinned_range(tmp_path: Path) -> None:
    """optuna.artifacts was experimental in 3.x; in the range pyproject allows (5.x) the parts we use
    are plain API. If a release marks them experimental again (or moves them), this fails."""
    assert Version("5.0") <= Version(optuna.__version__) < Version("6.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        store = optuna.artifacts.FileSystemArtifactStore(tmp_path)
        study = optuna.create_study()
        source = tmp_path / "weights.pt"
        source.write_bytes(b"\x00\x01weights")
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(source), study_or_trial=study)
        optuna.artifacts.download_artifact(artifact_store=store, file_path=str(tmp_path / "back.pt"), artifact_id=artifact_id)
        assert [m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(study)] == [artifact_id]
        if _has_boto3():  # constructing the S3 store warns too if it turns experimental
            optuna.artifacts.Boto3ArtifactStore("bucket", client=object())
    assert (tmp_path / "back.pt").read_bytes() == b"\x00\x01weights"


def _has_boto3() -> bool:
    try:
        import boto3  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def test_store_url_from_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(artifacts.ENV_ARTIFACTS, raising=False)
    monkeypatch.setenv("SCALESWEEP_HOME", str(tmp_path / "home"))
    assert artifacts.store_url() == f"file://{tmp_path / 'home' / 'artifacts'}"
    monkeypatch.setenv(artifacts.ENV_ARTIFACTS, "s3://models/sweep/ckpt/")
    assert artifacts.store_url() == "s3://models/sweep/ckpt"
    assert artifacts.store_url("file:///srv/ckpt") == "file:///srv/ckpt"
    assert artifacts.store_url(str(tmp_path / "x")) == f"file://{tmp_path / 'x'}"
    for bad in ("s3://", "gs://bucket", "http://minio:9000/bucket"):
        with pytest.raises(UserError, match="artifact store"):
            artifacts.store_url(bad)


def test_a_file_store_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(artifacts.ArtifactError, match=r"^artifact store file://.*unreachable"):
        artifacts.open_store(str(blocker / "artifacts"))


def test_an_unreachable_s3_server_is_one_line_within_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3", reason="boto3 not installed (the 's3' extra)")
    from tests.s3_server import CREDENTIALS, free_port

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(artifacts.ENV_S3_ENDPOINT, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    started = time.monotonic()
    with pytest.raises(artifacts.ArtifactError) as error:
        artifacts.open_store("s3://models/ckpt")
    assert time.monotonic() - started < 20
    message = str(error.value)
    assert message.startswith("artifact store s3://models/ckpt at http://127.0.0.1:") and "unreachable" in message and "\n" not in message


def test_prefixed_store_keeps_objects_under_its_prefix(tmp_path: Path) -> None:
    (tmp_path / "runs" / "a").mkdir(parents=True)
    inner = optuna.artifacts.FileSystemArtifactStore(tmp_path)
    store = artifacts.PrefixedStore(inner, "/runs/a/")
    study = optuna.create_study()
    source = tmp_path / "w.pt"
    source.write_bytes(b"abc")
    artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(source), study_or_trial=study)
    assert (tmp_path / "runs" / "a" / artifact_id).read_bytes() == b"abc"

"""A real S3-API server for the tests of the S3 artifact store: moto's server mode, one process on
127.0.0.1 on a free port (no MinIO server package is installable here; the API is the same).

`s3_server` (session) starts it; `s3_bucket` gives each test a fresh bucket and sets the
environment a user sets (AWS_* credentials, SCALESWEEP_S3_ENDPOINT_URL). Skipped, with one line,
when moto's server extra or boto3 is not installed (`pip install -e '.[dev]'` has both).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "scalesweep-test", "AWS_SECRET_ACCESS_KEY": "scalesweep-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] not installed: the S3 store's tests need its S3-API server")
    boto3 = pytest.importorskip("boto3", reason="boto3 not installed (the 's3' extra)")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on {endpoint}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object]]:
    """(s3://bucket/prefix URL, a boto3 client to look inside), with the user's environment set."""
    import boto3

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SCALESWEEP_S3_ENDPOINT_URL", s3_server)
    bucket = f"scalesweep-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/checkpoints", client

"""A private PostgreSQL (and PgBouncer) for tests and benchmarks that need their own server settings:
TLS, password-only authentication, a raised max_connections, a pooler in front.

    with private_postgres(tls=True) as server:          # initdb in a temp folder, a free port
        url = server.url(sslmode="verify-full", sslrootcert=server.ca_file, host="localhost")

Never touches the shared server on 5432. The superuser `postgres` has a random password; every
connection needs it (scram-sha-256): `hba` lines are the whole pg_hba.conf. Run as root, the server
runs as the `postgres` system user (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from tests import system_binaries

DEFAULT_HBA = ["host all all 127.0.0.1/32 scram-sha-256"]


def pg_bin() -> Path | None:
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def why_unavailable() -> str | None:
    """None if a private server can be started here, else the one-line reason (for pytest.skip)."""
    missing = system_binaries.missing("initdb", "pg_ctl")
    if missing:
        return missing
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` system user for the server"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def own(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class Server:
    folder: Path
    port: int
    password: str
    ca_file: Path | None = None

    def url(self, *, user: str = "postgres", database: str = "postgres", host: str = "127.0.0.1", password: bool = True,
            port: int | None = None, **params: object) -> str:
        """A psycopg URL to this server (or to `port`, e.g. a pooler in front of it)."""
        secret = f":{self.password}" if password else ""
        query = f"?{urlencode({k: str(v) for k, v in params.items()})}" if params else ""
        return f"postgresql+psycopg://{user}{secret}@{host}:{port or self.port}/{database}{query}"


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate it signed for localhost / 127.0.0.1: (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-new", "-x509", "-days", "1", "-nodes", "-subj", "/CN=scalesweep test CA", "-keyout", str(ca_key), "-out", str(ca))
    openssl("req", "-new", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    extensions = folder / "san.ext"
    extensions.write_text("subjectAltName=DNS:localhost\n")  # deliberately not 127.0.0.1: verify-full checks names
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "1",
            "-extfile", str(extensions), "-out", str(cert))
    for path in (cert, key):
        own(path)
    key.chmod(0o600)
    return ca, cert, key


@contextlib.contextmanager
def private_postgres(*, tls: bool = False, hba: list[str] | None = None, settings: dict[str, str] | None = None) -> Iterator[Server]:
    """Start a private server; stop it and delete its folder on exit."""
    reason = why_unavailable()
    if reason:
        raise RuntimeError(reason)
    binaries = pg_bin()
    assert binaries is not None
    folder = Path(tempfile.mkdtemp(prefix="scalesweep_pg_"))
    folder.chmod(0o755)
    own(folder)
    data = folder / "data"
    password = secrets.token_hex(16)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    own(pwfile)
    port = free_port()
    started = False
    try:
        subprocess.run(
            as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}", "--auth=scram-sha-256"]),
            check=True, capture_output=True, timeout=120,
        )
        pwfile.unlink()
        (data / "pg_hba.conf").write_text("\n".join(hba or DEFAULT_HBA) + "\n")
        options = {"port": str(port), "listen_addresses": "127.0.0.1", "unix_socket_directories": str(folder),
                   "fsync": "off", **(settings or {})}
        ca_file = None
        if tls:
            ca_file, cert, key = make_certificates(folder)
            options.update(ssl="on", ssl_cert_file=str(cert), ssl_key_file=str(key))
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.writelines(f"{k} = '{v}'\n" for k, v in options.items())
        result = subprocess.run(
            as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "start"]),
            capture_output=True, text=True, timeout=90,
        )
        if result.returncode != 0:
            log = (folder / "server.log").read_text() if (folder / "server.log").exists() else result.stderr
            raise RuntimeError(f"private PostgreSQL did not start: {log.strip().splitlines()[-1:]}")
        started = True
        yield Server(folder, port, password, ca_file)
    finally:
        if started:
            subprocess.run(as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def private_pgbouncer(server: Server, *, pool_size: int, max_client_conn: int = 1000, pool_mode: str = "transaction",
                      extra: dict[str, str] | None = None) -> Iterator[int]:
    """PgBouncer in front of `server` (all databases, scram auth with the server's users); yields its port.

    Its admin console (database `pgbouncer`) is open to the `postgres` user for SHOW POOLS.
    """
    binary = shutil.which("pgbouncer")
    if binary is None:  # tests skip before they get here: tests/system_binaries.requires("pgbouncer")
        raise RuntimeError(system_binaries.missing("pgbouncer"))
    folder = Path(tempfile.mkdtemp(prefix="scalesweep_pgbouncer_"))
    folder.chmod(0o755)
    port = free_port()
    # PgBouncer authenticates clients itself: the same scram secret as the server (it accepts the password).
    (folder / "userlist.txt").write_text(f'"postgres" "{server.password}"\n')
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "scram-sha-256",
        "auth_file": str(folder / "userlist.txt"),
        "admin_users": "postgres",
        "pool_mode": pool_mode,
        "default_pool_size": str(pool_size),
        "min_pool_size": "0",
        "reserve_pool_size": "0",
        "max_client_conn": str(max_client_conn),
        "max_db_connections": str(pool_size),
        "server_reset_query": "",  # transaction pooling: nothing of a session survives anyway
        "ignore_startup_parameters": "extra_float_digits",
        "logfile": str(folder / "pgbouncer.log"),
        "pidfile": str(folder / "pgbouncer.pid"),
        **(extra or {}),
    }
    ini = f"[databases]\n* = host=127.0.0.1 port={server.port}\n\n[pgbouncer]\n"
    ini += "".join(f"{k} = {v}\n" for k, v in settings.items())
    (folder / "pgbouncer.ini").write_text(ini)
    if os.geteuid() == 0:
        for path in (folder, folder / "userlist.txt", folder / "pgbouncer.ini"):
            own(path)
    # PgBouncer refuses to run as root; `-u` makes it switch user itself, so proc is PgBouncer.
    cmd = [binary, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(folder / "pgbouncer.ini")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
                raise RuntimeError(f"pgbouncer did not start: {log.strip().splitlines()[-1:]}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)

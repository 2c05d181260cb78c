"""A newcomer's bad inputs: each gives one line on stderr, a non-zero exit, and changes nothing.

One initialised database per module (two synthetic datasets, the smoke studies of each) serves every
case; the row counts of the tables a command could write are compared before and after.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from coordinator.store import engines, schema, urls
from coordinator.store.roles import READER_ROLE
from tests.service_helpers import create, make_dataset

STUDY = "syn-a25-thr1pct-100K-h1"  # one of the smoke studies on the first dataset
# The tables a mistaken command could write into (ours and Optuna's).
WATCHED = ("series", "datasets", "study_specs", "work_items", "attempts", "study_amendments", "evaluation_protocols",
           "studies", "trials", "study_user_attributes")


@pytest.fixture(scope="module")
def service(admin_url: str) -> Iterator[dict[str, str]]:
    """One database for the module: two datasets, the smoke studies of each, nothing trained."""
    with engines.scratch_database(admin_url, "ss_bad") as url:
        schema.init_db(url)
        first = make_dataset(url, symbol="SYN")
        second = make_dataset(url, seed=1, symbol="ALT")
        create(url, dataset=first, preset="smoke")
        create(url, dataset=second, preset="smoke", horizons=(1,), budgets=("100K",))
        reader = make_url(url).set(username=READER_ROLE, password=None).render_as_string(hide_password=False)
        yield {"url": url, "reader": reader}


def counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in WATCHED}
    finally:
        engine.dispose()


def run_main(main: Callable[[list[str]], None], args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def coordinator(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from coordinator.cli import main

    return run_main(main, args, capsys)


def assert_one_line(code: int, out: str, err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    long_csv = tmp_path / "long.csv"
    long_csv.write_text("date,open,high,low,close,volume\n2020-01-02," + "1" * 2_000_000 + ",1,1,1,1\n")
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    return {"long": str(long_csv), "fifo": str(fifo), "tmp": str(tmp_path), "file": str(a_file)}


# (id, arguments with {url}/{reader}/{tmp}... placeholders, part of the one line expected)
CASES = [
    ("reader db init", ["--database-url", "{reader}", "db", "init"], "read-only role: hpo_reader cannot create or upgrade"),
    ("reader reap", ["--database-url", "{reader}", "reap"], "read-only role: hpo_reader cannot reap"),
    ("reader evaluate", ["--database-url", "{reader}", "evaluate", "--dataset", "syn-a25:1"], "read-only role: hpo_reader cannot submit"),
    ("reader study cancel", ["--database-url", "{reader}", "study", "cancel", STUDY], "read-only role: hpo_reader cannot cancel"),
    ("reader study extend", ["--database-url", "{reader}", "study", "extend", STUDY, "--trials", "5"], "read-only role: hpo_reader cannot extend"),
    ("reader data list", ["--database-url", "{reader}", "data", "list"], "read-only role: permission denied"),
    ("negative seed", ["--database-url", "{url}", "data", "synth", "NEW", "--seed", "-1"], "--seed"),
    ("seed over 2^32-1", ["--database-url", "{url}", "data", "synth", "NEW", "--seed", str(2**32)], "--seed"),
    ("non-ASCII symbol", ["--database-url", "{url}", "data", "synth", "ÄÖÜ"], "bad symbol"),
    ("5000-character symbol", ["--database-url", "{url}", "data", "synth", "A" * 5000], "at most 32"),
    ("2,000,000-digit CSV line", ["--database-url", "{url}", "data", "import", "NEW", "{long}"], "longer than 10,000 characters"),
    ("FIFO as the import file", ["--database-url", "{url}", "data", "import", "NEW", "{fifo}"], "not a regular file"),
    ("extend to 10^12 trials", ["--database-url", "{url}", "study", "extend", STUDY, "--trials", str(10**12)], "--trials"),
    ("empty --database-url", ["--database-url", "", "status"], "--database-url is empty"),
    ("evaluate 10^9 x 10^9", ["--database-url", "{url}", "evaluate", "--k", str(10**9), "--seeds", str(10**9)], "--k"),
    ("report --out ''", ["--database-url", "{url}", "report", "--out", ""], "--out is empty"),
    ("csv into x.parquet", ["--database-url", "{url}", "export", "--format", "csv", "--out", "{tmp}/x.parquet"], "--format is csv"),
    ("status mixing datasets", ["--database-url", "{url}", "status", "--studies", "*-h1"], "use 2 datasets"),
    ("leaderboard mixing datasets", ["--database-url", "{url}", "leaderboard", "--studies", "*-h1"], "use 2 datasets"),
    ("export mixing datasets", ["--database-url", "{url}", "export", "--studies", "*-h1", "--out", "{tmp}/x.csv"], "use 2 datasets"),
    ("local --dataset nosuch", ["--database-url", "{url}", "local", "--dataset", "nosuch", "--report-dir", "{tmp}/r"], "unknown dataset 'nosuch'"),
]


@pytest.mark.parametrize("args, expected", [pytest.param(a, e, id=i) for i, a, e in CASES])
def test_one_line_and_nothing_changed(service: dict[str, str], files: dict[str, str], args: list[str], expected: str,
                                      capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(urls.ENV_URL, raising=False)
    monkeypatch.chdir(files["tmp"])  # whatever a command might write lands here, not in the repository
    before = counts(service["url"])
    code, out, err = coordinator([a.format(**service, **files) for a in args], capsys)
    assert_one_line(code, out, err, expected)
    assert counts(service["url"]) == before
    assert sorted(os.listdir(files["tmp"])) == ["a_file", "fifo.csv", "long.csv"]  # no report, no export, no embedded server


def test_worker_through_the_reader_url(service: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    before = counts(service["url"])
    code, out, err = run_main(main, ["--database-url", service["reader"], "--max-trials", "1"], capsys)
    assert_one_line(code, out, err, "read-only role: hpo_reader cannot run trials")
    assert counts(service["url"]) == before


@pytest.mark.parametrize("home", ["file", "missing parent"])
def test_scalesweep_home_not_a_folder(home: str, files: dict[str, str], capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(urls.ENV_URL, raising=False)
    value = files["file"] if home == "file" else files["file"] + "/home"
    monkeypatch.setenv("SCALESWEEP_HOME", value)
    code, out, err = coordinator(["status"], capsys)
    assert_one_line(code, out, err, "SCALESWEEP_HOME")
    assert Path(files["file"]).read_text() == "not a folder"


def test_mistyped_data_folder_is_said(files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped $SCALESWEEP_DATA never quietly becomes a synthetic run: it is said, loudly."""
    from coordinator.data.location import ENV_DATA, find_real_bars

    monkeypatch.setenv(ENV_DATA, files["tmp"] + "/no-such-folder")
    monkeypatch.chdir(files["tmp"])  # no data/ cache here
    said: list[str] = []
    assert find_real_bars(allow_fetch=False, say=said.append) is None
    assert said == [f"WARNING: ${ENV_DATA} is {files['tmp']}/no-such-folder, which does not exist (a typo?): looking for SPY elsewhere"]


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="a GPU is visible here")
def test_local_cuda_without_gpu_starts_nothing(service: dict[str, str], files: dict[str, str], capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files["tmp"])
    before = counts(service["url"])
    code, out, err = coordinator(["--database-url", service["url"], "local", "--device", "cuda", "--report-dir", "r"], capsys)
    assert_one_line(code, out, err, "--device cuda but no GPU")
    assert counts(service["url"]) == before and not Path("r").exists()


def test_dashboard_port_in_use_before_the_banner(service: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("optuna_dashboard", reason="the dashboard extra is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = coordinator(["--database-url", service["url"], "dashboard", "--port", str(port)], capsys)
    assert_one_line(code, out, err, f"cannot serve on 127.0.0.1:{port}")


def test_leaderboard_csv_has_the_test_auc_columns(service: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = coordinator(["--database-url", service["url"], "leaderboard", "--dataset", "syn-a25:1", "--format", "csv"], capsys)
    assert code == 0, err
    header = out.splitlines()[0].split(",")
    assert header[-4:] == ["test_auc", "test_auc_low", "test_auc_high", "test_auc_trial"] and "n_params" in header

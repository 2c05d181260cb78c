"""Every system program a test runs is in tests/system_binaries.py, `.ci/run` installs each, and a
missing one skips its tests with one line instead of failing them."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tests import system_binaries
from tests.system_binaries import APT, BASE_SYSTEM, COMPOSE_INSTALLER, PROGRAMS, installer

REPO = Path(__file__).resolve().parents[2]
CI_RUN = REPO / ".ci" / "run"

# How tests name a program: shutil.which("x"), subprocess.run(["x", ...]) and friends, requires("x", ...),
# and the PostgreSQL server programs run from their folder (`binaries / "initdb"`).
NAMED = [
    re.compile(r'shutil\.which\(\s*"([^"]+)"'),
    re.compile(r'subprocess\.(?:run|Popen|check_output|check_call|call)\(\s*\[\s*"([^"]+)"'),
    re.compile(r'binaries\s*/\s*"([^"]+)"'),
]
REQUIRED = re.compile(r"requires\(([^)]*)\)")


def programs_named_by_tests() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "tests").rglob("*.py"):
        if path.resolve() == Path(__file__).resolve():
            continue  # this file's own patterns and examples
        text = path.read_text()
        for pattern in NAMED:
            names.update(pattern.findall(text))
        for args in REQUIRED.findall(text):
            names.update(re.findall(r'"([^"]+)"', args))
    return names


def ci_apt_packages() -> set[str]:
    """The packages `.ci/run` installs: the words of its SYSTEM_PACKAGES=( ... ) list."""
    found = re.search(r"SYSTEM_PACKAGES=\((.*?)\n\)", CI_RUN.read_text(), re.S)
    assert found, ".ci/run lists the packages it installs in SYSTEM_PACKAGES=( ... )"
    return set(shlex.split(found.group(1), comments=True))


def test_every_program_a_test_runs_is_registered() -> None:
    named = programs_named_by_tests()
    assert {"pgbouncer", "initdb", "openssl", "psql"} <= named, "the scan finds the programs it must"
    unknown = sorted(named - set(PROGRAMS) - BASE_SYSTEM)
    assert unknown == [], f"add these to tests/system_binaries.py (package, use) or BASE_SYSTEM: {unknown}"


def test_ci_installs_every_registered_program() -> None:
    text = CI_RUN.read_text()
    packages = ci_apt_packages()
    for program in PROGRAMS.values():
        if installer(program) == APT:
            assert program.package in packages, f".ci/run does not install {program.package} ({program.name})"
        else:
            assert program.package in text, f".ci/run does not run {program.package} ({program.name})"
    assert COMPOSE_INSTALLER in text
    assert "apt-get update" in text and text.count("apt-get update") == 1, "one apt-get update"
    assert "DEBIAN_FRONTEND=noninteractive" in text


def test_a_missing_program_is_one_line_and_a_present_one_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = system_binaries.missing("pgbouncer", "psql")
    assert reason is not None and "\n" not in reason
    assert reason.startswith("pgbouncer, psql not on PATH") and "apt-get install pgbouncer postgresql-client" in reason
    fake = tmp_path / "pgbouncer"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert system_binaries.missing("pgbouncer") is None
    with pytest.raises(KeyError):
        system_binaries.missing("not-registered")


def test_ci_script_is_valid_bash() -> None:
    assert os.access(CI_RUN, os.X_OK)
    assert os.system(f"bash -n {shlex.quote(str(CI_RUN))}") == 0

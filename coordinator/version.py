"""Which code produced a result: recorded on every study spec and every trial (provenance).

`code_version()` is the package version plus the git commit (with `-dirty` when the checkout has
uncommitted changes) when running from a git checkout; else `$SCALESWEEP_CODE_VERSION` (set by the
Docker image build, which has no .git); else the bare package version.
"""

from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata
from pathlib import Path

ENV_CODE_VERSION = "SCALESWEEP_CODE_VERSION"
REPO_ROOT = Path(__file__).resolve().parent.parent


def package_version() -> str:
    try:
        return metadata.version("scalesweep")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@functools.cache
def code_version() -> str:
    """E.g. '0.1.0+g1a2b3c4d5e6f' or '0.1.0+g1a2b3c4d5e6f-dirty'; cached for the process."""
    sha = git_sha(REPO_ROOT)
    if sha:
        return f"{package_version()}+g{sha}"
    return os.environ.get(ENV_CODE_VERSION) or package_version()


def git_sha(repo: Path) -> str | None:
    """The checkout's short commit (+ '-dirty'), or None outside a git checkout or without git."""
    if not (repo / ".git").exists():
        return None
    try:
        sha = run_git(repo, "rev-parse", "--short=12", "HEAD")
        # Tracked files only: untracked scratch files do not change the code that ran.
        dirty = run_git(repo, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def run_git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()

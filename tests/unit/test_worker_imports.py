"""The worker's import closure stays inside the layers it may use.

A worker process should load what it runs and nothing of the control plane's front ends: not the
CLI kit (coordinator.commands), not reports, cluster or evaluation code, not matplotlib or the
cluster clients. import-linter checks the static graph in `make lint`; this checks what a real import
of every worker module loads, imports inside functions and importlib included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS_ALLOWED = {"store", "studies", "data", "lifecycle", "errors", "version"}
THIRD_PARTY_FORBIDDEN = {"matplotlib", "python_on_whales", "optuna_dashboard", "yfinance", "kubernetes", "yaml", "rich", "pgserver"}
PROBE = """
import json, pkgutil, sys, importlib
import worker
for module in pkgutil.walk_packages(worker.__path__, "worker."):
    importlib.import_module(module.name)
print(json.dumps(sorted(sys.modules)))
"""


def worker_closure() -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_worker_loads_only_the_lower_layers() -> None:
    modules = worker_closure()
    assert "worker.loop" in modules and "worker.train" in modules and "worker.cli" in modules
    ours = {name.split(".")[1] for name in modules if name.startswith("coordinator.")}
    assert ours <= OURS_ALLOWED, f"the worker loads coordinator.{sorted(ours - OURS_ALLOWED)}"
    third_party = {name.split(".")[0] for name in modules}
    assert not third_party & THIRD_PARTY_FORBIDDEN, sorted(third_party & THIRD_PARTY_FORBIDDEN)

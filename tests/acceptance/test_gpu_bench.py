"""bench/gpu.py end to end in its CPU quick form: every part runs, the JSON and Markdown agree with
what was measured, and real worker processes go through the CLI against a scratch database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SPY_CSV

pytest.importorskip("torch")


@pytest.mark.skipif(not SPY_CSV.exists(), reason="needs the real SPY series in ../shared/data")
def test_gpu_bench_quick_on_cpu(tmp_path: Path, db_url: str) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--quick", "--threads", "1"]
    command += ["--csv", str(SPY_CSV), "--out", str(out), "--database-url", db_url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((out / "gpu.json").read_text())
    assert result["errors"] == {}

    shapes = result["shapes"]
    assert {(r["shape"], r["variant"]) for r in shapes} == {(s, v) for s in ("widest", "deepest") for v in ("before", "after")}
    for r in shapes:
        assert r["samples_per_s"] > 0 and r["s_per_epoch"] > 0 and r["matmul_tflops"] > 0
        assert r["mfu"] is None and r["step_mode"] == "eager"  # CPU: no peak to compare with, no graphs
        assert r["optimizer"] == ("default" if r["variant"] == "before" else "foreach")
        # The documented FLOP count: 6 x multiply-adds per token x 11 patches.
        assert r["tflops"] == pytest.approx(r["samples_per_s"] * 6 * 11 * macs(r) / 1e12, rel=1e-9)
    widest = next(r for r in shapes if r["shape"] == "widest")
    deepest = next(r for r in shapes if r["shape"] == "deepest")
    assert widest["d_model"] > deepest["d_model"] and deepest["n_layers"] > widest["n_layers"]

    phases = result["breakdown"]["phases_ms"]
    assert set(phases) == {"default", "foreach"}
    assert all(ms > 0 for p in phases.values() for ms in p.values())
    assert set(phases["foreach"]) == {"forward", "backward", "clip", "optimizer", "evaluation"}

    levels = result["share"]["levels"]
    assert [lv["workers"] for lv in levels] == [2]
    for lv in levels:  # real worker processes finished every trial of their study through the CLI
        assert lv["finished"] == lv["target_trials"] == 2 * lv["workers"]
        assert lv["worker_exit_codes"] == [0] * lv["workers"] and lv["trials_per_hour"] > 0
        assert lv["leases"] == []  # CPU workers lease no GPU

    assert "skipped" in result["oom"]
    projection = result["projection"]
    (row,) = projection["rows"]
    assert projection["epochs_source"].startswith("schedule cap")  # synthetic trials say nothing about epochs
    assert row["gpu_hours"] == pytest.approx(3 * 51 * 30 * row["s_per_epoch"] / 3600)
    assert row["widest_over_deepest_samples_per_s"] == pytest.approx(widest_after(shapes)["samples_per_s"] / deepest_after(shapes)["samples_per_s"])
    report = (out / "gpu.md").read_text()
    assert "| 100K | widest" in report and "Default matrix projection" in report and report in done.stdout


def widest_after(shapes: list[dict]) -> dict:
    return next(r for r in shapes if r["shape"] == "widest" and r["variant"] == "after")


def deepest_after(shapes: list[dict]) -> dict:
    return next(r for r in shapes if r["shape"] == "deepest" and r["variant"] == "after")


def macs(row: dict) -> int:
    from coordinator.studies.architecture import Architecture
    from coordinator.studies.search_space import default_search_space, parse_budget

    space = default_search_space(parse_budget(row["budget"]), 25)
    arch = Architecture(row["d_model"], row["n_layers"], row["n_heads"], row["d_ff"], 25, space.context, space.patch_len, space.stride)
    d, p = arch.d_model, arch.n_patches
    return arch.n_layers * (4 * d * d + 2 * d * arch.d_ff + 2 * p * d) + arch.patch_len * arch.n_features * d + d

"""A database of the release before walk-forward (af1b25b, schema 0003), holding a study evaluated
under the single-period protocol by that release's own code, upgrades in place to 0004 with nothing
lost: its runs become fold 0, its verdict reads as single-period, and recomputing it with this
release gives the same intervals and says it rests on one test period."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from coordinator.evaluation.summary import compute_verdicts, store_verdicts
from coordinator.reports.answer import print_answer
from coordinator.store import engines, migrations, schema
from tests.migrations.test_migrations import previous_release, run_previous_release, schema_signature
from tests.service_helpers import rows

BEFORE_WALK_FORWARD = "af1b25b"

OLD_RELEASE_SCRIPT = """
import sys
import torch
from coordinator import db
from coordinator.evaluation.plan import payloads, record_protocol
from coordinator.evaluation.protocol import make_protocol
from coordinator.evaluation.summary import compute_verdicts, store_verdicts
from coordinator.lifecycle.claims import load_studies
from coordinator.lifecycle.settings import Liveness
from tests.service_helpers import create, make_dataset
from worker.evaluate import evaluate_run
from worker.loop import Worker, WorkerOptions
torch.set_num_threads(1)
url = sys.argv[1]
db.init_db(url)
dataset = make_dataset(url, days=2500)
create(url, dataset=dataset, preset="smoke", budgets=("10K",), horizons=(1,), trials=1)
assert Worker(WorkerOptions(url=url, worker_id="old", device="cpu", liveness=Liveness(1, 20, 2), poll_s=0.1)).run() == 0
engine = db.make_engine(url)
entry = load_studies(engine)[0]
evaluation = record_protocol(engine, entry, make_protocol("smoke", k=1, n_seeds=1))
for item in payloads(evaluation):
    evaluate_run(engine, item)
store_verdicts(engine, compute_verdicts(engine, entry.spec.dataset.name))
print("old release done")
"""

COMPARED = ("slope_per_decade", "answer_study", "answer_test_auc", "best_baseline", "vs_best_baseline", "vs_best_baseline_low",
            "vs_best_baseline_high", "n_test", "block_length", "replicates")


@pytest.mark.slow  # the old release trains a study and its evaluation run for real (about a minute on 2 shared cores)
def test_a_single_period_evaluation_upgrades_and_still_reads(admin_url: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    old = previous_release(tmp_path, BEFORE_WALK_FORWARD)
    with engines.scratch_database(admin_url, "ss_migr_wf") as url, engines.scratch_database(admin_url, "ss_migr_wf_new") as fresh:
        run_previous_release(old, OLD_RELEASE_SCRIPT, url, timeout=600, OMP_NUM_THREADS="1")
        engine = engines.make_engine(url)
        try:
            runs_before = rows(engine, "SELECT * FROM evaluation_runs ORDER BY study_name, rank, seed")
            verdict_before = rows(engine, "SELECT * FROM scaling_verdicts")
            protocol_before = rows(engine, "SELECT * FROM evaluation_protocols")
            assert len(runs_before) == 1 and len(verdict_before) == 1

            done = schema.init_db(url)  # the upgrade, in place
            assert any(f"schema {migrations.head_revision()} (upgraded from 0003_evaluation)" in line for line in done)

            # Nothing lost: the old rows are still there, unchanged; the runs are the single test period's (fold 0),
            # and they kept no checkpoint (the column came later).
            runs_after = rows(engine, "SELECT * FROM evaluation_runs ORDER BY study_name, rank, seed")
            assert [{k: v for k, v in r.items() if k not in ("fold", "checkpoint_sha256")} for r in runs_after] == runs_before
            assert [r["fold"] for r in runs_after] == [0]
            assert [r["checkpoint_sha256"] for r in runs_after] == [None]
            assert [{k: r[k] for k in verdict_before[0]} for r in rows(engine, "SELECT * FROM scaling_verdicts")] == verdict_before
            assert [{k: r[k] for k in protocol_before[0]} for r in rows(engine, "SELECT * FROM evaluation_protocols")] == protocol_before
            scaling = rows(engine, "SELECT * FROM scaling")[0]
            assert scaling["protocol"] == "single-period" and scaling["n_folds"] is None and scaling["mde_slope"] is None

            # Recomputed by this release: the same answer, read as the single-period protocol it was made under.
            study = runs_before[0]["study_name"]
            dataset = rows(engine, "SELECT dataset_name FROM study_specs WHERE study_name = :s", s=study)[0]["dataset_name"]
            verdicts = compute_verdicts(engine, dataset)
            assert verdicts[0].walk_forward is None and verdicts[0].protocol.sha256() == protocol_before[0]["protocol_sha256"]
            store_verdicts(engine, verdicts)
            after = rows(engine, "SELECT * FROM scaling_verdicts")[0]
            assert {k: after[k] for k in COMPARED} == {k: verdict_before[0][k] for k in COMPARED}
            assert any("single-period protocol" in note for note in after["notes"])
            console = Console(record=True, width=200)
            assert print_answer(engine, dataset, int(after["dataset_version"]), console)
            assert "one test period (single-period protocol)" in console.export_text()
        finally:
            engine.dispose()
        with engines.make_engine(url).connect() as conn:
            assert migrations.current_revision(conn) == migrations.head_revision()
        # The same schema as a database created fresh by this release.
        schema.init_db(fresh)
        assert schema_signature(url) == schema_signature(fresh)

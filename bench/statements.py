"""SQL statements per trial: one scalesweep worker (`--synthetic 0`) vs plain Optuna `study.optimize`.

    .venv/bin/python bench/statements.py [--trials 40] [--code DIR]

Counts every statement the client sends (a SQLAlchemy cursor-execute hook on every engine in the
process), for the whole life of a trial: claim, ask/suggest, heartbeats, epoch row, record, tell.
`--code DIR` runs another checkout's code (e.g. `git archive f068c87`) for a before/after count.
The peer is what a user would write instead: `study.optimize` with the same TPE sampler and the
same search space through `suggest`, on the same PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

COUNT_SCRIPT = r"""
import contextlib, io, os, sys, time
import sqlalchemy as sa
from sqlalchemy import event
url, trials, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from coordinator.store import engines, schema
from tests.service_helpers import create, make_dataset
schema.init_db(url)
make_dataset(url)
with contextlib.redirect_stdout(io.StringIO()):
    plans = create(url, preset="smoke", budgets=("100K",), horizons=(1,), trials=trials)
count = [0]
event.listen(sa.engine.Engine, "before_cursor_execute", lambda *a, **k: count.__setitem__(0, count[0] + 1))
started = time.perf_counter()
if mode == "scalesweep":
    from worker.loop import Worker, WorkerOptions
    try:
        from coordinator.lifecycle.settings import Liveness
    except ImportError:
        from coordinator.trials import Liveness
    Worker(WorkerOptions(url=url, synthetic=0.0, liveness=Liveness(5, 60, 2), worker_id="count")).run()
else:
    import optuna
    from coordinator.studies.search_space import SearchSpace, suggest
    spec = plans[0].spec
    space = SearchSpace.from_dict(spec.search_space)
    study = optuna.create_study(study_name="peer", storage=engines.optuna_storage(url), sampler=spec.make_sampler(1), direction="maximize")
    study.optimize(lambda t: (suggest(t, space), 0.5)[1], n_trials=trials)
print(f"{count[0] / trials:.1f} {1000 * (time.perf_counter() - started) / trials:.1f}")
"""


def count(admin_url: str, code_dir: Path, trials: int, mode: str) -> tuple[float, float]:
    sys.path.insert(0, str(REPO))
    from coordinator.store import engines

    with engines.scratch_database(admin_url, "bench_stmts") as url:
        env = {**os.environ, "PYTHONPATH": str(code_dir)}
        done = subprocess.run([sys.executable, "-c", COUNT_SCRIPT, url, str(trials), mode], cwd=code_dir, env=env,
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        per_trial, ms = done.stdout.strip().splitlines()[-1].split()
        return float(per_trial), float(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose worker is counted")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--peer", action="store_true", help="also count plain Optuna study.optimize")
    args = parser.parse_args()
    with contextlib.redirect_stderr(io.StringIO()):
        ours = count(args.admin_url, args.code.resolve(), args.trials, "scalesweep")
    print(f"scalesweep worker ({args.code}): {ours[0]:.1f} statements per trial, {ours[1]:.1f} ms per trial (one worker, in-process)")
    if args.peer:
        peer = count(args.admin_url, args.code.resolve(), args.trials, "optuna")
        print(f"plain Optuna study.optimize:     {peer[0]:.1f} statements per trial, {peer[1]:.1f} ms per trial")


if __name__ == "__main__":
    main()

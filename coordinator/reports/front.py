"""The Pareto fronts of multi-objective studies (`create-studies --objectives val_auc,n_params`), for
`coordinator leaderboard` (a table per study) and `coordinator report` (a section of the page).

A study's COMPLETE trials carry one value per objective (`trial_records.metrics -> objective_values`,
what Optuna was told); the front and its knee come from coordinator.studies.pareto. Results of
synthetic workers are shown only when a study has no other, and are labelled so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import sqlalchemy as sa
from rich.table import Table

from coordinator.store.engines import read_rows
from coordinator.studies import pareto
from coordinator.studies.spec import StudySpec

FRONT_SQL = """
SELECT s.study_name, s.spec, r.trial_number, r.metrics -> 'objective_values' AS objective_values,
       coalesce((r.metrics ->> 'synthetic')::boolean, false) AS synthetic
FROM study_specs s JOIN trial_records r ON r.study_name = s.study_name
WHERE r.state = 'COMPLETE' AND jsonb_array_length(coalesce(s.spec -> 'extra_objectives', '[]'::jsonb)) > 0
  AND r.metrics ? 'objective_values'
ORDER BY s.study_name, r.trial_number
"""


@dataclass(frozen=True)
class StudyFront:
    study: str
    spec: StudySpec
    front: list[pareto.Point]  # keyed by trial number, best first objective first
    knee: pareto.Point
    n_trials: int  # COMPLETE trials the front was taken from
    synthetic: bool


def study_fronts(engine: sa.Engine, names: set[str] | None = None) -> list[StudyFront]:
    """The front of every multi-objective study (of `names`, when given) that has a COMPLETE trial."""
    by_study: dict[str, list[dict]] = {}
    for row in read_rows(engine, FRONT_SQL):
        if names is None or row["study_name"] in names:
            by_study.setdefault(row["study_name"], []).append(row)
    fronts = []
    for name, rows in by_study.items():
        real = [r for r in rows if not r["synthetic"]]
        used = real or rows
        spec = StudySpec.from_dict(used[0]["spec"])
        points = [pareto.Point(r["trial_number"], tuple(float(v) for v in r["objective_values"])) for r in used]
        fronts.append(StudyFront(name, spec, pareto.front(points, spec.directions), pareto.knee(points, spec.directions), len(used), not real))
    return fronts


def heading(front: StudyFront) -> str:
    objectives = ", ".join(f"{o.metric} ({'higher' if o.direction == 'maximize' else 'lower'} is better)" for o in front.spec.objectives)
    note = " [synthetic workers: not results]" if front.synthetic else ""
    return f"Pareto front of {front.study}: {len(front.front)} of {front.n_trials} COMPLETE trials; {objectives}{note}"


def cell(metric: str, value: float) -> str:
    return f"{value:,.0f}" if metric == "n_params" else f"{value:.4f}"


def front_table(front: StudyFront) -> Table:
    table = Table(title=heading(front))
    table.add_column("trial", justify="right")
    for objective in front.spec.objectives:
        table.add_column(objective.metric, justify="right")
    table.add_column("knee")
    for point in front.front:
        cells = [cell(o.metric, v) for o, v in zip(front.spec.objectives, point.values, strict=True)]
        table.add_row(f"#{point.key}", *cells, "knee: evaluated first" if point.key == front.knee.key else "")
    return table


def front_html(fronts: list[StudyFront]) -> str:
    """One table per multi-objective study; empty when there is none."""
    parts = []
    for front in fronts:
        header = "".join(f"<th>{html.escape(o.metric)}</th>" for o in front.spec.objectives)
        body = "".join(
            f"<tr><td>#{p.key}</td>" + "".join(f"<td>{cell(o.metric, v)}</td>" for o, v in zip(front.spec.objectives, p.values, strict=True))
            + f"<td>{'knee' if p.key == front.knee.key else ''}</td></tr>"
            for p in front.front
        )
        parts.append(f"<h3>{html.escape(heading(front))}</h3><table><tr><th>trial</th>{header}<th></th></tr>{body}</table>")
    return "<h2>Pareto fronts</h2>" + "".join(parts) if parts else ""

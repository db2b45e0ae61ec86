"""The learning curve of a team's loop: the main eval figures round by round along a deployment or an adapter lineage.

A chain is the models a deployment went live with, in order (starting with what its first
promotion replaced), or an adapter's parents back to the base model. Each round's figures come
from the newest finished eval run with that model as the candidate, preferring the run against
the round before it; the first model of a chain (usually the base model) is read from the
baseline side of a run. Pure except the two chain readers, which only read the store.

    chain = deployment_chain(db, "support", base_name="smollm2-135m-instruct")
    points = curve_points(chain, list_eval_runs(db, status="done"))   # [CurvePoint(round, model, metric, ...)]
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.evaluation.summary import EvalSummary, SideSummary
from store import deployments as dstore
from store.adapters import get_adapter, list_adapters

# The figures plotted, all shares in [0, 1] so they share one axis; (key, what people read).
CURVE_METRICS = (
    ("similarity", "reference similarity"),
    ("rouge_l", "ROUGE-L"),
    ("checks", "named checks passed"),
    ("invented", "answers with invented links/e-mails/phones"),
    ("judge", "judge win rate"),
)
LABELS = dict(CURVE_METRICS)


@dataclass(frozen=True)
class CurvePoint:
    round: int
    """Position in the chain: 0 is its first model (the base model for a lineage)."""
    model: str
    metric: str
    """A label of CURVE_METRICS."""
    value: float
    eval_run_id: int
    against: str
    """The model the figure was measured against (the run's other side)."""


def side_figures(side: SideSummary) -> dict[str, float | None]:
    """One side's plotted figures; named checks are pooled (passed / checked over every check)."""
    passed = sum(c[0] for c in side.check_counts.values())
    checked = sum(c[1] for c in side.check_counts.values())
    return {"similarity": side.mean_similarity, "rouge_l": side.mean_rouge_l,
            "checks": passed / checked if checked else None,
            "invented": side.invented_rate if side.items else None}


def _pick(runs: list[dict], model: str, previous: str | None, *, side: str) -> dict | None:
    """The newest finished run with `model` on `side`, preferring the one against `previous`."""
    other = "baseline" if side == "candidate" else "candidate"
    mine = [r for r in runs if r[side] == model and r.get("summary") and r.get("status") == "done"]
    exact = [r for r in mine if previous is not None and r[other] == previous]
    return (exact or mine or [None])[0]


def curve_points(chain: list[str], runs: list[dict]) -> list[CurvePoint]:
    """Every plotted figure per round of `chain`; `runs` are store eval runs, newest first."""
    points: list[CurvePoint] = []
    for i, model in enumerate(chain):
        previous = chain[i - 1] if i else None
        run = _pick(runs, model, previous, side="candidate")
        side = "candidate"
        if run is None:  # the base model (or a model never evaluated as candidate): its baseline figures
            following = chain[i + 1] if i + 1 < len(chain) else None
            run, side = _pick(runs, model, following, side="baseline"), "baseline"
        if run is None:
            continue
        summary = EvalSummary.from_json(run["summary"])
        figures = side_figures(summary.candidate if side == "candidate" else summary.baseline)
        if side == "candidate" and summary.judge.used:
            figures["judge"] = summary.judge.win_rate
        against = run["baseline"] if side == "candidate" else run["candidate"]
        for key, label in CURVE_METRICS:
            value = figures.get(key)
            if value is not None:
                points.append(CurvePoint(i, model, label, float(value), run["id"], against))
    return points


def deployment_chain(db, name: str, *, base_name: str) -> list[str]:
    """The models deployment `name` went live with, in order, starting with what its first change replaced."""
    events = dstore.deployment_events(db, name)
    if not events:
        return []
    chain = [events[0]["from_target"] or base_name]
    for e in events:
        target = e["to_target"] or base_name
        if e["action"] != "rollback" and target not in chain:
            chain.append(target)
    return chain


def adapter_chain(db, name: str, *, base_name: str) -> list[str]:
    """The base model, then `name`'s parents oldest first, then `name` (LookupError for an unknown adapter)."""
    adapter = get_adapter(db, name)
    chain, seen = [], set()
    while adapter is not None and adapter["id"] not in seen:  # a cycle would be a corrupt registry
        seen.add(adapter["id"])
        chain.append(adapter["name"])
        adapter = get_adapter(db, adapter["parent_id"]) if adapter.get("parent_id") else None
    return [base_name, *reversed(chain)]


def family_chain(db, family: str, *, base_name: str) -> list[str]:
    """The lineage of the family's newest adapter (an empty list for an unknown family)."""
    members = [a for a in list_adapters(db) if a.get("family") == family]
    if not members:
        return []
    newest = max(members, key=lambda a: (a.get("version") or 0, a["id"]))
    return adapter_chain(db, newest["name"], base_name=base_name)

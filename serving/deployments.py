"""Deployments: promote an adapter to a stable model name through the gate, roll back, list, resolve.

A promotion compares the candidate with what the deployment serves now (a new deployment: the base
model) using a finished eval run of exactly that pair (the one given, else the newest). The gate
(serving.evaluation.gate) must pass; otherwise the promotion is refused with the failing rules and
their figures, unless forced with a reason, which is recorded with the event. A rollback goes back
to the target before the current one (promotions stack up, rollbacks pop them) without a gate:
that target was live before. The API resolves a deployment name on every request, so a change
reaches clients with the next request, with no restart.

    promote(db, "support-v4", to="support", by="ana", base_model_name=settings.served_base_name)
    rollback(db, "support", by="ana")
    resolve_model(db, "support", settings.served_base_name)   # "support-v3"
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from serving.evaluation.gate import GateDecision, GateRules, RuleResult, evaluate_gate
from serving.evaluation.summary import EvalSummary
from store import deployments as dstore
from store import evaluations as ev
from store.adapters import AdapterNotFound, get_adapter
from store.runs import heldout_loss_change


class DeploymentError(ValueError):
    """A deployment change that cannot be made as asked; the message says why."""


class GateRefused(DeploymentError):
    """The gate refused the promotion; `decision.failing` holds the rules and figures."""

    def __init__(self, decision: GateDecision, candidate: str, baseline: str, deployment: str):
        self.decision, self.candidate, self.baseline, self.deployment = decision, candidate, baseline, deployment
        lines = [f"promotion of {candidate} to {deployment!r} refused by the gate (against {baseline}):"]
        lines += [f"  - {r.message}" for r in decision.failing]
        lines.append("fix the candidate, or force it with a reason, which is recorded")
        super().__init__("\n".join(lines))

    @property
    def unevaluated(self) -> bool:
        """Refused because no finished evaluation of the pair exists (each door says how to run one)."""
        return any(r.name == "evaluation" for r in self.decision.failing)


@dataclass(frozen=True)
class DeploymentChange:
    deployment: str
    action: str
    """promote | force | rollback"""
    from_target: str | None
    to_target: str | None
    """Adapter names; None is the base model."""
    event_id: int
    eval_run_id: int | None = None
    decision: GateDecision | None = None


def _shown(target: str | None, base_model_name: str) -> str:
    return target or base_model_name


def gate_for(db, candidate: str, baseline: str, *, rules: GateRules, eval_run_id: int | None = None
             ) -> tuple[GateDecision, int | None]:
    """The gate's decision on `candidate` vs `baseline` (served names) from a finished eval run of that pair."""
    if eval_run_id is not None:
        run = ev.get_eval_run(db, eval_run_id)
        if (run["candidate"], run["baseline"]) != (candidate, baseline):
            raise DeploymentError(f"eval run {eval_run_id} compared {run['candidate']} with {run['baseline']}, "
                                  f"not {candidate} with {baseline}")
        if run["status"] != "done":
            raise DeploymentError(f"eval run {eval_run_id} is {run['status']}, not done: only a finished run "
                                  "can open the gate")
    else:
        run = ev.latest_done_run(db, candidate, baseline)
    if run is None or not run["summary"]:
        missing = RuleResult("evaluation", False, {}, f"no finished evaluation of {candidate} against {baseline}: "
                                                      "evaluate them first")
        return GateDecision(False, [missing]), None
    summary = EvalSummary.from_json(run["summary"])
    cand_loss, base_loss = heldout_losses(db, candidate, baseline)
    cand = replace(summary.candidate, heldout_loss=cand_loss)
    base = replace(summary.baseline, heldout_loss=base_loss)
    return evaluate_gate(rules, cand, base, judge=summary.judge), run["id"]


def heldout_losses(db, candidate: str, baseline: str) -> tuple[float | None, float | None]:
    """(candidate's, baseline's) loss on the candidate's held-out split, when the run measured both.

    A training run logs the held-out loss at its start (its parent's, or the base model's) and at its
    end (the new adapter's) on the same split, so they compare only when `baseline` is that parent.
    """
    try:
        adapter = get_adapter(db, candidate)
    except LookupError:
        return None, None
    parent = get_adapter(db, adapter["parent_id"])["name"] if adapter.get("parent_id") else None
    if adapter.get("run_id") is None:
        return None, None
    change = heldout_loss_change(db, adapter["run_id"])
    is_parent = baseline == parent or (parent is None and baseline != candidate and _is_base(db, baseline))
    if not is_parent or change is None:
        return None, None
    start, end = change
    return end, start


def _is_base(db, name: str) -> bool:
    try:
        get_adapter(db, name)
    except AdapterNotFound:
        return True
    return False


def promote(db, adapter: str, *, to: str, by: str, base_model_name: str, eval_run_id: int | None = None,
            rules: GateRules = GateRules(), force_reason: str | None = None,
            evidence: dict | None = None) -> DeploymentChange:
    """Point deployment `to` at `adapter` (or the base model by its served name) through the gate.

    Raises GateRefused (with the failing rules and figures) unless the gate passes or `force_reason`
    is given; DeploymentError for an unknown or archived adapter, a bad name, or no change.
    `evidence` (e.g. a canary's figures, {"canary": {...}}) is recorded with the gate's decision.
    """
    if force_reason is not None and not force_reason.strip():
        raise DeploymentError("a forced promotion needs a reason: say why the gate is overruled")
    target: str | None = None
    if adapter != base_model_name:
        try:
            row = get_adapter(db, adapter)
        except LookupError as exc:
            raise DeploymentError(str(exc)) from None
        if row["status"] == "archived":
            raise DeploymentError(f"adapter {adapter!r} is archived: restore it before promoting it")
        target = adapter
    current_row = dstore.get_deployment(db, to)
    if current_row is None:
        try:
            dstore.validate_deployment_name(db, to, base_model_name=base_model_name)
        except ValueError as exc:
            raise DeploymentError(str(exc)) from None
    current = current_row["target"] if current_row else None
    if current_row is not None and current == target:
        raise DeploymentError(f"deployment {to!r} already serves {_shown(target, base_model_name)}")
    candidate, baseline = _shown(target, base_model_name), _shown(current, base_model_name)
    decision, run_id = None, None
    if candidate != baseline:  # a new deployment of the base model has nothing to compare with
        decision, run_id = gate_for(db, candidate, baseline, rules=rules, eval_run_id=eval_run_id)
        if not decision.passed and force_reason is None:
            raise GateRefused(decision, candidate, baseline, to)
    action = "force" if decision is not None and not decision.passed else "promote"
    gate = None if decision is None else {**decision.to_json(), "rules": rules.to_json(), "baseline": baseline}
    if evidence:
        gate = {**(gate or {}), **evidence}
    try:
        event = dstore.change_target(db, to, target, action=action, by=by, eval_run_id=run_id,
                                     reason=force_reason.strip() if force_reason else None, gate=gate,
                                     expected_from=current)
    except ValueError as exc:
        raise DeploymentError(str(exc)) from None
    return DeploymentChange(to, action, current, target, event, run_id, decision)


def target_stack(events: list[dict]) -> list[str | None]:
    """The targets a deployment went through that a rollback can return to, oldest first.

    It starts with what the first event replaced (the base model for a new deployment); a promotion
    pushes its target, a rollback pops the current one.
    """
    if not events:
        return []
    stack: list[str | None] = [events[0]["from_target"]]
    for e in events:
        if e["action"] == "rollback":
            if len(stack) > 1:
                stack.pop()
        elif stack[-1] != e["to_target"]:
            stack.append(e["to_target"])
    return stack


def rollback(db, name: str, *, by: str, base_model_name: str | None = None) -> DeploymentChange:
    """Point deployment `name` back at its previous target; DeploymentError when there is none."""
    current_row = dstore.get_deployment(db, name)
    if current_row is None:
        raise DeploymentError(f"no deployment named {name!r} (see `tuneloop deploy list`)")
    stack = target_stack(dstore.deployment_events(db, name))
    if len(stack) < 2:
        raise DeploymentError(f"deployment {name!r} has no earlier target to roll back to")
    previous = stack[-2]
    if previous is not None:
        try:
            if get_adapter(db, previous)["status"] == "archived":
                raise DeploymentError(f"the previous target {previous!r} is archived: restore it first")
        except LookupError as exc:
            raise DeploymentError(str(exc)) from None
    try:
        event = dstore.change_target(db, name, previous, action="rollback", by=by, expected_from=current_row["target"])
    except ValueError as exc:
        raise DeploymentError(str(exc)) from None
    return DeploymentChange(name, "rollback", current_row["target"], previous, event)


def list_deployments(db) -> list[dict]:
    """Every deployment: name, target (None = base model), and its history newest first."""
    return dstore.list_deployments(db)


def resolve_model(db, name: str, base_model_name: str) -> str | None:
    """The served model a deployment name stands for (an adapter or the base model); None if no such deployment."""
    dep = dstore.get_deployment(db, name)
    if dep is None:
        return None
    return dep["target"] or base_model_name

"""Canary: a deployment sends a share of its requests to a second model, and the team compares the two arms.

Which arm answers is a pure function of the deployment, the share and the caller's `user` (sticky:
the same user always lands on the same arm while the share stays), or of the request's own id when
no user is given. Per arm the app shows requests, thumbs-up rate and correction rate with 95%
Wilson intervals, and one action ends the canary or promotes its model: through the same evaluation
gate as any promotion (or forced with a recorded reason), recorded in the deployment's history with the
canary's figures.

    arm = choose_arm("support", 0.1, user="customer-42", request_id=cid)   # "main" | "canary"
    start(db, "support", "support-v5", share=0.1, by="ana", base_model_name=base)
    report(db, "support").arms["canary"].thumbs_up_rate
    promote_canary(db, "support", by="ana", base_model_name=base)   # or end(db, "support")
    .venv/bin/python -m pytest tests/test_canary.py -q
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from serving.deployments import DeploymentChange, promote
from serving.evaluation.gate import GateRules
from store import canaries
from store.adapters import get_adapter
from store.traffic import arm_stats
from store.winrate import wilson_interval

ARMS = ("main", "canary")


class CanaryError(ValueError):
    """A canary change that cannot be made; `field` names what is wrong (share, adapter, deployment)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        super().__init__(reason)


def bucket(deployment: str, key: str) -> float:
    """A number in [0, 1) fixed by (deployment, key): the same key always falls in the same place."""
    digest = hashlib.sha256(f"{deployment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def choose_arm(deployment: str, share: float, *, user: str | None, request_id: str) -> str:
    """'canary' for `share` of requests (of users, when the request names its `user`), else 'main'."""
    if not share or share <= 0:
        return "main"
    key = f"user:{user}" if user else f"request:{request_id}"
    return "canary" if bucket(deployment, key) < share else "main"


def check_share(share: float) -> float:
    if not isinstance(share, (int, float)) or not 0 < share < 1:
        raise CanaryError("share", f"the canary's share must be between 0 and 1 (e.g. 0.1 for 10%), got {share!r}")
    return float(share)


@dataclass(frozen=True)
class ArmReport:
    arm: str
    model: str
    requests: int
    thumbs_up: int
    thumbs_down: int
    corrected: int

    @property
    def thumbs(self) -> int:
        return self.thumbs_up + self.thumbs_down

    @property
    def thumbs_up_rate(self) -> float | None:
        return self.thumbs_up / self.thumbs if self.thumbs else None

    @property
    def thumbs_up_interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.thumbs_up, self.thumbs) if self.thumbs else None

    @property
    def correction_rate(self) -> float | None:
        return self.corrected / self.requests if self.requests else None

    @property
    def correction_interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.corrected, self.requests) if self.requests else None

    def to_json(self) -> dict:
        return {"arm": self.arm, "model": self.model, "requests": self.requests, "thumbs_up": self.thumbs_up,
                "thumbs_down": self.thumbs_down, "corrected": self.corrected,
                "thumbs_up_rate": self.thumbs_up_rate, "thumbs_up_ci": self.thumbs_up_interval,
                "correction_rate": self.correction_rate, "correction_ci": self.correction_interval}


@dataclass(frozen=True)
class CanaryReport:
    deployment: str
    main: str
    canary: str | None
    share: float | None
    started_at: str | None
    arms: dict[str, ArmReport]

    def to_json(self) -> dict:
        return {"deployment": self.deployment, "main": self.main, "canary": self.canary, "share": self.share,
                "started_at": self.started_at, "arms": {k: v.to_json() for k, v in self.arms.items()}}


def rate_text(rate: float | None, ci: tuple[float, float] | None) -> str:
    """'80% (95% CI 49–94%)', or '-' without data."""
    return "-" if rate is None else f"{rate:.0%} (95% CI {ci[0]:.0%}–{ci[1]:.0%})"


def describe_arm(a: ArmReport) -> str:
    """'support-v5: 120 requests, thumbs up 80% (95% CI ...) of 10, corrected 2% (95% CI ...)'."""
    return (f"{a.model}: {a.requests} requests, thumbs up {rate_text(a.thumbs_up_rate, a.thumbs_up_interval)}"
            f" of {a.thumbs}, corrected {rate_text(a.correction_rate, a.correction_interval)}")


def report(db, deployment: str, *, base_model_name: str) -> CanaryReport:
    """Per arm since the canary started (or all the deployment's traffic when none runs)."""
    config = canaries.traffic_config(db, deployment)
    stats = arm_stats(db, deployment, since=config["canary_started_at"])
    main = config["target"] or base_model_name
    arms = {arm: ArmReport(arm, main if arm == "main" else (config["canary_target"] or "-"), s["requests"],
                           s["thumbs_up"], s["thumbs_down"], s["corrected"])
            for arm, s in stats.items() if arm in ARMS}
    return CanaryReport(deployment, main, config["canary_target"], config["canary_share"],
                        config["canary_started_at"], arms)


def start(db, deployment: str, model: str, *, share: float, by: str, base_model_name: str) -> str:
    """Start (or change) deployment's canary: `share` of its requests go to `model`."""
    share = check_share(share)
    try:
        config = canaries.traffic_config(db, deployment)
    except LookupError as exc:
        raise CanaryError("deployment", str(exc)) from None
    if model != base_model_name:
        try:
            row = get_adapter(db, model)
        except LookupError as exc:
            raise CanaryError("adapter", str(exc)) from None
        if row["status"] == "archived":
            raise CanaryError("adapter", f"adapter {model!r} is archived: restore it first")
    if model == (config["target"] or base_model_name):
        raise CanaryError("adapter", f"deployment {deployment!r} already serves {model}: a canary needs another model")
    return canaries.start_canary(db, deployment, model, share=share, by=by)


def end(db, deployment: str) -> None:
    """Stop the canary; every request goes to the deployment's model again."""
    try:
        if canaries.traffic_config(db, deployment)["canary_target"] is None:
            raise CanaryError("deployment", f"deployment {deployment!r} has no canary running")
        canaries.end_canary(db, deployment)
    except LookupError as exc:
        raise CanaryError("deployment", str(exc)) from None


def promote_canary(db, deployment: str, *, by: str, base_model_name: str, force_reason: str | None = None,
                   eval_run_id: int | None = None, rules: GateRules = GateRules()) -> DeploymentChange:
    """Point the deployment at its canary's model through the same gate as `tuneloop deploy promote`
    (serving.deployments.promote), then end the canary.

    The canary's thumbs are not an evaluation: the gate reads the newest finished eval run of the canary's
    model against the deployment's (or `eval_run_id`). When it refuses, GateRefused is raised and nothing
    changes, unless `force_reason` is given (recorded, action "force"). The canary's figures per arm are
    recorded with the event either way.
    """
    try:
        config = canaries.traffic_config(db, deployment)
    except LookupError as exc:
        raise CanaryError("deployment", str(exc)) from None
    if config["canary_target"] is None:
        raise CanaryError("deployment", f"deployment {deployment!r} has no canary running")
    figures = report(db, deployment, base_model_name=base_model_name).to_json()
    change = promote(db, config["canary_target"], to=deployment, by=by, base_model_name=base_model_name,
                     eval_run_id=eval_run_id, rules=rules, force_reason=force_reason, evidence={"canary": figures})
    canaries.end_canary(db, deployment)
    return change

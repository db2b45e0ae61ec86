"""The canary's arm choice and per-arm report (serving/canary.py)."""

from __future__ import annotations

import pytest

from serving.canary import ArmReport, CanaryError, bucket, check_share, choose_arm, describe_arm


def test_arm_is_a_pure_sticky_function_of_user_and_deployment():
    assert choose_arm("support", 0.3, user="u1", request_id="a") == choose_arm("support", 0.3, user="u1", request_id="b")
    assert 0 <= bucket("support", "u1") < 1
    # another deployment shuffles users independently
    picks = [(choose_arm("a", 0.5, user=f"u{i}", request_id=""), choose_arm("b", 0.5, user=f"u{i}", request_id=""))
             for i in range(200)]
    assert any(x != y for x, y in picks)


@pytest.mark.parametrize("share", [0.05, 0.1, 0.5])
def test_share_is_kept_within_a_stated_tolerance(share):
    n = 20_000
    canary = sum(choose_arm("support", share, user=None, request_id=f"r{i}") == "canary" for i in range(n))
    assert abs(canary / n - share) < 0.015  # 4+ standard deviations at n = 20,000


def test_raising_the_share_keeps_earlier_canary_users_on_the_canary():
    users = [f"u{i}" for i in range(500)]
    small = {u for u in users if choose_arm("d", 0.1, user=u, request_id="") == "canary"}
    large = {u for u in users if choose_arm("d", 0.3, user=u, request_id="") == "canary"}
    assert small <= large


def test_no_share_no_canary_and_shares_are_checked():
    assert choose_arm("d", 0, user="u", request_id="r") == "main"
    for bad in (0, 1, -0.1, 2, "x"):
        with pytest.raises(CanaryError):
            check_share(bad)


def test_arm_report_rates_and_intervals():
    a = ArmReport("canary", "v2", requests=50, thumbs_up=8, thumbs_down=2, corrected=5)
    assert a.thumbs_up_rate == 0.8 and a.correction_rate == 0.1
    lo, hi = a.thumbs_up_interval
    assert lo < 0.8 < hi
    assert "50 requests" in describe_arm(a) and "95% CI" in describe_arm(a)
    empty = ArmReport("main", "v1", 0, 0, 0, 0)
    assert empty.thumbs_up_rate is None and "thumbs up -" in describe_arm(empty)


def test_promoting_the_canary_goes_through_the_evaluation_gate(db):
    from serving.canary import promote_canary, start
    from serving.deployments import DeploymentError, GateRefused
    from store.deployments import change_target, deployment_events, get_deployment
    from test_eval_store import BASE, adapter, done_run

    for name in ("good", "better", "worse"):
        adapter(db, name)
    change_target(db, "support", "good", action="promote", by="t")
    start(db, "support", "worse", share=0.1, by="ana", base_model_name=BASE)
    done_run(db, "worse", "good", wins=1, losses=9, cand_check=0.2, base_check=1.0)
    with pytest.raises(GateRefused, match="judge"):
        promote_canary(db, "support", by="ana", base_model_name=BASE)
    assert get_deployment(db, "support")["target"] == "good" and get_deployment(db, "support")["canary_target"]
    with pytest.raises(DeploymentError, match="needs a reason"):
        promote_canary(db, "support", by="ana", base_model_name=BASE, force_reason=" ")
    start(db, "support", "better", share=0.1, by="ana", base_model_name=BASE)
    run = done_run(db, "better", "good")
    change = promote_canary(db, "support", by="ana", base_model_name=BASE)
    assert (change.action, change.to_target, change.eval_run_id) == ("promote", "better", run)
    assert get_deployment(db, "support")["canary_target"] is None
    event = deployment_events(db, "support")[-1]
    assert event["gate"]["passed"] and event["gate"]["canary"]["canary"] == "better" and event["eval_run_id"] == run

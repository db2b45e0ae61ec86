"""The Evaluate tab in headless Chromium, with a scripted vLLM (FakeVllm) answering the real eval runner.

    flock /tmp/tuneloop-heavy.lock nice .venv/bin/python -m pytest tests/test_browser_evaluate.py -q   # about a minute

Drives what a support lead does: build an eval set by hand with a named check, run an evaluation
and watch its progress, read the per-item view, promote the adapter to a deployment through the
gate, and see the gate refuse a worse adapter (its stored evaluation fails the named check) with
the failing rule and its figures. Screenshots: test-artifacts/browser/evaluate/.
"""

from __future__ import annotations

import pytest

from browser_support import Shots, browser, choose, open_app, require_chromium, serve, tab, type_custom, wait_text
from fake_vllm import FakeVllm
from serving.evaluation.scoring import SideScores
from serving.evaluation.summary import ItemResult, summarize
from serving_helpers import free_port
from store import evaluations as ev
from store.adapters import register_adapter
from store.db import connect
from store.deployments import get_deployment

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BASE = "smollm2-135m-instruct"
RULE = "states the 30-day refund rule"


def seed(db, tmp_path) -> None:
    """Two adapters, a bigger eval set to watch progress on, and a stored evaluation in which
    support-v2 fails the named check that support-v1 passes and loses the judge's verdict (so the gate
    must refuse it)."""
    v1 = register_adapter(db, name="support-v1", family="support", version=1, base_model="b", path=str(tmp_path),
                          rank=8, run_id=None, dataset_version_id=None, parent_id=None)
    register_adapter(db, name="support-v2", family="support", version=2, base_model="b", path=str(tmp_path), rank=8,
                     run_id=None, dataset_version_id=None, parent_id=v1)
    items = [ev.NewEvalItem([{"role": "user", "content": f"Can I return order {i} after {i + 10} days?"}],
                            "Yes, refunds are accepted within 30 days.") for i in range(8)]
    ev.create_eval_set_version(db, "returns", items, source_kind="manual", created_by="seed")
    seeded = ev.create_eval_set_version(db, "refund-rule", items[:1], source_kind="manual", created_by="seed")
    first = next(ev.iter_eval_items(db, seeded.id))
    result = ItemResult(first["id"], 0, "No refunds, sorry.", "Yes, within 30 days.", "stop", "stop",
                        SideScores(rouge_l=0.1, checks={RULE: False}, words=3, chars=18),
                        SideScores(rouge_l=0.9, checks={RULE: True}, words=4, chars=20), "baseline",
                        "B states the 30-day rule; A invents a no-refund policy.")
    run_id = ev.create_eval_run(db, candidate="support-v2", baseline="support-v1", set_version_id=seeded.id,
                                created_by="seed")
    ev.mark_eval_running(db, run_id, total=1)
    ev.record_item_result(db, run_id, result.to_row(), done=1)
    ev.finish_eval_run(db, run_id, "done", summary=summarize([result], judge_model="seed-judge").to_json())


@pytest.fixture
def app(data_dir, tmp_path, monkeypatch):
    from fastapi import FastAPI

    from ui.web.app import mount_ui
    from ui.web.context import AppContext
    from ui_fakes import FakeServer, FakeTrainer, app_settings

    require_chromium()
    with FakeVllm(free_port(), served_name=BASE) as vllm:
        vllm.answer_delay = 0.4  # slow enough to see the progress move
        monkeypatch.setenv("TUNELOOP_VLLM_URL", vllm.url)
        settings = app_settings(tmp_path, monkeypatch)
        server = FakeServer(settings)
        with connect(settings.db_path) as db:
            seed(db, tmp_path)
        for name in ("support-v1", "support-v2"):
            vllm.adapters[name] = str(tmp_path)
            server.loaded.add(name)
        ctx = AppContext(settings=settings, server=server, trainer=FakeTrainer())
        with serve(mount_ui(FastAPI(), ctx), free_port()) as url:
            yield {"url": url, "settings": settings, "vllm": vllm}


def test_build_a_set_run_an_evaluation_read_items_promote_and_see_the_gate_refuse(app):
    shots = Shots("evaluate")
    errors: list[str] = []
    with browser() as b:
        page = open_app(b, app["url"], errors=errors)
        tab(page, "Evaluate")
        shots(page, "empty evaluate tab")

        # 1. an eval set written by hand, with a named check
        tab(page, "Eval sets")
        page.locator("#ev-set-name textarea").fill("refunds")
        page.locator("#ev-question textarea").fill("Can I still get a refund after two weeks?")
        page.locator("#ev-reference textarea").fill("Yes: refunds are accepted within 30 days of delivery.")
        page.locator("#ev-check-name-0 textarea").fill(RULE)
        page.locator("#ev-check-value-0 textarea").fill("30 days; 30-day")
        page.locator("#ev-build").click()
        wait_text(page, "#ev-build-status", r"refunds@1")
        wait_text(page, "#ev-set-items", "Can I still get a refund after two weeks")
        assert RULE in page.locator("#ev-set-items").inner_text()
        assert "refunds" in page.locator("#ev-sets").inner_text()
        shots(page, "eval set built")

        # 2. an evaluation with progress, on the seeded set of 8 items
        tab(page, "Run and results")
        choose(page, "ev-candidate", "support-v1")
        choose(page, "ev-set", "returns@1")
        page.locator("#ev-run").click()
        wait_text(page, "#ev-progress", r"of 8 items answered|Waiting to start")
        shots(page, "evaluation running")
        wait_text(page, "#ev-progress", r"Finished: 8 of 8 items", timeout=60)
        wait_text(page, "#ev-status", r"finished")
        assert "no judge was used" in page.locator("#ev-status").inner_text()
        figures = page.locator("#ev-figures").inner_text()
        assert "ROUGE-L" in figures and "cut off" in figures

        # 3. the per-item view: prompt, reference, both answers
        items = page.locator("#ev-items").inner_text()
        assert "Can I return order 0 after 10 days?" in items
        assert "refunds are accepted within 30 days" in items
        assert "support-v1: Can I return order 0 after 10 days?" in items
        assert f"{BASE}: Can I return order 0 after 10 days?" in items
        page.locator("#ev-items").scroll_into_view_if_needed()
        shots(page, "per-item view")
        assert "support-v1" in page.locator("#ev-runs").inner_text()

        # 4. promote through the gate (the run just made is support-v1 against the base model)
        tab(page, "Deployments")
        choose(page, "ev-promote-adapter", "support-v1")
        type_custom(page, "ev-promote-to", "support")
        page.locator("#ev-promote").click()
        wait_text(page, "#ev-gate", r"The gate passed support-v1")
        wait_text(page, "#ev-deployments", r"support-v1")
        shots(page, "promoted")

        # 5. a worse adapter is refused, with the failing rule and its figures
        choose(page, "ev-promote-adapter", "support-v2")
        page.locator("#ev-promote").click()
        text = wait_text(page, "#ev-gate", r"The gate refused support-v2")
        assert "failed" in text and f"pass rate of '{RULE}' 0% vs baseline 100%" in text
        shots(page, "gate refused")

        tab(page, "Leaderboard and progress")
        choose(page, "ev-lineage", "Deployment support")
        wait_text(page, "#ev-curve-note", r"round 1: support-v1")
        board = wait_text(page, "#ev-board", r"support-v1")
        assert board.index("support-v1") < board.index("support-v2")  # the judge preferred v1 on the seeded item
        assert "1 judge verdict" in page.locator("#ev-board-note").inner_text()
        shots(page, "learning curve")
    assert errors == []
    with connect(app["settings"].db_path) as db:
        assert get_deployment(db, "support")["target"] == "support-v1"
        runs = ev.list_eval_runs(db, candidate="support-v1")
        assert runs[0]["status"] == "done" and runs[0]["created_by"].startswith("guest-")

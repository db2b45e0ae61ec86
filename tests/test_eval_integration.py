"""Evaluation and deployments on the real stack: vLLM CPU on the default model, the session's adapter.

    .venv/bin/python -m pytest tests/test_eval_integration.py -q      # about 3 minutes on 2 cores

The base model is evaluated against itself with the same vLLM as judge (a weak judge, but the real
OpenAI protocol: whatever it answers is parsed or counted as unparsable, never a crash); then a
deployment name answers through the app's /v1 API with the promoted adapter, and after a rollback
with the base model, with no restart.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from helpers_adapters import PROMPT
from serving.api import create_api
from serving.deployments import promote, resolve_model, rollback
from serving.evaluation.embedding import Embedder, prepare_embedding_model
from serving.evaluation.judge import JudgeConfig
from serving.evaluation.runner import EvalSettings, execute_eval_run, plan_eval_run
from serving.vllm_args import server_url
from store import evaluations as ev
from store.db import connect
from store.evaluations import NewEvalItem
from vllm_session import SESSION_KEY  # the fixture vllm_stack (the session's vLLM) is conftest.py's

pytestmark = pytest.mark.slow


def test_base_against_itself_with_the_same_vllm_as_judge(vllm_stack, tmp_path_factory):
    s, base = vllm_stack["settings"], vllm_stack["base"]
    embedder = Embedder(prepare_embedding_model(tmp_path_factory.mktemp("emb") / "minilm"))
    with connect(s.db_path) as db:
        ev.create_eval_set_version(db, "refunds", [
            NewEvalItem([{"role": "user", "content": "Can I return my jacket?"}],
                        "Yes, you can return it within 30 days for a full refund.",
                        [{"name": "states the 30-day refund rule", "kind": "must_mention", "value": "30 days"}]),
            NewEvalItem([{"role": "user", "content": "How long do refunds take?"}], None),
        ], source_kind="manual")
        run_id = plan_eval_run(db, candidate=base, baseline=base, eval_set="refunds",
                               judge=JudgeConfig(server_url(s), base, max_tokens=48),
                               settings=EvalSettings(max_tokens=32, concurrency=2))
    progress = []
    out = execute_eval_run(s.db_path, run_id, base_url=server_url(s), embedder=embedder,
                           progress=lambda done, total, r: progress.append(done))
    assert out.status == "done", out.error
    assert progress == [1, 2]
    # Greedy answers of one model to one prompt are the same text.
    assert all(r.candidate_answer == r.baseline_answer and r.candidate_answer for r in out.results)
    assert all(r.verdict in ("candidate", "baseline", "tie", "unparsable") for r in out.results)
    judge = out.summary.judge
    assert judge.used and judge.errors == 0
    assert judge.wins + judge.losses + judge.ties + judge.unparsable == 2
    assert out.summary.candidate.mean_similarity is not None
    assert out.summary.candidate.mean_similarity == pytest.approx(out.summary.baseline.mean_similarity)
    with connect(s.db_path) as db:
        run = ev.get_eval_run(db, run_id)
        assert run["status"] == "done" and run["summary"]["items"] == 2
        assert all(r["reason"] is not None for r in ev.item_results(db, run_id))


def test_a_deployment_answers_with_the_promoted_adapter_and_after_rollback_with_the_previous(vllm_stack):
    s, base, adapter = vllm_stack["settings"], vllm_stack["base"], vllm_stack["adapter"]
    with connect(s.db_path) as db:
        promote(db, adapter, to="support", by="it", base_model_name=base, force_reason="integration test: no eval")
        assert resolve_model(db, "support", base) == adapter
    body = {"model": "support", "messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": 24}
    auth = {"Authorization": f"Bearer {SESSION_KEY}"}
    with TestClient(create_api(s)) as client:
        assert "support" in {m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]}
        r = client.post("/v1/chat/completions", headers=auth, json=body)
        assert r.status_code == 200 and r.headers["x-tuneloop-model"] == adapter
        assert "Zorblax" in r.json()["choices"][0]["message"]["content"]
        with connect(s.db_path) as db:
            rollback(db, "support", by="it")
        r = client.post("/v1/chat/completions", headers=auth, json=body)  # same app, no restart
        assert r.status_code == 200 and r.headers["x-tuneloop-model"] == base
        direct = client.post("/v1/chat/completions", headers=auth, json={**body, "model": base})
        assert r.json()["choices"][0]["message"]["content"] == direct.json()["choices"][0]["message"]["content"]

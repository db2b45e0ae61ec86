"""A merged export through the real stack: `tuneloop adapters export --format merged` of a real LoRA adapter on
the default model, served by vLLM as a base model of its own, answers as the adapter taught it (issue 14).

    flock /tmp/tuneloop-heavy.lock .venv/bin/python -m pytest tests/test_export_served.py -q   # about 2 minutes

tests/test_training_export.py checks the merged weights against the adapter's logits in transformers; this
one checks that vLLM, which the app and the /v1 API serve with, loads the folder and answers from it.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from helpers_adapters import PROMPT, register, train_tiny_adapter
from serving_helpers import free_port
from store.db import connect

pytestmark = pytest.mark.slow


def test_a_merged_export_is_served_by_vllm_and_answers_as_the_adapter(default_model_dir, tmp_path, monkeypatch):
    from serving.chat import ChatClient, SamplingParams
    from serving.service import Serving
    from store.settings import Settings
    from ui.cli import app

    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(default_model_dir))
    s = Settings(_env_file=None)
    adapter = train_tiny_adapter(default_model_dir, s.adapters_dir / "zorblax-v1", rank=8)
    with connect(s.db_path) as db:
        register(db, s, "zorblax-v1", adapter)
    res = CliRunner().invoke(app, ["adapters", "export", "zorblax-v1", "--format", "merged",
                                   "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    merged = json.loads(res.output[res.output.index("{"):])["path"]

    served = Settings(_env_file=None, data_dir=tmp_path / "serve", base_model=merged,
                      base_model_name="zorblax-merged", vllm_port=free_port())
    serving = Serving(served, poll_s=1.0)
    serving.start()
    try:
        client = ChatClient(serving.url)
        answer = client.complete("zorblax-merged", [{"role": "user", "content": PROMPT}],
                                 SamplingParams(temperature=0.0, max_tokens=24))
        client.close()
    finally:
        serving.stop()
    assert "Zorblax" in answer, answer  # what the adapter says; the base model never does (tests/helpers_adapters.py)

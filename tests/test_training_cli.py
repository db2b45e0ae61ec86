"""`tuneloop train` / `tuneloop runs` end to end: real detached runs on the default model, then the
database is opened to check what they wrote (progress, metrics, adapter lineage, files).

Run: .venv/bin/python -m pytest tests/test_training_cli.py -q   (about a minute on 2 cores)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from store import runs
from store.adapters import get_adapter
from store.db import connect
from training_support import REFUND_QUESTIONS, add_dataset, refund_conversation
from ui.cli import app

cli = CliRunner()


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_bad_options_are_refused_with_the_field_and_exit_code_2(settings):
    with connect(settings.db_path) as db:
        add_dataset(db, "Refund Policy", [refund_conversation(q) for q in REFUND_QUESTIONS[:10]])
    result = cli.invoke(app, ["train", "--dataset", "Refund Policy", "--rank", "64", "--json"])
    assert result.exit_code == 2
    assert "--rank: 64 is above the server's max_lora_rank 16" in json.loads(result.output)["error"]
    result = cli.invoke(app, ["train", "--dataset", "Refund Policy", "--eval-fraction", "0.7"])
    assert result.exit_code == 2 and "--eval-fraction: must be in [0, 0.5)" in result.output
    result = cli.invoke(app, ["train", "--dataset", "Missing"])
    assert result.exit_code == 2 and "not found" in result.output
    assert _json(cli.invoke(app, ["runs", "--json"])) == []
    result = cli.invoke(app, ["runs", "cancel", "999"])
    assert result.exit_code == 1 and "no run 999" in result.output


@pytest.mark.slow
def test_train_wait_registers_a_servable_adapter_and_continues_from_it(settings, default_model_dir):
    with connect(settings.db_path) as db:
        ref = add_dataset(db, "Refund Policy", [refund_conversation(q) for q in REFUND_QUESTIONS[:10]])
    common = ["--dataset", "Refund Policy", "--preset", "quick", "--max-seq-len", "256", "--batch-size", "2",
              "--eval-fraction", "0.2", "--eval-every", "3", "--lr", "1e-3", "--wait", "--json"]
    first = _json(cli.invoke(app, ["train", "--max-steps", "3", *common]))
    assert first["status"] == "completed", first
    assert first["adapter"] == "refund-policy-v1"
    assert (first["step"], first["total_steps"]) == (3, 3)

    with connect(settings.db_path) as db:
        run = runs.get_run(db, first["id"])
        by_name = {}
        for m in runs.run_metrics(db, first["id"]):
            by_name.setdefault(m["name"], []).append(m["step"])
        adapter = get_adapter(db, "refund-policy-v1")
    # Progress: loss every step, eval loss at the start and at the interval, rate and time left.
    assert by_name["loss"] == [1, 2, 3]
    assert by_name["eval_loss"] == [0, 3]
    for name in ("learning_rate", "grad_norm", "tokens_per_second", "eta_seconds"):
        assert by_name[name] == [1, 2, 3], name
    # Lineage and config.
    assert adapter["base_model"] == str(default_model_dir)
    assert (adapter["run_id"], adapter["dataset_version_id"], adapter["parent_id"]) == (first["id"], ref.id, None)
    assert (adapter["family"], adapter["version"], adapter["rank"]) == ("refund-policy", 1, 8)
    assert adapter["meta"]["config"] == run["config"]
    assert json.loads((Path(run["run_dir"]) / "config.json").read_text()) == run["config"]
    assert "step 3/3" in (Path(run["run_dir"]) / "train.log").read_text()
    files = json.loads((Path(adapter["path"]) / "adapter_config.json").read_text())
    assert Path(adapter["path"]) == settings.adapters_dir / "refund-policy-v1"
    assert files["modules_to_save"] is None and files["base_model_name_or_path"] == str(default_model_dir)
    assert first["metrics"]["eval_loss"] < first["metrics"]["eval_loss_start"]

    # Continue from it: the parent's weights are the starting point (same held-out split, same loss).
    second = _json(cli.invoke(app, ["train", "--max-steps", "1", "--from-adapter", "refund-policy-v1", *common]))
    assert second["status"] == "completed" and second["adapter"] == "refund-policy-v2"
    assert second["from_adapter"] == "refund-policy-v1"
    assert second["metrics"]["eval_loss_start"] == pytest.approx(first["metrics"]["eval_loss"], rel=1e-3)
    with connect(settings.db_path) as db:
        child = get_adapter(db, "refund-policy-v2")
    assert child["parent_id"] == adapter["id"] and child["family"] == "refund-policy"

    listed = _json(cli.invoke(app, ["runs", "--json"]))
    assert [(r["id"], r["status"], r["adapter"]) for r in listed] == [
        (second["id"], "completed", "refund-policy-v2"), (first["id"], "completed", "refund-policy-v1")]
    shown = cli.invoke(app, ["runs", "show", str(first["id"])])
    assert shown.exit_code == 0 and "refund-policy-v1" in shown.output and "step 3/3" in shown.output

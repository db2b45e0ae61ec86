"""Data, Train, Feedback and Adapters tab handlers on a real store, and the app mounted on FastAPI.

Run: .venv/bin/python -m pytest tests/test_web_tabs.py -q
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from store import chats, ratings
from store import runs as run_store
from store.adapters import register_adapter
from store.db import connect
from ui.web.tabs import adapters as tab_adapters
from ui.web.tabs import data as tab_data
from ui.web.tabs import feedback as tab_feedback
from ui.web.tabs import train as tab_train
from ui_fakes import NoProgress, scripted_ctx

BASE = "smollm2-135m-instruct"
FIXTURES = Path(__file__).parent / "fixtures" / "imports"


@pytest.fixture
def ctx(data_dir, tmp_path, monkeypatch):
    return scripted_ctx(tmp_path, monkeypatch)


def upload(tmp_path, name, text):
    p = tmp_path / "upload" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return str(p)


TRANSCRIPT = """Customer: Where is my order 1234?
Agent: It left our warehouse today and arrives on Friday.

Customer: Can I return shoes after 30 days?
Agent: Returns are accepted within 60 days with the receipt.

Agent: Hello?
"""
NO_OPTS = ["auto", "", "", "", ""]


def test_preview_shows_detected_format_and_first_conversations_as_chats(ctx, tmp_path):
    path = upload(tmp_path, "chats.txt", TRANSCRIPT)
    summary, html = tab_data.preview(ctx, [path], *NO_OPTS)
    assert "chats.txt" in summary and "transcript" in summary
    assert "Where is my order 1234?" in html and 'class="tl-msg tl-assistant"' in html


def test_preview_escapes_imported_text(ctx, tmp_path):
    path = upload(tmp_path, "x.txt", "Customer: <script>alert(1)</script>\nAgent: <b>hi</b>\n")
    _, html = tab_data.preview(ctx, [path], *NO_OPTS)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_import_reports_counts_and_every_reject_and_lists_the_version(ctx, tmp_path):
    path = upload(tmp_path, "chats.txt", TRANSCRIPT)
    report, rejects, table, picker, browse = tab_data.run_import(ctx, [path], "support", *NO_OPTS,
                                                                 progress=NoProgress())
    assert "support@1" in report and "2 imported" in report and "1 rejected" in report
    assert rejects["visible"] is True
    rejects = rejects["value"]
    assert list(rejects.columns) == tab_data.REJECT_COLUMNS and len(rejects) == 1
    assert rejects.iloc[0]["File"] == "chats.txt" and rejects.iloc[0]["Where"]
    row = table.iloc[0]
    assert (row["Dataset"], row["Version"], row["Conversations"]) == ("support", 1, 2)
    assert "chats.txt (transcript)" in row["Made from"]
    assert picker["value"] == "support" and browse["value"] == "support@1"
    info, html, page = tab_data.browse(ctx, "support@1", 1)
    assert "1–2 of 2" in info and "Returns are accepted within 60 days" in html


def test_importing_again_makes_a_new_version_that_extends_the_last(ctx, tmp_path):
    tab_data.run_import(ctx, [upload(tmp_path, "a.txt", TRANSCRIPT)], "support", *NO_OPTS, progress=NoProgress())
    more = "Customer: Do you ship to Canada?\nAgent: Yes, in 5 to 7 days.\n"
    report, _, table, _, _ = tab_data.run_import(ctx, [upload(tmp_path, "b.txt", more)], "support", *NO_OPTS,
                                                 progress=NoProgress())
    assert "support@2" in report
    assert table.iloc[0]["Extends"] == "support@1" and table.iloc[0]["Conversations"] == 3


def test_a_bad_file_is_reported_and_the_good_one_still_imported(ctx, tmp_path):
    good = upload(tmp_path, "good.txt", TRANSCRIPT)
    bad = upload(tmp_path, "bad.jsonl", "{not json at all\n")
    report, rejects, table, *_ = tab_data.run_import(ctx, [bad, good], "support", *NO_OPTS, progress=NoProgress())
    assert "Imported 1 of 2 file(s)" in report and "bad.jsonl" in report
    assert len(table) == 1


def test_import_without_files_or_dataset_explains_what_to_do(ctx, tmp_path):
    with pytest.raises(gr.Error, match="Add at least one file"):
        tab_data.run_import(ctx, [], "support", *NO_OPTS, progress=NoProgress())
    with pytest.raises(gr.Error, match="Choose the dataset"):
        tab_data.run_import(ctx, [upload(tmp_path, "a.txt", TRANSCRIPT)], " ", *NO_OPTS, progress=NoProgress())
    with pytest.raises(gr.Error, match="Speaker roles"):
        tab_data.run_import(ctx, [upload(tmp_path, "a.txt", TRANSCRIPT)], "s", "auto", "bot", "", "", "",
                            progress=NoProgress())


def test_fixture_files_all_preview(ctx):
    needs_options = ("tickets_de.txt", "email_threads.jsonl", "dialogs_mapped.json")  # see test_importers_formats
    files = sorted(str(p) for p in FIXTURES.iterdir() if p.name not in ("expected.json", *needs_options))
    summary, html = tab_data.preview(ctx, files, *NO_OPTS)
    assert "cannot be read" not in summary, summary
    assert html.count('class="tl-conv"') >= len(files)


def test_transcript_labels_and_separator_from_the_import_options(ctx):
    path = str(FIXTURES / "tickets_de.txt")
    summary, _ = tab_data.preview(ctx, [path], *NO_OPTS)
    assert "format was not recognised" in summary and "speaker labels" in summary and "--" not in summary
    summary, html = tab_data.preview(ctx, [path], "auto", "", "", "Kunde=user, Mitarbeiter=assistant",
                                     "=== Ticket")
    assert "transcript" in summary and "Passworts" in html


# ------------------------------------------------------------------ train

def _run(db, ctx, status="running", step=3, total=10):
    run_id = run_store.create_run(db, config={"dataset": "support@1", "preset": "quick"}, method="sft",
                                  dataset_version_id=None, base_model=ctx.settings.base_model_path,
                                  parent_adapter_id=None, runs_dir=ctx.settings.runs_dir)
    db["runs"].update(run_id, {"status": status, "step": step, "total_steps": total,
                               "started_at": "2026-08-01T10:00:00.000+00:00"})
    for s in range(1, step + 1):
        run_store.add_metrics(db, run_id, s, {"loss": 3.0 - 0.2 * s})
    run_store.add_metrics(db, run_id, step, {"eval_loss": 2.9}, split="eval")
    run_store.add_metrics(db, run_id, step, {"tokens_per_second": 150.0, "eta_seconds": 95.0}, split="progress")
    return run_id


def test_poll_shows_the_running_run_from_the_store(ctx):
    with connect(ctx.settings.db_path) as db:
        _run(db, ctx, status="completed", step=10)
        run_id = _run(db, ctx)
    summary, bar, stats, plot, log, cancel, table, sig, resume = tab_train.poll(ctx, tab_train.LATEST, None)
    assert f"Run {run_id}" in summary and "training" in summary
    assert "Step 3 of 10 (30%)" in bar and "1 min 35 s left" in bar
    assert "150" in stats and "trained tokens/s" in stats and "held-out loss **2.900**" in stats
    assert "last-step loss **2.400**" in stats
    assert plot["x_lim"] == [0, 20]  # the whole run, whole steps (a short axis gets half-step ticks)
    plot = plot["value"]
    assert list(plot.columns) == ["step", "loss", "curve"]
    assert sorted(set(plot["curve"])) == ["held-out", "training"] and plot["loss"].notna().sum() == 4
    assert cancel["interactive"] is True
    assert len(table) == 2 and table.iloc[0]["Run"] == run_id
    # Nothing new: the chart is not re-sent (no flicker); new metrics: it is.
    assert tab_train.poll(ctx, tab_train.LATEST, sig)[3] is not plot and isinstance(
        tab_train.poll(ctx, tab_train.LATEST, sig)[3], type(gr.skip()))
    with connect(ctx.settings.db_path) as db:
        run_store.add_metrics(db, run_id, 4, {"loss": 2.1})
    assert tab_train.poll(ctx, tab_train.LATEST, sig)[3]["value"]["loss"].notna().sum() == 5


def test_the_empty_loss_chart_starts_at_step_0_and_a_long_run_spans_all_its_steps(ctx):
    assert tab_train.poll(ctx, tab_train.LATEST, None)[3]["x_lim"] == [0, 20]  # used to draw 0 to -1
    assert tab_train.step_axis(118, [{"step": 3}]) == [0, 118]


def test_start_passes_the_form_to_the_trainer_and_explains_config_errors(ctx):
    from training.config import ConfigError

    base = ctx.settings.base_model_path
    tab_train.start(ctx, "support@1", base, "quick", 1, 0, 3e-4, 8, 4, 1, 256, 0.1, "")
    opts = ctx.trainer.started[-1]
    assert opts == {"dataset": "support@1", "preset": "quick", "from_adapter": None, "name": None,
                    "learning_rate": 3e-4, "batch_size": 4, "grad_accum": 1, "max_seq_len": 256,
                    "eval_fraction": 0.1, "epochs": 1.0, "lora_rank": 8, "method": "sft"}  # alpha: training.config's rule
    tab_train.start(ctx, "support@1", "support-v1", "quick", 1, 5, 3e-4, 8, 4, 1, 256, 0.1, "support-v2", "sft+dpo")
    opts = ctx.trainer.started[-1]
    assert opts["from_adapter"] == "support-v1" and opts["max_steps"] == 5 and "lora_rank" not in opts
    assert opts["method"] == "sft+dpo"
    ctx.trainer.start = lambda **o: (_ for _ in ()).throw(ConfigError("max_seq_len", "9999 is above 8192"))
    with pytest.raises(gr.Error, match="Max length: 9999 is above 8192"):
        tab_train.start(ctx, "support@1", base, "quick", 1, 0, 3e-4, 8, 4, 1, 9999, 0.1, "")
    with pytest.raises(gr.Error, match="Pick the dataset"):
        tab_train.start(ctx, None, base, "quick", 1, 0, 3e-4, 8, 4, 1, 256, 0.1, "")


def test_cancel_asks_the_trainer(ctx):
    with connect(ctx.settings.db_path) as db:
        run_id = _run(db, ctx)
    tab_train.cancel(ctx, str(run_id))
    assert ctx.trainer.cancelled == [run_id]


def test_presets_fill_the_form():
    from training.config import PRESETS

    for name, preset in PRESETS.items():
        values = tab_train.preset_values(name)
        assert values["learning_rate"] == preset["learning_rate"] and values["lora_rank"] == preset["lora_rank"]


# ------------------------------------------------------------------ feedback and adapters

def test_feedback_and_adapters_show_counts_and_win_rates(ctx, tmp_path):
    with connect(ctx.settings.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=ctx.settings.base_model_path,
                         path=str(tmp_path), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
        for value in ("b", "b", "b", "a", "tie"):
            turn = chats.record_ab_turn(db, session_id=None, user="m", question="q", parent_a=None, answer_a="x",
                                        model_a=BASE, parent_b=None, answer_b="y", model_b="support-v1",
                                        settings={}, blind=True)
            ratings.rate_turn(db, ab_turn_id=turn.ab_turn_id, value=value, user="m")
        ratings.rate_message(db, kind="thumb", message_id=turn.side_b.answer_id, value="up", user="m")
    ctx.server.loaded.add("support-v1")
    summary, counts, wins, recent = tab_feedback.refresh(ctx)
    assert "5 A/B vote(s)" in summary
    row = wins.iloc[0]
    assert row["Adapter"] == "support-v1" and (row["Wins"], row["Losses"], row["Ties"]) == (3, 1, 1)
    assert row["Win rate over base (95% interval)"].startswith("75% (95% CI")
    assert counts.set_index("Model").loc["support-v1", "Thumbs up"] == 1
    assert len(recent) == 6
    table, picker, note = tab_adapters.refresh(ctx)
    arow = table.iloc[0]
    assert arow["Adapter"] == "support-v1" and arow["Serving"] == "serving" and arow["A/B win rate"].startswith("75%")
    table, picker, status = tab_adapters.act(ctx, "archive", "support-v1", NoProgress())
    assert table.iloc[0]["Serving"] == "archived" and "nothing was deleted" in status
    assert Path(tmp_path).exists()
    with pytest.raises(gr.Error, match="Pick an adapter"):
        tab_adapters.act(ctx, "load", None, NoProgress())


# ------------------------------------------------------------------ the app

def test_app_mounts_next_to_the_api_and_serves_the_page(ctx):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ui.web.app import mount_ui

    api = FastAPI()

    @api.get("/v1/models")
    def models():
        return {"data": []}

    app = mount_ui(api, ctx)
    with TestClient(app) as client:
        assert client.get("/v1/models").json() == {"data": []}
        page = client.get("/")
        assert page.status_code == 200 and "tuneloop" in page.text
        config = client.get("/config").json()
        labels = {c.get("props", {}).get("label") for c in config["components"]}
        assert {"Data", "Train", "Chat", "Compare A/B", "Feedback", "Adapters"} <= labels


def test_with_users_every_page_needs_a_login(ctx, monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ui.web.app import mount_ui

    ctx.settings = ctx.settings.model_copy(update={"users": "maria:secret1,tom:secret2"})
    with TestClient(mount_ui(FastAPI(), ctx)) as client:
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": "maria", "password": "wrong"}).status_code == 400
        assert client.post("/login", data={"username": "maria", "password": "secret1"}).status_code == 200
        assert client.get("/config").status_code == 200


def test_startup_note_binds_to_loopback_without_logins(ctx):
    from ui.web.app import startup_note

    host, note = startup_note(ctx.settings.model_copy(update={"host": "0.0.0.0"}))
    assert host == "127.0.0.1" and "127.0.0.1 only" in note and "TUNELOOP_USERS" in note
    host, note = startup_note(ctx.settings.model_copy(update={"host": "0.0.0.0", "users": "a:b"}))
    assert host == "0.0.0.0" and "logins required" in note


def test_adapters_tab_shows_the_run_time_training_wrote():
    """Regression: the tab read metrics["train_runtime"] while training writes train_runtime_s, so the time never showed."""
    from training.results import RunMetrics

    stored = RunMetrics(steps=10, total_steps=10, train_loss=1.234, eval_loss=2.5, train_runtime_s=95.0).to_dict()
    text = tab_adapters.results_text(RunMetrics.from_dict(stored))
    assert text == "mean training loss 1.234, held-out loss 2.500, took 1 min 35 s"


def test_run_metrics_refuse_a_misspelt_field():
    from training.results import RunMetrics

    with pytest.raises(AttributeError):
        RunMetrics().train_runtime  # noqa: B018 - the old, wrong name

"""The Feedback tab: what everyone's ratings say, per model, each adapter's A/B win rate, and the next round.

Ratings are given where the answers are (thumbs and corrections in Chat and Compare, verdicts in
Compare); this tab reads them all back from the store, so every user sees everyone's ratings after
a refresh.

    .venv/bin/python -m pytest tests/test_web_tabs.py -q
"""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from store import ratings
from ui.text import short_time
from ui.web.context import AppContext
from ui.web.tabs import round as tab_round
from store.winrate import WinRate

COUNT_COLUMNS = ["Model", "Thumbs up", "Thumbs down", "Corrections", "A/B wins", "A/B losses", "Ties", "Both bad"]
WIN_COLUMNS = ["Adapter", "Win rate over base (95% interval)", "Wins", "Losses", "Ties", "Both bad", "So far"]
RECENT_COLUMNS = ["When (UTC)", "Who", "Kind", "Rating", "Model(s)", "Question", "Answer rated"]
VALUE_LABELS = {"up": "thumbs up", "down": "thumbs down", "a": "A better", "b": "B better", "tie": "tie", "both_bad": "both bad"}


def win_rates(ctx: AppContext, db) -> dict[str, WinRate]:
    return {name: WinRate(**rec) for name, rec in ratings.ab_records(db, ctx.base_model).items()}


def win_rate_rows(records: dict[str, WinRate]) -> list[list]:
    rows = []
    for name, wr in sorted(records.items()):
        rate = wr.describe() if wr.decisive else "–"
        rows.append([name, rate, wr.wins, wr.losses, wr.ties, wr.both_bad, wr.verdict()])
    return rows


def count_rows(counts: list[dict]) -> list[list]:
    return [[c["model"], c["thumbs_up"], c["thumbs_down"], c["corrections"], c["ab_wins"], c["ab_losses"],
             c["ab_ties"], c["ab_both_bad"]] for c in counts]


def recent_rows(rows: list[dict]) -> list[list]:
    out = []
    for r in rows:
        models = json.loads(r["models"] or "{}")
        if r["kind"] == "verdict":
            model = f"A: {models.get('a', '?')} · B: {models.get('b', '?')}"
        else:
            model = r["model"] or models.get("model", "")
        value = VALUE_LABELS.get(r["value"], r["value"]) if r["kind"] != "correction" else r["value"]
        answer = r["answer"] or ""
        out.append([short_time(r["updated_at"]), r["user"], r["kind"], _clip(value, 160), model,
                    _clip(question_of(r.get("context")), 160), _clip(answer, 160)])
    return out


def question_of(context: str | None) -> str:
    """The question the rated answer answered: the last user message of the rating's stored context."""
    try:
        messages = json.loads(context or "[]")
    except ValueError:
        return ""
    return next((m.get("content") or "" for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
                "")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def refresh(ctx: AppContext):
    with ctx.db() as db:
        counts = ratings.counts_per_model(db)
        records = win_rates(ctx, db)
        recent = ratings.recent_ratings(db, limit=50)
    total = sum(c["thumbs_up"] + c["thumbs_down"] + c["corrections"] for c in counts)
    votes = sum(wr.votes for wr in records.values())
    summary = (f"{total} thumb(s) and correction(s), {votes} A/B vote(s) against the base model "
               f"**{ctx.base_model}**." if total or votes else
               "No ratings yet: rate answers in the Chat and Compare tabs.")
    return (summary, pd.DataFrame(count_rows(counts), columns=COUNT_COLUMNS),
            pd.DataFrame(win_rate_rows(records), columns=WIN_COLUMNS),
            pd.DataFrame(recent_rows(recent), columns=RECENT_COLUMNS))


def render(ctx: AppContext, anon_id):
    gr.Markdown("Thumbs, corrections and A/B votes from everyone using this app. A win rate counts only the "
                "votes where one answer was better (ties and “both bad” are listed beside it); the interval "
                "is where the true rate lies with 95% confidence, so it narrows as votes come in.")
    with gr.Row():
        summary = gr.Markdown(elem_id="fb-summary")
        refresh_btn = gr.Button("Refresh", size="sm", scale=0, min_width=100, elem_id="fb-refresh")
    round_refresh, round_inputs, round_outputs = tab_round.render(ctx, anon_id)
    gr.Markdown("### Adapters against the base model (A/B votes)")
    wins = gr.Dataframe(pd.DataFrame([], columns=WIN_COLUMNS), interactive=False, wrap=True, max_height=260,
                        elem_id="fb-winrates", elem_classes=["tl-table"], column_widths=["18%", "30%", "8%", "8%", "8%", "8%", "20%"])
    gr.Markdown("### Ratings per model")
    counts = gr.Dataframe(pd.DataFrame([], columns=COUNT_COLUMNS), interactive=False, wrap=True, max_height=260,
                          elem_id="fb-counts", elem_classes=["tl-table"])
    gr.Markdown("### Latest ratings")
    recent = gr.Dataframe(pd.DataFrame([], columns=RECENT_COLUMNS), interactive=False, wrap=True, max_height=360,
                          elem_id="fb-recent", elem_classes=["tl-table"], column_widths=["11%", "10%", "7%", "16%", "14%", "20%", "22%"])
    outputs = [summary, counts, wins, recent]
    refresh_btn.click(lambda: refresh(ctx), None, outputs, api_name="feedback_refresh")
    return (lambda *current: (*refresh(ctx), round_refresh(*current))), round_inputs, outputs + round_outputs

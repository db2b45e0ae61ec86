"""The Adapters tab: every adapter with its lineage (round by round), results, serving status and A/B win rate;
load, unload, archive (stops serving it, deletes nothing) and restore.

Serving status comes from the model server (serving.service.Serving.models); the rest from the store.

    .venv/bin/python -m pytest tests/test_web_tabs.py -q
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

from store import ratings
from store.adapters import adapter_overview
from ui.web.context import AppContext, fail, unexpected
from training.results import RunMetrics
from ui.text import duration, short_time
from store.winrate import WinRate

COLUMNS = ["Adapter", "Version", "Base model", "Trained on", "Continued from", "Results", "Serving", "A/B win rate",
           "Created (UTC)"]
STATUS_LABELS = {"loaded": "serving", "available": "not loaded", "failed": "failed to load", "archived": "archived",
                 "down": "server down"}


def results_text(metrics: RunMetrics) -> str:
    """'train loss 1.234, held-out loss 2.500, took 1 min 35 s' for the Results column."""
    parts = []
    if metrics.train_loss is not None:
        parts.append(f"train loss {metrics.train_loss:.3f}")
    if metrics.eval_loss is not None:
        parts.append(f"held-out loss {metrics.eval_loss:.3f}")
    if metrics.train_runtime_s:
        parts.append(f"took {duration(metrics.train_runtime_s)}")
    return ", ".join(parts)


def adapter_rows(ctx: AppContext) -> tuple[list[list], list[str], str]:
    """Table rows, the adapter names (for the picker) and a note about the server."""
    note = ""
    try:
        statuses = ctx.server.models(include_archived=True)
    except Exception as exc:  # noqa: BLE001
        statuses, note = [], f"The model server cannot be asked ({exc}); serving status is unknown."
    with ctx.db() as db:
        extra = adapter_overview(db)
        records = {name: WinRate(**rec) for name, rec in ratings.ab_records(db, ctx.base_model).items()}
    rows, names = [], []
    for st in statuses:
        if st.kind == "base":
            if st.status != "loaded":
                note = note or "The model server is starting or down: adapters cannot be loaded until it is up."
            continue
        a = st.adapter or {}
        x = extra.get(a.get("id"), {})
        metrics = RunMetrics.from_dict(x.get("metrics"))
        status = STATUS_LABELS.get(st.status, st.status)
        if st.error:
            status += f": {st.error}"
        if not st.registered:
            status += " (not in the registry)"
        wr = records.get(st.name)
        rows.append([st.name, a.get("version") or "", Path(a.get("base_model") or "").name or a.get("base_model", ""),
                     x.get("trained_on") or "", x.get("parent") or "–", results_text(metrics), status,
                     f"{wr.short()}, {wr.decisive} of {wr.votes} votes" if wr and wr.decisive else
                     (wr.describe() if wr else "no votes yet"), short_time(a.get("created_at"))])
        names.append(st.name)
    return rows, names, note


def refresh(ctx: AppContext, selected: str | None = None):
    rows, names, note = adapter_rows(ctx)
    if not rows:
        note = note or "No adapters yet: train one in the Train tab."
    value = selected if selected in names else (names[0] if names else None)
    return pd.DataFrame(rows, columns=COLUMNS), gr.update(choices=names, value=value), note


def lineage(ctx: AppContext, name: str | None) -> str:
    """The adapter's rounds back to the first upload: data, ratings (who, when), and A/B against its parent."""
    from store.adapters import AdapterNotFound
    from store.lineage import adapter_lineage
    from ui.text import format_lineage

    if not name:
        return ""
    try:
        with ctx.db() as db:
            return format_lineage(name, adapter_lineage(db, name, base_name=ctx.base_model))
    except AdapterNotFound:
        return f"{name} is not in the registry (the server has it, but no training run made it here)."


def act(ctx: AppContext, verb: str, name: str | None, progress=gr.Progress()):
    from serving.adapters import AdapterError, ServerUnavailable

    if not name:
        raise fail("Pick an adapter first.")
    progress(0.2, desc=f"{verb.capitalize()} {name}…")
    try:
        result = getattr(ctx.server, verb)(name)
    except (AdapterError, ServerUnavailable) as exc:
        raise fail(f"Could not {verb} {html.escape(name)}: {html.escape(str(exc))}")
    except Exception as exc:  # noqa: BLE001
        raise unexpected(f"{verb.capitalize()} {name}", exc)
    done = {"load": "is now served: pick it in Chat or Compare",
            "unload": "is no longer served (it stays in the list; load it again any time)" if result is not False
            else "was not loaded",
            "archive": "is archived: no longer served or offered, and nothing was deleted (restore brings it back)",
            "restore": "is restored and loaded"}[verb]
    gr.Info(f"{name} {done}.")
    return (*refresh(ctx, name)[:2], f"**{html.escape(name)}** {done}.")


def render(ctx: AppContext):
    gr.Markdown("Every adapter training produced. Serving ones can be picked in Chat and Compare. Archiving "
                "stops serving an adapter and hides it from chat; its files, lineage and ratings are kept.")
    table = gr.Dataframe(pd.DataFrame([], columns=COLUMNS), interactive=False, wrap=True, max_height=400,
                         elem_id="ad-table", elem_classes=["tl-table"],
                         column_widths=["13%", "8%", "12%", "10%", "10%", "14%", "10%", "14%", "9%"])
    with gr.Row():
        picked = gr.Dropdown([], label="Adapter", scale=3, elem_id="ad-pick")
        load = gr.Button("Load", scale=0, min_width=90, elem_id="ad-load")
        unload = gr.Button("Unload", scale=0, min_width=90, elem_id="ad-unload")
        archive = gr.Button("Archive", variant="stop", scale=0, min_width=90, elem_id="ad-archive")
        restore = gr.Button("Restore", scale=0, min_width=90, elem_id="ad-restore")
        refresh_btn = gr.Button("Refresh", size="sm", scale=0, min_width=90)
    status = gr.Markdown(elem_id="ad-status")
    with gr.Accordion("Lineage: what the picked adapter learned from, round by round", open=False,
                      elem_id="ad-lineage-box"):
        lineage_text = gr.Code(language=None, lines=12, max_lines=40, interactive=False, show_label=False,
                               elem_id="ad-lineage")
    picked.change(lambda name: lineage(ctx, name), [picked], [lineage_text], show_progress="hidden")

    def make(verb: str):
        def handler(name, progress=gr.Progress()):
            return act(ctx, verb, name, progress)
        return handler

    for verb, btn in (("load", load), ("unload", unload), ("archive", archive), ("restore", restore)):
        btn.click(make(verb), [picked], [table, picked, status], api_name=f"adapter_{verb}", concurrency_limit=1,
                  concurrency_id="adapter-admin")
    refresh_btn.click(lambda name: refresh(ctx, name), [picked], [table, picked, status], show_progress="hidden")
    return (lambda name: refresh(ctx, name)), [picked], [table, picked, status]

"""The Adapters tab: every adapter with its lineage (round by round), results, serving status and A/B win rate;
load, unload, archive (stops serving it, deletes nothing) and restore; download it as a zip, or export it as a
merged model or an Ollama folder (training.export).

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
from ui.text import HELD_OUT_LOSS, MEAN_TRAIN_LOSS, duration, short_time, speed_text
from store.winrate import WinRate

COLUMNS = ["Adapter", "Version", "Base model", "Trained on", "Continued from", "Results", "Serving", "A/B win rate",
           "Created (UTC)"]
STATUS_LABELS = {"loaded": "serving", "available": "not loaded", "failed": "failed to load", "archived": "archived",
                 "down": "server down"}


def results_text(metrics: RunMetrics) -> str:
    """'mean training loss 1.234, held-out loss 2.500, 112 trained tokens/s, took 1 min 35 s' (Results column)."""
    parts = []
    if metrics.train_loss is not None:
        parts.append(f"{MEAN_TRAIN_LOSS} {metrics.train_loss:.3f}")
    if metrics.eval_loss is not None:
        parts.append(f"{HELD_OUT_LOSS} {metrics.eval_loss:.3f}")
    if metrics.tokens_per_second:
        parts.append(speed_text(metrics.tokens_per_second))
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


def replicas_markdown(settings) -> str:
    """The replicas' health (serving.fleet) as a small table, for the Replicas panel."""
    from serving.fleet import fleet_health

    try:
        healths = fleet_health(settings)
    except ValueError as exc:
        return f"TUNELOOP_REPLICA_URLS: {html.escape(str(exc).partition(': ')[2])}"
    lines = ["| Server | State | Models loaded | Running | Waiting |", "|---|---|---|---|---|"]
    for h in healths:
        state = "up" if h.up else f"**down**: {html.escape(h.error)}"
        models = html.escape(", ".join(h.models)) or "–"
        count = lambda n: "–" if n is None else str(n)  # noqa: E731
        lines.append(f"| {h.role} {html.escape(h.url)} | {state} | {models} | {count(h.running)} | {count(h.waiting)} |")
    return "\n".join(lines) + ("\n\nAdapters are published to the adapter store and each replica loads one the first "
                               "time it is asked for it: Load and Unload are not needed here.")


def exports_dir(ctx: AppContext) -> Path:
    return ctx.settings.data_dir / "exports"


def zip_for_download(ctx: AppContext, name: str | None):
    """The picked adapter's PEFT folder as a zip for the download button (made when an adapter is picked)."""
    from store.adapters import AdapterNotFound, get_adapter
    from training.export import ExportError, export_adapter

    if not name:
        return gr.update(value=None, interactive=False)
    try:
        with ctx.db() as db:
            adapter = get_adapter(db, name)
        path = export_adapter(adapter, "zip", exports_dir(ctx))
    except (AdapterNotFound, ExportError):  # not in the registry, or its files are gone: nothing to download
        return gr.update(value=None, interactive=False)
    return gr.update(value=str(path), interactive=True)


def export(ctx: AppContext, fmt: str, name: str | None, progress=gr.Progress()) -> str:
    """Write a merged model or an Ollama folder under the data directory; returns what to tell the user."""
    from store.adapters import AdapterNotFound, get_adapter
    from training.export import ExportError, export_adapter

    if not name:
        raise fail("Pick an adapter first.")
    what = {"merged": "merged model", "ollama": "Ollama folder"}[fmt]
    target = exports_dir(ctx) / f"{name}-{fmt}"
    if target.exists():
        return f"The {what} of **{html.escape(name)}** is already at `{target}`."
    progress(0.1, desc=f"Exporting {name} as a {what}…")
    try:
        with ctx.db() as db:
            adapter = get_adapter(db, name)
        path = export_adapter(adapter, fmt, exports_dir(ctx))
    except AdapterNotFound:
        raise fail(f"{html.escape(name)} is not in the registry, so there is nothing to export.")
    except ExportError as exc:
        raise fail(f"Could not export {html.escape(name)} as a {what}: {html.escape(exc.reason)}.")
    except Exception as exc:  # noqa: BLE001
        raise unexpected(f"Exporting {name}", exc)
    if fmt == "ollama":
        return (f"Ollama folder of **{html.escape(name)}** written to `{path}`. On the machine that runs Ollama: "
                f"`ollama create {html.escape(name)} -f {path / 'Modelfile'}` (the Modelfile points at the base "
                "model's folder on this server).")
    return (f"Merged model of **{html.escape(name)}** written to `{path}`: the base model with the adapter folded in "
            "(safetensors and tokenizer), loadable by transformers and vLLM like any model.")


GENERATION_LABELS = {"temperature": "Temperature", "max_tokens": "Max answer length",
                     "system_prompt": "System prompt"}


def generation_fields(ctx: AppContext, name: str | None):
    """The picked adapter's generation defaults for the form: (temperature, max tokens, system prompt)."""
    from serving.generation import defaults_for

    with ctx.db() as db:
        d = defaults_for(db, name)
    return d.temperature, d.max_tokens, d.system_prompt


def save_generation(ctx: AppContext, name: str | None, temperature, max_tokens, system: str, user: str = "") -> str:
    from serving.generation import GenerationDefaultError, store_defaults

    if not name:
        raise fail("Pick an adapter first.")
    try:
        with ctx.db() as db:
            d = store_defaults(db, name, by=user, temperature=float(temperature), max_tokens=int(max_tokens),
                               system_prompt=system or "")
    except GenerationDefaultError as exc:
        raise fail(f"{GENERATION_LABELS[exc.field]} {html.escape(exc.reason)}.")
    gr.Info(f"Saved {name}'s generation defaults.")
    return (f"**{html.escape(name)}** now answers at temperature {d.temperature:g}, up to {d.max_tokens} tokens"
            + (", with its system prompt" if d.system_prompt else "") + ", in Chat, Compare and the /v1 API "
            "(where a client does not set them).")


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
    with gr.Row():
        download = gr.DownloadButton("Download adapter (.zip)", size="sm", scale=0, min_width=200, interactive=False,
                                     elem_id="ad-download")
        merged_btn = gr.Button("Export merged model", size="sm", scale=0, min_width=180, elem_id="ad-export-merged")
        ollama_btn = gr.Button("Export for Ollama", size="sm", scale=0, min_width=160, elem_id="ad-export-ollama")
    status = gr.Markdown(elem_id="ad-status")
    with gr.Accordion("Lineage: what the picked adapter learned from, round by round", open=False,
                      elem_id="ad-lineage-box"):
        lineage_text = gr.Code(language=None, lines=12, max_lines=40, interactive=False, show_label=False,
                               elem_id="ad-lineage")
    picked.change(lambda name: lineage(ctx, name), [picked], [lineage_text], show_progress="hidden")
    with gr.Accordion("Generation defaults: how the picked adapter answers unless told otherwise", open=False,
                      elem_id="ad-generation-box"):
        gr.Markdown("Chat and Compare start from these when the adapter is picked, and the /v1 API uses them when "
                    "a client does not set them, so the adapter answers alike everywhere.", elem_classes=["tl-hint"])
        with gr.Row():
            gen_temperature = gr.Slider(0, 2, step=0.05, label="Temperature", elem_id="ad-gen-temperature",
                                        info="0 = always the most likely words; 0.7 usual; above 1 erratic.")
            gen_max_tokens = gr.Slider(16, 2048, step=16, label="Max answer length (tokens)",
                                       elem_id="ad-gen-max-tokens")
        gen_system = gr.Textbox(label="System prompt", lines=2, elem_id="ad-gen-system",
                                placeholder="You are a friendly support agent for ACME. Answer briefly.")
        with gr.Row():
            gen_save = gr.Button("Save defaults", size="sm", scale=0, min_width=140, elem_id="ad-gen-save")
            gen_note = gr.Markdown(elem_id="ad-gen-note")
    picked.change(lambda name: generation_fields(ctx, name), [picked], [gen_temperature, gen_max_tokens, gen_system],
                  show_progress="hidden")

    def save_gen(name, t, m, sp, request: gr.Request):
        return save_generation(ctx, name, t, m, sp, getattr(request, "username", None) or "")

    gen_save.click(save_gen, [picked, gen_temperature, gen_max_tokens, gen_system], [gen_note],
                   api_name="adapter_generation_defaults")
    picked.change(lambda name: zip_for_download(ctx, name), [picked], [download], show_progress="hidden")

    def make_export(fmt: str):
        def handler(name, progress=gr.Progress()):
            return export(ctx, fmt, name, progress)
        return handler

    for fmt, btn in (("merged", merged_btn), ("ollama", ollama_btn)):
        btn.click(make_export(fmt), [picked], [status], api_name=f"adapter_export_{fmt}", concurrency_limit=1,
                  concurrency_id="adapter-export")
    from serving.fleet import is_fleet

    if is_fleet(ctx.settings):  # serving from several vLLM replicas (docs/scaling-out.md)
        with gr.Accordion("Replicas: the vLLM servers answering chat and the API", open=True, elem_id="ad-replicas-box"):
            replicas_md = gr.Markdown(lambda: replicas_markdown(ctx.settings), elem_id="ad-replicas")
            check = gr.Button("Check replicas", size="sm", elem_id="ad-replicas-check")
        check.click(lambda: replicas_markdown(ctx.settings), None, [replicas_md], show_progress="hidden")

    def make(verb: str):
        def handler(name, progress=gr.Progress()):
            return act(ctx, verb, name, progress)
        return handler

    for verb, btn in (("load", load), ("unload", unload), ("archive", archive), ("restore", restore)):
        btn.click(make(verb), [picked], [table, picked, status], api_name=f"adapter_{verb}", concurrency_limit=1,
                  concurrency_id="adapter-admin")
    refresh_btn.click(lambda name: refresh(ctx, name), [picked], [table, picked, status], show_progress="hidden")
    return (lambda name: refresh(ctx, name)), [picked], [table, picked, status]

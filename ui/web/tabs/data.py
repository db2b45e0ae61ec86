"""The Data tab: upload conversation logs, preview them as chats, import them, browse datasets.

Each uploaded file is imported on its own (training.ingest.import_file, one transaction per file):
a file that fails leaves nothing behind, and the others are still imported; the report says which.

    .venv/bin/python -m pytest tests/test_web_tabs.py -q
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

from store.datasets import (DatasetNotFound, iter_version_conversations, list_datasets, resolve_version,
                            version_conversation_count)
from ui.web.context import AppContext, fail, unexpected
from ui.text import short_time
from ui.web.html import conversations_html

def esc(text: str) -> str:
    return html.escape(str(text), quote=False)


PREVIEW_CONVERSATIONS = 3  # per file
BROWSE_PAGE = 5
FILE_TYPES = [".jsonl", ".json", ".csv", ".txt", ".tsv", ".ndjson", ".log", ".md"]
REJECT_COLUMNS = ["File", "Where", "Problem"]
DATASET_COLUMNS = ["Dataset", "Version", "Conversations", "Made by", "Extends", "Made from", "Created (UTC)"]


def format_choices() -> list[tuple[str, str]]:
    from training.importers import FORMATS
    from training.importers.model import FORMAT_TITLES

    return [("Detect automatically", "auto")] + [(FORMAT_TITLES.get(f, f), f) for f in FORMATS]


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """'bot=assistant, Kunde=user' (commas or lines) -> {'bot': 'assistant', 'Kunde': 'user'}; ValueError if bad."""
    from training.importers import parse_pairs as parse_items

    return parse_items(filter(None, (p.strip() for p in (text or "").replace("\n", ",").split(","))), what)


def build_options(settings, fmt: str, role_map: str, csv_columns: str, labels: str, separator: str):
    from training.importers import ImportOptions

    try:
        options = ImportOptions(
            format=fmt or "auto", role_map=parse_pairs(role_map, "Speaker roles"),
            csv_columns=parse_pairs(csv_columns, "CSV columns"),
            transcript_labels=parse_pairs(labels, "Transcript labels"),
            transcript_separator=(separator or None), max_messages=settings.max_conversation_messages,
            max_chars=settings.max_conversation_chars,
        )
    except ValueError as exc:
        raise fail(f"{exc}. Fix it under “Import options” and try again.")
    problems = options.problems()
    if problems:
        raise fail("Import options: " + "; ".join(problems) + ".")
    return options


OPTION_LABELS = {"format": "Format", "csv_columns": "CSV columns", "transcript_labels": "Transcript labels"}


def _options_hint(exc: Exception) -> str:
    """Where in this app the option that fixes an import error is (the error names the field)."""
    label = OPTION_LABELS.get(getattr(exc, "field", None) or "")
    if label:
        return f" *(Open “Import options” and set “{label}”; the preview updates.)*"
    return ""


def _paths(files) -> list[Path]:
    out = []
    for f in files or []:
        p = getattr(f, "name", f)
        out.append(Path(p))
    return out


# ------------------------------------------------------------------ handlers

def preview(ctx: AppContext, files, fmt, role_map, csv_columns, labels, separator):
    """Detected format and the first conversations of each uploaded file."""
    from training.importers import Conversation, ImportFileError, Reject, open_import

    paths = _paths(files)
    if not paths:
        return "Drop one or more conversation log files above to see what they hold.", conversations_html([], "")
    options = build_options(ctx.settings, fmt, role_map, csv_columns, labels, separator)
    lines, items = [], []
    for path in paths:
        try:
            stream = open_import(path, options)
            shown = rejected = 0
            for item in stream:
                if isinstance(item, Conversation):
                    items.append((f"{path.name} · {item.location}", item.messages))
                    shown += 1
                elif isinstance(item, Reject):
                    rejected += 1
                if shown >= PREVIEW_CONVERSATIONS:
                    break
            close = getattr(stream, "close", None)
            if close:
                close()
            note = f", {rejected} record(s) rejected among the first ones" if rejected else ""
            lines.append(f"- **{esc(path.name)}**: {esc(stream.format)} "
                         f"({esc(stream.format_reason)}), encoding {esc(stream.encoding)}{note}")
        except ImportFileError as exc:
            lines.append(f"- **{esc(path.name)}**: cannot be read: {esc(str(exc))}{_options_hint(exc)}")
        except Exception as exc:  # noqa: BLE001
            raise unexpected(f"Reading {path.name}", exc)
    summary = "**Detected**\n\n" + "\n".join(lines)
    return summary, conversations_html(items, "No conversation could be read from these files yet.")


def run_import(ctx: AppContext, files, dataset, fmt, role_map, csv_columns, labels, separator,
               progress=gr.Progress()):
    """Import every file into `dataset`; returns the report, the rejects table and fresh lists."""
    from training.importers import ImportFileError
    from training.ingest import NothingToImport, import_file
    from store.datasets import validate_dataset_name

    paths = _paths(files)
    if not paths:
        raise fail("Add at least one file first: drag it onto the upload box or click it to choose.")
    dataset = (dataset or "").strip()
    if not dataset:
        raise fail("Choose the dataset to import into: pick an existing one or type a new name.")
    try:
        dataset = validate_dataset_name(dataset)
    except ValueError as exc:
        raise fail(f"{exc}.")
    options = build_options(ctx.settings, fmt, role_map, csv_columns, labels, separator)
    lines, rejects = [], []
    ok = 0
    for i, path in enumerate(paths):
        progress((i, len(paths)), desc=f"Importing {path.name}", unit="files")

        def on_progress(n, _name=path.name):
            progress((i, len(paths)), desc=f"Importing {_name}: {n:,} records read", unit="files")

        try:
            with ctx.db() as db:
                report = import_file(db, path, dataset, options, on_progress=on_progress)
            ok += 1
            lines.append(
                f"- **{esc(path.name)}** ({esc(report.format)}) → **{esc(report.version)}**: "
                f"{report.imported} imported, {report.rejected} rejected, {report.duplicates} duplicate(s) in the "
                f"file, {report.already_in_dataset} already in the dataset"
                + (f", {len(report.warnings)} warning(s)" if report.warnings else ""))
        except NothingToImport as exc:
            report = exc.report
            lines.append(f"- **{esc(path.name)}**: nothing imported ({report.rejected} rejected, "
                         f"{report.duplicates} duplicate(s), {report.already_in_dataset} already in the dataset); "
                         "no version was made")
        except ImportFileError as exc:
            lines.append(f"- **{esc(path.name)}**: not imported: {esc(str(exc))}{_options_hint(exc)}")
            continue
        except Exception as exc:  # noqa: BLE001
            raise unexpected(f"Importing {path.name}", exc)
        rejects += [[path.name, r["location"], r["reason"]] for r in report.rejects]
        rejects += [[path.name, w["location"], "warning (imported anyway): " + w["message"]]
                    for w in report.warnings]
    progress((len(paths), len(paths)), desc="Done")
    head = (f"**Imported {ok} of {len(paths)} file(s) into “{esc(dataset)}”.**" if ok else
            f"**Nothing was imported into “{esc(dataset)}”.**")
    if ok:
        gr.Info(f"Imported {ok} file(s) into {dataset}.")
    else:
        gr.Warning("Nothing was imported: see the report below for why.")
    report_md = head + "\n\n" + "\n".join(lines)
    if rejects:
        report_md += f"\n\n{len(rejects)} record(s) rejected or flagged, listed below with where and why."
    table = gr.update(value=pd.DataFrame(rejects, columns=REJECT_COLUMNS), visible=bool(rejects))
    return (report_md, table, *refresh_lists(ctx, dataset))


def dataset_rows(datasets: list[dict]) -> list[list]:
    rows = []
    for ds in datasets:
        for v in ds["versions"]:
            made_from = []
            for src in v["sources"]:
                if src.get("file"):
                    made_from.append(f"{src['file']} ({src.get('format', '?')})")
                elif src.get("kind") == "ratings" or "ratings" in src:
                    made_from.append(f"{src.get('count', src.get('ratings', '?'))} ratings")
                else:
                    made_from.append(", ".join(f"{k}={val}" for k, val in src.items()))
            rows.append([ds["name"], v["version"], v["conversations"], v["kind"], v["parent"] or "",
                         "; ".join(made_from), short_time(v["created_at"])])
    return rows


def refresh_lists(ctx: AppContext, selected: str | None = None):
    """The datasets table, the dataset picker and the version picker, fresh from the store."""
    with ctx.db() as db:
        datasets = list_datasets(db)
    names = [d["name"] for d in datasets]
    refs = [v["ref"] for d in datasets for v in d["versions"]]
    table = pd.DataFrame(dataset_rows(datasets), columns=DATASET_COLUMNS)
    picker = gr.update(choices=names, value=selected if selected else None)
    browse = gr.update(choices=refs, value=(refs[0] if refs and not selected else
                                           next((r for r in refs if r.startswith(f"{selected}@")), None)))
    return table, picker, browse


def browse(ctx: AppContext, ref: str | None, page: float | None):
    if not ref:
        return "Pick a dataset version to read its conversations.", conversations_html([], ""), gr.update()
    with ctx.db() as db:
        try:
            version = resolve_version(db, ref)
        except (DatasetNotFound, ValueError) as exc:
            raise fail(f"{exc}. Refresh the list and pick another version.")
        total = version_conversation_count(db, version.id)
        pages = max(1, -(-total // BROWSE_PAGE))
        page = min(max(1, int(page or 1)), pages)
        convs = list(iter_version_conversations(db, version.id, limit=BROWSE_PAGE, offset=(page - 1) * BROWSE_PAGE))
    first = (page - 1) * BROWSE_PAGE
    items = [(f"#{first + i + 1} · {c['source']} {c['meta'].get('location', '')}", c["messages"])
             for i, c in enumerate(convs)]
    info = f"**{esc(ref)}**: conversations {first + 1}–{first + len(convs)} of {total} (page {page} of {pages})"
    return info, conversations_html(items, "This version has no conversations."), gr.update(maximum=pages, value=page)


# ------------------------------------------------------------------ layout

def render(ctx: AppContext):
    """Build the tab inside the current Blocks; returns (refresh function, its outputs) for page load."""
    gr.Markdown("Upload conversation logs (OpenAI JSONL, ShareGPT, Alpaca, CSV, plain transcripts, Zendesk or "
                "Intercom exports), check what was detected, and import them into a dataset. Each import "
                "makes a new version; earlier versions never change.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320):
            files = gr.File(label="Conversation logs (drop files here or click to choose)", file_count="multiple",
                            file_types=FILE_TYPES, height=150, elem_id="data-files")
            with gr.Accordion("Import options", open=False):
                fmt = gr.Dropdown(format_choices(), value="auto", label="Format",
                                  info="Leave on “Detect automatically” unless detection picks the wrong one.")
                role_map = gr.Textbox(label="Speaker roles", placeholder="bot=assistant, Kunde=user",
                                      info="Extra speaker names and whose side they are on (user or assistant).")
                csv_columns = gr.Textbox(label="CSV columns", placeholder="text=body, speaker=author",
                                         info="Which CSV column holds conversation, order, speaker, text "
                                              "(or question, answer); missing ones are detected.")
                labels = gr.Textbox(label="Transcript labels", placeholder="Kunde=user, Mitarbeiter=assistant",
                                    info="Speaker labels in plain-text transcripts, added to Customer/Agent.")
                separator = gr.Textbox(label="Transcript separator", placeholder="---",
                                       info="A line that separates transcript conversations (default: blank lines).")
            dataset = gr.Dropdown([], label="Import into dataset", allow_custom_value=True, elem_id="data-dataset",
                                  info="Pick an existing dataset to add a new version, or type a new name.")
            import_btn = gr.Button("Import", variant="primary", elem_id="data-import")
        with gr.Column(scale=7, min_width=360):
            detected = gr.Markdown("Drop one or more conversation log files to see what they hold.",
                                   elem_id="data-detected")
            preview_html = gr.HTML(conversations_html([], ""), elem_classes=["tl-scroll"], label="Preview")
    report = gr.Markdown(elem_id="data-report")
    rejects = gr.Dataframe(pd.DataFrame([], columns=REJECT_COLUMNS), label="Rejected records and warnings",
                           wrap=True, max_height=300, interactive=False, elem_id="data-rejects", visible=False,
                           elem_classes=["tl-table"],
                           column_widths=["20%", "20%", "60%"])
    gr.Markdown("### Datasets")
    with gr.Row():
        refresh_btn = gr.Button("Refresh", size="sm", scale=0, min_width=100)
    datasets_table = gr.Dataframe(pd.DataFrame([], columns=DATASET_COLUMNS), wrap=True, max_height=320,
                                  interactive=False, elem_id="data-datasets", elem_classes=["tl-table"],
                                  column_widths=["16%", "8%", "12%", "10%", "12%", "27%", "15%"])
    gr.Markdown("### Browse a version")
    with gr.Row():
        version = gr.Dropdown([], label="Dataset version", scale=3, elem_id="data-browse-version")
        page = gr.Number(1, label="Page", minimum=1, maximum=1, precision=0, scale=1, min_width=100)
    browse_info = gr.Markdown()
    browse_html = gr.HTML(elem_classes=["tl-scroll"])

    opts = [fmt, role_map, csv_columns, labels, separator]
    files.change(lambda *a: preview(ctx, *a), [files, *opts], [detected, preview_html], api_name="preview_files")
    for option in opts:  # a changed option shows its effect on the preview at once
        (option.change if option is fmt else option.blur)(lambda *a: preview(ctx, *a), [files, *opts],
                                                          [detected, preview_html], show_progress="hidden")
    import_btn.click(lambda *a, progress=gr.Progress(): run_import(ctx, *a, progress=progress),
                     [files, dataset, *opts], [report, rejects, datasets_table, dataset, version],
                     api_name="import_files", concurrency_limit=2)
    lists = lambda: refresh_lists(ctx)  # noqa: E731
    refresh_btn.click(lists, None, [datasets_table, dataset, version], show_progress="hidden")
    version.change(lambda r: browse(ctx, r, 1), [version], [browse_info, browse_html, page], show_progress="hidden")
    page.change(lambda r, p: browse(ctx, r, p), [version, page], [browse_info, browse_html, page],
                show_progress="hidden")
    return lists, None, [datasets_table, dataset, version]

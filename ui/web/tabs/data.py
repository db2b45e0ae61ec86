"""The Data tab: upload conversation logs, preview them as chats, import them, browse datasets.

Each uploaded file is imported on its own (training.ingest.import_file, one transaction per file):
a file that fails leaves nothing behind, and the others are still imported; the report says which.
Personal data is redacted on import (store.redaction): the preview highlights what would be replaced,
the controls under “Personal data” build the same RedactionSettings as the CLI's flags, and admins
can erase a customer's data everywhere (store.erasure, as `tuneloop forget`).

    .venv/bin/python -m pytest tests/test_web_tabs.py -q
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

from store.datasets import DatasetNotFound, list_datasets, resolve_version, version_conversation_count
from store.redaction import TYPE_TITLES, TYPES, RedactionReport
from ui.web.context import AppContext, fail, is_admin, keeps_form, unexpected
from ui.text import short_time
from ui.web.html import conversations_html

def esc(text: str) -> str:
    return html.escape(str(text), quote=False)


PREVIEW_CONVERSATIONS = 3  # per file
PREVIEW_COUNT_LIMIT = 200_000  # records counted before import, per file (the total and the duplicates)
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


def parse_mapping(text: str) -> dict[str, str]:
    """'turns=dialogContent' one per line -> {'turns': 'dialogContent'}; lines only, since a JMESPath
    expression may hold commas. ValueError names the bad line."""
    from training.importers import parse_pairs as parse_items

    return parse_items(filter(None, (p.strip() for p in (text or "").splitlines())), "JSON mapping")


def parse_accounts(text: str) -> tuple[str, ...]:
    """'AcmeSupport, help@acme.example' (commas or lines) -> ('AcmeSupport', 'help@acme.example')."""
    return tuple(a for a in (p.strip() for p in (text or "").replace("\n", ",").split(",")) if a)


def build_options(settings, fmt: str, role_map: str, csv_columns: str, labels: str, separator: str,
                  reply_columns: str = "", agents: str = "", orphans: bool = False, json_map: str = ""):
    from training.importers import ImportOptions

    try:
        options = ImportOptions(
            format=fmt or "auto", role_map=parse_pairs(role_map, "Speaker roles"),
            csv_columns=parse_pairs(csv_columns, "CSV columns"),
            transcript_labels=parse_pairs(labels, "Transcript labels"),
            transcript_separator=(separator or None), reply_columns=parse_pairs(reply_columns, "Reply columns"),
            agent_accounts=parse_accounts(agents), reply_orphans="start" if orphans else "reject",
            json_map=parse_mapping(json_map), max_messages=settings.max_conversation_messages,
            max_chars=settings.max_conversation_chars,
        )
    except ValueError as exc:
        raise fail(f"{exc}. Fix it under “Import options” and try again.")
    problems = options.problems()
    if problems:
        raise fail("Import options: " + "; ".join(problems) + ".")
    return options


OPTION_LABELS = {"format": "Format", "csv_columns": "CSV columns", "transcript_labels": "Transcript labels",
                 "reply_columns": "Reply columns", "agent_accounts": "Agent accounts", "json_map": "JSON mapping"}


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

def preview(ctx: AppContext, files, fmt, role_map, csv_columns, labels, separator, *shape, redaction=None):
    """Detected format and the first conversations of each uploaded file, redacted as `redaction`
    (None: the default, every type) would store them."""
    from training.importers import Conversation, ImportFileError, Reject, open_import

    paths = _paths(files)
    if not paths:
        return "Drop one or more conversation log files above to see what they hold.", conversations_html([], "")
    options = build_options(ctx.settings, fmt, role_map, csv_columns, labels, separator, *shape)
    from training.importers.model import UnknownFormat
    from ui.web.import_words import FileCount, detected_line, unknown_format_line, without_name

    lines, items = [], []
    for path in paths:
        try:
            stream = open_import(path, options, redaction=redaction)
            counts, shown = FileCount(), 0
            for n, item in enumerate(stream):  # the whole file: its total, and which lines repeat earlier ones
                if n >= PREVIEW_COUNT_LIMIT:
                    counts.complete = False
                    break
                if isinstance(item, Conversation):
                    counts.add(item.location, item.messages)
                    if shown < PREVIEW_CONVERSATIONS:
                        items.append((f"{path.name} · {item.location}", item.messages))
                        shown += 1
                elif isinstance(item, Reject):
                    counts.rejected += 1
            counts.add_repeats(stream.duplicates, stream.repeats)  # the importer drops them: it names them here
            close = getattr(stream, "close", None)
            if close:
                close()
            lines.append(detected_line(path.name, stream.format, stream.format_reason, stream.encoding, counts))
            lines.append(f"  - {redaction_line(stream.redaction_report, future=True)}")
        except UnknownFormat as exc:
            lines.append(unknown_format_line(path.name, without_name(str(exc), path.name)))
        except ImportFileError as exc:
            lines.append(f"- **{esc(path.name)}**: cannot be read: {esc(without_name(str(exc), path.name))}"
                         f"{_options_hint(exc)}")
        except Exception as exc:  # noqa: BLE001
            raise unexpected(f"Reading {path.name}", exc)
    summary = "**Detected**\n\n" + "\n".join(lines)
    return summary, conversations_html(items, "No conversation could be read from these files yet.")


def run_import(ctx: AppContext, files, dataset, fmt, role_map, csv_columns, labels, separator, *shape,
               progress=gr.Progress(), redaction=None):
    """Import every file into `dataset` (redacted as `redaction`; None: every type); returns the report,
    the rejects table and fresh lists."""
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
    options = build_options(ctx.settings, fmt, role_map, csv_columns, labels, separator, *shape)
    lines, rejects = [], []
    ok = 0
    for i, path in enumerate(paths):
        progress((i, len(paths)), desc=f"Importing {path.name}", unit="files")

        def on_progress(n, _name=path.name):
            progress((i, len(paths)), desc=f"Importing {_name}: {n:,} records read", unit="files")

        try:
            with ctx.db() as db:
                report = import_file(db, path, dataset, options, on_progress=on_progress, redaction=redaction)
            ok += 1
            lines.append(
                f"- **{esc(path.name)}** ({esc(report.format)}) → **{esc(report.version)}**: "
                f"{report.imported} imported, {report.rejected} rejected, {report.duplicates} duplicate(s) in the "
                f"file, {report.already_in_dataset} already in the dataset"
                + (f", {len(report.warnings)} warning(s)" if report.warnings else "")
                + f"; {redaction_line(RedactionReport.from_json(report.redaction))}")
        except NothingToImport as exc:
            report = exc.report
            lines.append(f"- **{esc(path.name)}**: nothing imported ({report.rejected} rejected, "
                         f"{report.duplicates} duplicate(s), {report.already_in_dataset} already in the dataset); "
                         "no version was made")
        except ImportFileError as exc:
            from training.importers.model import UnknownFormat

            if isinstance(exc, UnknownFormat):  # said once, under "Detected", with what to do
                lines.append(f"- **{esc(path.name)}**: not imported: its format was not recognised (see “Detected”)")
            else:
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
                elif src.get("kind") == "removed":
                    ids = ", ".join(str(i) for i in src.get("conversations", []))
                    made_from.append(f"removed id {ids} from {src.get('from', '?')}: {src.get('reason', '')}")
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


def browse(ctx: AppContext, ref: str | None, page: float | None, text: str = "", source: str | None = None):
    """One page of a version's conversations, only those containing `text` and from file `source` when given."""
    from store.dataset_edits import search_version

    if not ref:
        return "Pick a dataset version to read its conversations.", conversations_html([], ""), gr.update()
    text = (text or "").strip()
    with ctx.db() as db:
        try:
            version = resolve_version(db, ref)
        except (DatasetNotFound, ValueError) as exc:
            raise fail(f"{exc}. Refresh the list and pick another version.")
        if text or source:
            _, total = search_version(db, version.id, text=text, source=source, limit=0)
        else:
            total = version_conversation_count(db, version.id)
        pages = max(1, -(-total // BROWSE_PAGE))
        page = min(max(1, int(page or 1)), pages)
        convs, _ = search_version(db, version.id, text=text, source=source, limit=BROWSE_PAGE,
                                  offset=(page - 1) * BROWSE_PAGE)
    first = (page - 1) * BROWSE_PAGE
    items = [(f"#{first + i + 1} · id {c['id']} · {c['source']} {c['meta'].get('location', '')}", c["messages"])
             for i, c in enumerate(convs)]
    what = " and ".join(([f"containing “{esc(text)}”"] if text else []) + ([f"from {esc(source)}"] if source else []))
    if what and not total:
        info = f"**{esc(ref)}**: no conversation {what}."
    else:
        info = (f"**{esc(ref)}**: conversations {first + 1}–{first + len(convs)} of {total}"
                + (f" {what}" if what else "") + f" (page {page} of {pages})")
    empty = "No conversation matches." if what else "This version has no conversations."
    return info, conversations_html(items, empty), gr.update(maximum=pages, value=page)


def source_choices(ctx: AppContext, ref: str | None):
    """The source-file filter for a version: every file its conversations came from, with counts."""
    from store.dataset_edits import version_sources

    choices = [("All files", "")]
    if ref:
        with ctx.db() as db:
            try:
                version = resolve_version(db, ref)
            except (DatasetNotFound, ValueError):
                return gr.update(choices=choices, value="")
            choices += [(f"{name or '(unknown)'} ({n})", name) for name, n in version_sources(db, version.id)]
    return gr.update(choices=choices, value="")


def remove_conversation(ctx: AppContext, ref: str | None, conv_id, reason: str, user: str = ""):
    """Remove one conversation from the newest version of `ref`'s dataset as a new version; returns fresh lists."""
    from store.dataset_edits import NotInVersion, remove_conversations

    if not ref:
        raise fail("Pick a dataset version first, then the id of the conversation to remove.")
    if conv_id is None or int(conv_id) < 1:
        raise fail("Type the id of the conversation to remove: it is shown above each conversation (“id 12”).")
    if not (reason or "").strip():
        raise fail("Say why the conversation is removed: the reason is kept with the new version.")
    dataset = ref.partition("@")[0]
    with ctx.db() as db:
        try:
            version = remove_conversations(db, dataset, [int(conv_id)], reason, by=user or "")
        except (DatasetNotFound, NotInVersion) as exc:
            raise fail(f"{exc}. Removing works on the newest version; pick it and use an id shown there.")
    gr.Info(f"Made {version} without conversation {int(conv_id)}.")
    table, _picker, browse_update = refresh_lists(ctx, dataset)
    note = f"Made **{esc(str(version))}** without conversation id {int(conv_id)} ({esc(reason.strip())}); earlier versions keep it."
    return note, table, {**browse_update, "value": str(version)}


# ------------------------------------------------------------------ personal data

def redaction_settings(enabled: bool, types, patterns: str):
    """The RedactionSettings the “Personal data” controls ask for, by the CLI's rule (from_options):
    the unticked types are off; one LABEL=REGEX per line."""
    from store.redaction import TYPES, RedactionSettings

    chosen = set(types or [])
    try:
        return RedactionSettings.from_options(redact=bool(enabled), off=[t for t in TYPES if t not in chosen],
                                              patterns=[p.strip() for p in (patterns or "").splitlines() if p.strip()])
    except ValueError as exc:
        raise fail(f"Your own patterns: {exc}. Fix it under “Personal data” (one LABEL=REGEX per line).")


def redaction_line(report: RedactionReport, *, future: bool = False) -> str:
    """One file's redaction, by type and count, never the values; `future` words it for the preview."""
    if not report.enabled:
        return "personal data is **not** redacted (redaction is off; the version records that)"
    if not report.counts:
        return "no personal data found"
    parts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items(), key=lambda kv: (-kv[1], kv[0])))
    verb = "to replace on import" if future else "replaced"
    return f"personal data {verb}: {parts} (in {report.conversations} conversation(s))"


def redaction_highlights(ctx: AppContext, files, fmt, role_map, csv_columns, labels, separator, *shape,
                         redaction=None) -> list[tuple[str, str | None]]:
    """The first conversations of each file as they are, with what `redaction` would replace marked by
    type, for gr.HighlightedText. A file that cannot be read is left out (“Detected” says why)."""
    from store.redaction import RedactionSettings, highlight_segments
    from store.redaction import preview as find_personal_data
    from training.importers import Conversation, ImportFileError, open_import

    paths = _paths(files)
    if not paths or (redaction is not None and not redaction.enabled):
        return []
    redaction = redaction or RedactionSettings()
    options = build_options(ctx.settings, fmt, role_map, csv_columns, labels, separator, *shape)
    out: list[tuple[str, str | None]] = []
    for path in paths:
        try:
            stream, shown = open_import(path, options, redaction=RedactionSettings.off()), 0
            for item in stream:
                if not isinstance(item, Conversation):
                    continue
                found = find_personal_data(item.messages, redaction)
                out.append((f"{path.name} · {item.location}\n", None))
                for i, m in enumerate(item.messages):
                    text = m.get("content") if isinstance(m.get("content"), str) else ""
                    out += [(f"{m.get('role')}: ", None),
                            *highlight_segments(text, [f for f in found if f.message == i]), ("\n", None)]
                shown += 1
                if shown >= PREVIEW_CONVERSATIONS:
                    break
            close = getattr(stream, "close", None)
            if close:
                close()
        except ImportFileError:
            continue
    return out


FORGET_KINDS = [("E-mail address", "email"), ("Any text (a name, a phone or order number)", "text"),
                ("Conversation id", "conversation")]
NOT_ADMIN = "Only the administrators (TUNELOOP_ADMINS) erase a customer's data."


def forget_customer(ctx: AppContext, kind: str, value: str, really: bool, *, user: str = "", admin: bool = False):
    """Find (and with `really`, erase) a customer's data everywhere, as `tuneloop forget`; returns what was
    (or would be) erased and the adapters to retrain, worded without the value."""
    from store.erasure import ErasureError, Target, erase, find_erasure

    if not admin:
        raise fail(NOT_ADMIN)
    label = {v: k.split(" (")[0] for k, v in FORGET_KINDS}.get(kind)
    if label is None:
        raise fail("Choose what to look for: an e-mail address, any text or a conversation id.")
    try:
        target = Target(kind, (value or "").strip())
    except ErasureError as exc:
        raise fail(f"{label}: {exc}.")
    with ctx.db() as db:
        try:
            plan = find_erasure(db, ctx.settings.data_dir, target)
        except ErasureError as exc:
            raise fail(f"{label}: {exc}.")
        if plan.empty:
            return "Nothing stored holds it."
        tombstone, purged = erase(db, ctx.settings.data_dir, plan, by=user) if really else (None, True)
    lines = "\n".join(f"- {esc(line)}" for line in plan.lines())
    retrain = (f"\n\n**Adapters trained on this data** (retrain them without it): {esc(', '.join(plan.adapters))}"
               if plan.adapters else "\n\nNo adapter was trained on it.")
    if not really:
        return "**Would erase** (nothing is changed yet):\n\n" + lines + retrain
    note = ("" if purged else "\n\nThe database is in use, so old pages of its file may still hold the value: run "
            "`tuneloop forget` with it again once the app is stopped to purge them.")
    gr.Info("Erased. A tombstone without the value is kept in the lineage.")
    return (f"**Erased** (tombstone #{tombstone} in the lineage: what, when, by whom; not the value):\n\n"
            + lines + retrain + note)


# ------------------------------------------------------------------ import profiles

def profile_names(ctx: AppContext) -> list[str]:
    from store.import_profiles import list_profiles

    with ctx.db() as db:
        return [p["name"] for p in list_profiles(db)]


def _pairs_text(mapping: dict, sep: str = ", ") -> str:
    return sep.join(f"{k}={v}" for k, v in (mapping or {}).items())


def load_profile(ctx: AppContext, name: str | None):
    """The option fields filled from a saved profile (format, columns, roles, reply settings, JSON mapping)."""
    from store.import_profiles import ProfileNotFound, get_profile
    from training.importers.profiles import options_from

    if not name:
        return tuple(gr.update() for _ in range(9))
    with ctx.db() as db:
        try:
            o = options_from(get_profile(db, name))
        except ProfileNotFound as exc:
            raise fail(f"{exc}.")
    return (o.format, _pairs_text(o.role_map), _pairs_text(o.csv_columns), _pairs_text(o.transcript_labels),
            o.transcript_separator or "", _pairs_text(o.reply_columns), ", ".join(o.agent_accounts),
            o.reply_orphans == "start", _pairs_text(o.json_map, "\n"))


def save_profile(ctx: AppContext, name: str, *opts):
    """Save the import options as profile `name`; returns the profile picker, showing it."""
    from store.import_profiles import save_profile as store_profile
    from training.importers.profiles import profile_of, validate_profile_name

    try:
        name = validate_profile_name(name)
    except ValueError as exc:
        raise fail(f"{exc}. Type a name under “Save these options as a profile”.")
    options = build_options(ctx.settings, *opts)
    with ctx.db() as db:
        new = store_profile(db, name, profile_of(options))
    gr.Info(f"{'Saved' if new else 'Updated'} import profile “{name}”: pick it next time to read the same shape.")
    return gr.update(choices=profile_names(ctx), value=name)


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
                reply_columns = gr.Textbox(label="Reply columns", elem_id="data-reply-columns",
                                           placeholder="id=tweet_id, reply_to=in_response_to_tweet_id",
                                           info="Exports with one message per row and the id it answers (social "
                                                "media, e-mail): which column holds id, reply_to, text, inbound or "
                                                "author; missing ones are detected.")
                agents = gr.Textbox(label="Agent accounts", placeholder="AcmeSupport, help@acme.example",
                                    elem_id="data-agents",
                                    info="In those exports, the authors who are your support side; everyone else "
                                         "is the customer.")
                orphans = gr.Checkbox(False, label="Let a reply to a message that is not in the file start a "
                                                   "conversation (the export begins mid-thread)")
                json_map = gr.Textbox(label="JSON mapping", lines=4, elem_id="data-json-map",
                                      placeholder="turns=dialogContent\nspeaker=keys(@)[0]\ntext=values(@)[0]\n"
                                                  "append_assistant=lastAgentTurn",
                                      info="JSON of any other shape, one KEY=path per line (JMESPath): turns, "
                                           "speaker, text, system, id, append_user, append_assistant, records.")
                profile = gr.Dropdown([], value=None, label="Import profile", elem_id="data-profile",
                                      info="Fill these options from a saved profile.")
                with gr.Row(equal_height=True):
                    profile_name = gr.Textbox(label="Save these options as a profile", placeholder="dialog export",
                                              scale=3, elem_id="data-profile-name")
                    profile_save = gr.Button("Save profile", size="sm", scale=1, elem_id="data-profile-save")
            with gr.Accordion("Personal data", open=False, elem_id="data-redact-panel"):
                redact_on = gr.Checkbox(True, label="Replace personal data with placeholders before it is stored "
                                                    "(recommended; turning it off is recorded on the version)",
                                        elem_id="data-redact")
                redact_types = gr.CheckboxGroup([(f"{TYPE_TITLES[t]} ({t})", t) for t in TYPES], value=list(TYPES),
                                                label="Replace", elem_id="data-redact-types")
                redact_patterns = gr.Textbox(label="Your own patterns", lines=2, elem_id="data-redact-patterns",
                                             placeholder="ORDER=ORD-\\d{6}",
                                             info="One LABEL=REGEX per line (order numbers, account ids): a match "
                                                  "becomes <LABEL_1>, <LABEL_2>…")
            dataset = gr.Dropdown([], label="Import into dataset", allow_custom_value=True, elem_id="data-dataset",
                                  info="Pick an existing dataset to add a new version, or type a new name.")
            import_btn = gr.Button("Import", variant="primary", elem_id="data-import")
        with gr.Column(scale=7, min_width=360):
            detected = gr.Markdown("Drop one or more conversation log files to see what they hold.",
                                   elem_id="data-detected")
            preview_html = gr.HTML(conversations_html([], ""), elem_classes=["tl-scroll"], label="Preview")
            highlights = gr.HighlightedText([], label="Personal data found (replaced by placeholders on import)",
                                            elem_id="data-redact-preview", elem_classes=["tl-scroll"])
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
    with gr.Row():
        search = gr.Textbox(label="Search text", placeholder="refund (press Enter)", scale=3,
                            elem_id="data-browse-search")
        source = gr.Dropdown([("All files", "")], value="", label="Source file", scale=2,
                             elem_id="data-browse-source")
    browse_info = gr.Markdown(elem_id="data-browse-info")
    browse_html = gr.HTML(elem_classes=["tl-scroll"], elem_id="data-browse")
    with gr.Accordion("Remove a conversation", open=False):
        gr.Markdown("Makes a new version of the dataset without it, with your reason in its lineage; earlier "
                    "versions, and adapters trained on them, keep it.")
        with gr.Row(equal_height=True):
            remove_id = gr.Number(None, label="Conversation id", precision=0, minimum=1, scale=1, min_width=120,
                                  elem_id="data-remove-id")
            remove_reason = gr.Textbox(label="Reason", placeholder="holds a customer's phone number", scale=3,
                                       elem_id="data-remove-reason")
            remove_btn = gr.Button("Remove from the newest version", variant="stop", scale=1, elem_id="data-remove")
        remove_note = gr.Markdown(elem_id="data-remove-note")
    with gr.Accordion("Erase a customer's data (admins)", open=False, elem_id="data-forget-panel"):
        gr.Markdown("Finds a customer's data in every stored place (conversations in every dataset version, "
                    "ratings, chats, captured traffic, eval sets, files) and deletes or redacts it, as "
                    "`tuneloop forget` does. Versions keep all their other rows; a tombstone (what, when, by whom, "
                    "never the value) stays in the lineage.")
        with gr.Row(equal_height=True):
            forget_kind = gr.Radio(FORGET_KINDS, value="email", label="Find by", scale=3, elem_id="data-forget-kind")
            forget_value = gr.Textbox(label="Value", scale=2, elem_id="data-forget-value")
        with gr.Row():
            forget_find = gr.Button("Find it (changes nothing)", elem_id="data-forget-find")
            forget_erase = gr.Button("Erase it everywhere", variant="stop", elem_id="data-forget-erase")
        forget_note = gr.Markdown(elem_id="data-forget-note")

    opts = [fmt, role_map, csv_columns, labels, separator, reply_columns, agents, orphans, json_map]
    redact = [redact_on, redact_types, redact_patterns]

    def show(*a):  # files, *opts, *redact
        redaction = redaction_settings(*a[-3:])
        return (*preview(ctx, *a[:-3], redaction=redaction), redaction_highlights(ctx, *a[:-3], redaction=redaction))

    shown = [detected, preview_html, highlights]
    files.change(show, [files, *opts, *redact], shown, api_name="preview_files")
    for option in opts + redact:  # a changed option shows its effect on the preview at once
        (option.blur if option in (role_map, csv_columns, labels, separator, reply_columns, agents, json_map,
                                   redact_patterns) else option.change)(
            show, [files, *opts, *redact], shown, show_progress="hidden")
    profile.input(lambda n: load_profile(ctx, n), [profile], opts, show_progress="hidden").then(
        show, [files, *opts, *redact], shown, show_progress="hidden")
    profile_save.click(lambda n, *a: save_profile(ctx, n, *a), [profile_name, *opts], [profile],
                       show_progress="hidden")
    @keeps_form(5, title="Not imported")
    def import_clicked(*a, progress=gr.Progress()):  # files, dataset, *opts, *redact
        return run_import(ctx, *a[:-3], progress=progress, redaction=redaction_settings(*a[-3:]))

    import_btn.click(import_clicked, [files, dataset, *opts, *redact],
                     [report, rejects, datasets_table, dataset, version],
                     api_name="import_files", concurrency_limit=2)
    lists = lambda: refresh_lists(ctx)  # noqa: E731
    refresh_btn.click(lists, None, [datasets_table, dataset, version], show_progress="hidden")
    # The file filter is reset for the new version first, so the page never shows one filter and applies another.
    version.change(lambda r: source_choices(ctx, r), [version], [source], show_progress="hidden").then(
        lambda r, q, f: browse(ctx, r, 1, q, f), [version, search, source], [browse_info, browse_html, page],
        show_progress="hidden")
    page.change(lambda r, p, q, f: browse(ctx, r, p, q, f), [version, page, search, source],
                [browse_info, browse_html, page], show_progress="hidden")
    for trigger in (search.submit, source.input):
        trigger(lambda r, q, f: browse(ctx, r, 1, q, f), [version, search, source], [browse_info, browse_html, page],
                show_progress="hidden")

    def remove(ref, conv_id, reason, request: gr.Request):
        return remove_conversation(ctx, ref, conv_id, reason, getattr(request, "username", None) or "")

    remove_btn.click(remove, [version, remove_id, remove_reason], [remove_note, datasets_table, version])

    def find_customer(kind, value, request: gr.Request):
        return forget_customer(ctx, kind, value, False, admin=is_admin(ctx, request))

    def erase_customer(kind, value, request: gr.Request):
        note = forget_customer(ctx, kind, value, True, user=getattr(request, "username", None) or "",
                               admin=is_admin(ctx, request))
        return note, "", *refresh_lists(ctx)  # the value leaves the page once it is erased

    forget_find.click(find_customer, [forget_kind, forget_value], [forget_note], api_visibility="private")
    forget_erase.click(erase_customer, [forget_kind, forget_value],
                       [forget_note, forget_value, datasets_table, dataset, version], api_visibility="private")

    def on_load():
        return (*refresh_lists(ctx), gr.update(choices=profile_names(ctx)))

    return on_load, None, [datasets_table, dataset, version, profile]

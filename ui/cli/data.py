"""CLI commands for data: `tuneloop import FILE` and `tuneloop datasets`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from store.datasets import DatasetNotFound, iter_version_conversations, list_datasets, resolve_version
from store.db import connect
from training.importers.model import FORMATS
from ui.cli.common import emit_json, fail, login, parse_pairs, settings

FORMAT_CHOICES = ("auto", *FORMATS)
MAX_REJECTS_SHOWN = 50
# Which flag sets the import option an error names (ImportFileError.field).
OPTION_FLAGS = {"format": "--format", "csv_columns": "--csv-column FIELD=COLUMN", "transcript_labels": "--label NAME=ROLE",
                "reply_columns": "--reply-column FIELD=COLUMN", "agent_accounts": "--agent ACCOUNT",
                "json_map": "--map KEY=PATH"}
PREVIEW_CONVERSATIONS = 3


app = typer.Typer()  # merged into the top-level `tuneloop` app by ui.cli

@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="The conversation log file to import."),
    format: str = typer.Option("auto", "--format", "-f", help=f"One of {', '.join(FORMAT_CHOICES)}."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d",
                                          help="Dataset to add a version to (default: the file's name)."),
    role_map: list[str] = typer.Option([], "--role-map", help="Extra speaker role, e.g. --role-map bot=assistant."),
    csv_column: list[str] = typer.Option(
        [], "--csv-column",
        help="CSV column for a field: conversation, order, speaker, text (or question, answer), "
             "e.g. --csv-column text=body."),
    label: list[str] = typer.Option([], "--label", help="Transcript speaker label, e.g. --label Kunde=user."),
    separator: Optional[str] = typer.Option(None, "--separator",
                                            help="Transcript line that separates conversations (default: blank lines)."),
    reply_column: list[str] = typer.Option(
        [], "--reply-column",
        help="Reply-linked messages: column or key for id, reply_to, text, inbound, outbound, author or speaker, "
             "e.g. --reply-column reply_to=parent."),
    agent: list[str] = typer.Option([], "--agent", help="Reply-linked messages: an author that is the support side "
                                                        "(repeat it), e.g. --agent AcmeSupport."),
    orphans: str = typer.Option("reject", "--orphans", help="Reply-linked messages: a reply to an id not in the "
                                                            "file is rejected (reject) or starts its conversation (start)."),
    json_map: list[str] = typer.Option(
        [], "--map",
        help="JSON of any shape: KEY=JMESPath for turns, speaker, text, system, id, append_user, append_assistant "
             "or records, e.g. --map turns=dialogContent --map 'speaker=keys(@)[0]' --map 'text=values(@)[0]'."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Read FILE with a saved import profile "
                                                                  "(options given here go on top)."),
    save_profile: Optional[str] = typer.Option(None, "--save-profile",
                                               help="Save these import options as a named profile for next time."),
    no_redact: bool = typer.Option(False, "--no-redact", help="Import personal data as it is (recorded on the "
                                                               "version); by default it is replaced by placeholders."),
    redact_off: list[str] = typer.Option([], "--redact-off", help="Leave one type of personal data as it is (repeat "
                                                                  "it): EMAIL, URL, CARD, IBAN, IP, PHONE, ADDRESS, "
                                                                  "HANDLE, PERSON."),
    redact_pattern: list[str] = typer.Option([], "--redact-pattern", help="Also redact your own pattern as "
                                                                          "<LABEL_n> (repeat it), e.g. "
                                                                          "--redact-pattern 'ORDER=ORD-\\d{6}'."),
    preview: bool = typer.Option(False, "--preview", help="Show the first conversations as read; import nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable report."),
) -> None:
    """Import conversation logs from FILE into a dataset as a new version."""
    from training.importers import ImportFileError, ImportOptions
    from training.ingest import NothingToImport, import_file

    if format not in FORMAT_CHOICES:
        fail(f"--format {format!r} is not one of {', '.join(FORMAT_CHOICES)}", 2, as_json=as_json)
    if not file.is_file():
        fail(f"{file}: no such file", 2, as_json=as_json)
    s = settings()
    options = ImportOptions(
        format=format, role_map=parse_pairs(role_map, "--role-map"),
        csv_columns=parse_pairs(csv_column, "--csv-column"), transcript_labels=parse_pairs(label, "--label"),
        transcript_separator=separator, reply_columns=parse_pairs(reply_column, "--reply-column"),
        agent_accounts=tuple(agent), reply_orphans=orphans, json_map=parse_pairs(json_map, "--map"),
        max_messages=s.max_conversation_messages, max_chars=s.max_conversation_chars,
    )
    options = _with_profile(s, options, profile, save_profile, as_json)
    redaction = _redaction(no_redact, redact_off, redact_pattern, as_json)
    if preview:
        _preview(file, options, redaction, as_json)
        return
    name = dataset or file.stem
    progress = None if as_json else (lambda n: typer.echo(f"  ... {n} records read", err=True))
    try:
        with connect(s.db_path) as db:
            report = import_file(db, file, name, options, on_progress=progress, redaction=redaction)
    except ImportFileError as exc:
        flag = OPTION_FLAGS.get(exc.field or "")
        fail(f"{exc}" + (f" (option: {flag})" if flag and not as_json else ""), 1, as_json=as_json)
    except NothingToImport as exc:
        if save_profile:  # the file was read with these options; nothing was new in it
            _save_profile(s, save_profile, options, as_json)
        if as_json:
            emit_json({**exc.report.to_json(), "error": str(exc)})
            raise typer.Exit(1)
        _print_rejects(exc.report)
        fail(str(exc))
    except ValueError as exc:  # invalid dataset name
        fail(str(exc), 2, as_json=as_json)
    if save_profile:
        _save_profile(s, save_profile, options, as_json)
    if as_json:
        emit_json(report.to_json())
        return
    typer.echo(f"{file.name}: format {report.format} ({report.format_reason}), encoding {report.encoding}")
    typer.echo(
        f"imported {report.imported} conversation{'s' if report.imported != 1 else ''} into {report.version}; rejected {report.rejected}; "
        f"dropped {report.duplicates} duplicates in the file and {report.already_in_dataset} already in the dataset"
    )
    _print_redaction(report.redaction)
    _print_rejects(report)


def _redaction(no_redact: bool, off: list[str], patterns: list[str], as_json: bool):
    """The RedactionSettings the flags ask for (store.redaction's rule); a bad value exits 2 naming its flag."""
    from store.redaction import RedactionSettings

    try:
        RedactionSettings.from_options(off=off)
    except ValueError as exc:
        fail(f"--redact-off: {exc}", 2, as_json=as_json)
    try:
        return RedactionSettings.from_options(redact=not no_redact, off=off, patterns=patterns)
    except ValueError as exc:
        fail(f"--redact-pattern: {exc}", 2, as_json=as_json)


def _print_redaction(redaction: dict) -> None:
    """What was redacted, per type, with where (the report holds no values)."""
    from store.redaction import RedactionReport

    if not redaction:
        return
    report = RedactionReport.from_json(redaction)
    typer.echo(report.summary())
    for kind, places in report.locations.items():
        typer.echo(f"  {kind} at {'; '.join(places)}")


def _with_profile(s, options, profile: str | None, save_as: str | None, as_json: bool):
    """The options of a saved profile with those given on the command line on top; checks a name to save under."""
    from store.import_profiles import ProfileNotFound, get_profile
    from training.importers.profiles import layer, options_from, validate_profile_name

    if save_as:
        try:
            validate_profile_name(save_as)
        except ValueError as exc:
            fail(f"--save-profile: {exc}", 2, as_json=as_json)
    if not profile:
        return options
    with connect(s.db_path) as db:
        try:
            saved = get_profile(db, profile)
        except ProfileNotFound as exc:
            fail(f"--profile: {exc}; list them with `tuneloop profiles`", 2, as_json=as_json)
    return layer(options_from(saved, options), options)


def _save_profile(s, name: str, options, as_json: bool) -> None:
    from store.import_profiles import save_profile
    from training.importers.profiles import profile_of

    with connect(s.db_path) as db:
        new = save_profile(db, name.strip(), profile_of(options))
    if not as_json:
        typer.echo(f"{'saved' if new else 'updated'} import profile {name.strip()!r}: "
                   f"next time, `tuneloop import FILE --profile {name.strip()}`")


def _preview(file: Path, options, redaction, as_json: bool) -> None:
    """The first conversations (and rejects) as the importer reads them, redacted as the import would be;
    nothing is written."""
    from training.importers import Conversation, ImportFileError, Reject, open_import

    shown, rejects = [], []
    try:
        stream = open_import(file, options, redaction=redaction)
        for item in stream:
            if isinstance(item, Conversation):
                shown.append({"location": item.location, "external_id": item.external_id, "messages": item.messages})
            elif isinstance(item, Reject):
                rejects.append({"location": item.location, "reason": item.reason})
            if len(shown) >= PREVIEW_CONVERSATIONS:
                break
    except ImportFileError as exc:
        flag = OPTION_FLAGS.get(exc.field or "")
        fail(f"{exc}" + (f" (option: {flag})" if flag and not as_json else ""), 1, as_json=as_json)
    if as_json:
        emit_json({"format": stream.format, "format_reason": stream.format_reason, "conversations": shown,
                   "rejects": rejects})
        return
    typer.echo(f"{file.name}: format {stream.format} ({stream.format_reason}); preview, nothing imported")
    for c in shown:
        typer.echo(f"--- {c['location']}")
        for m in c["messages"]:
            typer.echo(f"{m['role']:>9}: {m['content']}")
    for r in rejects:
        typer.echo(f"  rejected {r['location']}: {r['reason']}")


@app.command("profiles")
def profiles(as_json: bool = typer.Option(False, "--json", help="Machine-readable list."),
             delete: Optional[str] = typer.Option(None, "--delete", help="Forget the profile of this name.")) -> None:
    """List saved import profiles (made with `tuneloop import FILE ... --save-profile NAME`)."""
    from store.import_profiles import delete_profile, list_profiles

    with connect(settings().db_path) as db:
        if delete:
            if not delete_profile(db, delete):
                fail(f"import profile {delete!r} not found", as_json=as_json)
            if not as_json:
                typer.echo(f"deleted import profile {delete!r}")
        rows = list_profiles(db)
    if as_json:
        emit_json(rows)
        return
    if not rows and not delete:
        typer.echo("no import profiles yet: save one with `tuneloop import FILE --map ... --save-profile NAME`")
    for p in rows:
        opts = " ".join(f"{k}={v}" for k, v in p["options"].items())
        typer.echo(f"{p['name']}  (updated {p['updated_at'][:19]})  {opts}")


def _print_rejects(report) -> None:
    for r in report.rejects[:MAX_REJECTS_SHOWN]:
        typer.echo(f"  rejected {r['location']}: {r['reason']}")
    if len(report.rejects) > MAX_REJECTS_SHOWN:
        typer.echo(f"  ... and {len(report.rejects) - MAX_REJECTS_SHOWN} more (use --json for all)")
    for w in report.warnings[:MAX_REJECTS_SHOWN]:
        typer.echo(f"  warning {w['location']}: {w['message']}")

datasets_app = typer.Typer(help="List datasets and browse their versions.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")

@datasets_app.callback()
def datasets(ctx: typer.Context,
             as_json: bool = typer.Option(False, "--json", help="Machine-readable list.")) -> None:
    """List datasets with their versions, sizes and lineage."""
    if ctx.invoked_subcommand:
        return
    with connect(settings().db_path) as db:
        rows = list_datasets(db)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no datasets yet: import logs with `tuneloop import FILE`")
    for ds in rows:
        typer.echo(ds["name"])
        for v in ds["versions"]:
            files = ", ".join(src.get("file") or src.get("kind", "?") for src in v["sources"])
            parent = f" from {v['parent']}" if v["parent"] else ""
            typer.echo(f"  @{v['version']}  {v['conversations']:>6} conversations  {v['kind']}{parent}"
                       f"  [{files}]  {v['created_at'][:19]}" + (f"  ({v['note']})" if v["note"] else ""))

@datasets_app.command("show")
def show(spec: str = typer.Argument(..., help="NAME or NAME@VERSION"),
         limit: int = typer.Option(5, help="How many conversations to print."),
         offset: int = typer.Option(0, help="Skip this many first."),
         search: Optional[str] = typer.Option(None, "--search", help="Only conversations whose text contains this."),
         source: Optional[str] = typer.Option(None, "--source", help="Only conversations imported from this file."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Print conversations of a dataset version (the id after '#' is what `datasets delete` takes)."""
    from store.dataset_edits import search_version

    with connect(settings().db_path) as db:
        try:
            ref = resolve_version(db, spec)
        except (DatasetNotFound, ValueError) as exc:
            fail(str(exc), as_json=as_json)
        if search or source:
            convs, total = search_version(db, ref.id, text=search, source=source, limit=limit, offset=offset)
        else:
            convs = list(iter_version_conversations(db, ref.id, limit=limit, offset=offset))
            total = None
    if as_json:
        emit_json({"version": str(ref), "conversations": convs, **({"matches": total} if total is not None else {})})
        return
    if total is not None:
        typer.echo(f"{total} conversation{'s' if total != 1 else ''} of {ref} match")
    for c in convs:
        typer.echo(f"--- {ref} #{c['id']} ({c['source']} {c['meta'].get('location', '')})")
        for m in c["messages"]:
            typer.echo(f"{m['role']:>9}: {m['content']}")


@datasets_app.command("delete")
def delete(name: str = typer.Argument(..., help="The dataset (its newest version is the one edited)."),
           conversation: list[int] = typer.Argument(..., help="Conversation id(s), as `datasets show` prints after '#'."),
           reason: str = typer.Option(..., "--reason", help="Why it goes; kept in the dataset's lineage."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Remove conversations from a dataset as a new version; earlier versions keep them."""
    from store.dataset_edits import NotInVersion, remove_conversations

    with connect(settings().db_path) as db:
        try:
            version = remove_conversations(db, name, conversation, reason, by=login())
        except (DatasetNotFound, NotInVersion) as exc:
            fail(str(exc), as_json=as_json)
        except ValueError as exc:
            fail(f"--reason: {exc}" if "why" in str(exc) else str(exc), 2, as_json=as_json)
    if as_json:
        emit_json({"version": str(version), "removed": sorted(set(conversation)), "reason": reason.strip()})
        return
    typer.echo(f"made {version} without conversation {', '.join(f'#{c}' for c in sorted(set(conversation)))} "
               f"({reason.strip()}); earlier versions keep it")

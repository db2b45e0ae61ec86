"""CLI commands for data: `tuneloop import FILE` and `tuneloop datasets`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from store.datasets import DatasetNotFound, iter_version_conversations, list_datasets, resolve_version
from store.db import connect
from training.importers.model import FORMATS
from ui.cli.common import emit_json, fail, parse_pairs, settings

FORMAT_CHOICES = ("auto", *FORMATS)
MAX_REJECTS_SHOWN = 50
# Which flag sets the import option an error names (ImportFileError.field).
OPTION_FLAGS = {"format": "--format", "csv_columns": "--csv-column FIELD=COLUMN", "transcript_labels": "--label NAME=ROLE"}


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
        transcript_separator=separator, max_messages=s.max_conversation_messages,
        max_chars=s.max_conversation_chars,
    )
    name = dataset or file.stem
    progress = None if as_json else (lambda n: typer.echo(f"  ... {n} records read", err=True))
    try:
        with connect(s.db_path) as db:
            report = import_file(db, file, name, options, on_progress=progress)
    except ImportFileError as exc:
        flag = OPTION_FLAGS.get(exc.field or "")
        fail(f"{exc}" + (f" (option: {flag})" if flag and not as_json else ""), 1, as_json=as_json)
    except NothingToImport as exc:
        if as_json:
            emit_json({**exc.report.to_json(), "error": str(exc)})
            raise typer.Exit(1)
        _print_rejects(exc.report)
        fail(str(exc))
    except ValueError as exc:  # invalid dataset name
        fail(str(exc), 2, as_json=as_json)
    if as_json:
        emit_json(report.to_json())
        return
    typer.echo(f"{file.name}: format {report.format} ({report.format_reason}), encoding {report.encoding}")
    typer.echo(
        f"imported {report.imported} conversation{'s' if report.imported != 1 else ''} into {report.version}; rejected {report.rejected}; "
        f"dropped {report.duplicates} duplicates in the file and {report.already_in_dataset} already in the dataset"
    )
    _print_rejects(report)

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
                       f"  [{files}]  {v['created_at'][:19]}")

@datasets_app.command("show")
def show(spec: str = typer.Argument(..., help="NAME or NAME@VERSION"),
         limit: int = typer.Option(5, help="How many conversations to print."),
         offset: int = typer.Option(0, help="Skip this many first."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Print conversations of a dataset version."""
    with connect(settings().db_path) as db:
        try:
            ref = resolve_version(db, spec)
        except (DatasetNotFound, ValueError) as exc:
            fail(str(exc), as_json=as_json)
        convs = list(iter_version_conversations(db, ref.id, limit=limit, offset=offset))
    if as_json:
        emit_json({"version": str(ref), "conversations": convs})
        return
    for c in convs:
        typer.echo(f"--- {ref} #{c['id']} ({c['source']} {c['meta'].get('location', '')})")
        for m in c["messages"]:
            typer.echo(f"{m['role']:>9}: {m['content']}")

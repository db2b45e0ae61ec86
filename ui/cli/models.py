"""CLI commands for base models: `tuneloop models` (list), `tuneloop models add DIR [--name NAME]`, `models remove`.

    tuneloop models add /models/Qwen2.5-0.5B-Instruct --name qwen-0.5b
    tuneloop train --dataset support --base qwen-0.5b
"""

from __future__ import annotations

from typing import Optional

import typer

from ui.cli.common import emit_json, fail, login, settings

app = typer.Typer()  # merged into the top-level `tuneloop` app by ui.cli
models_app = typer.Typer(help="Base models runs can start from: the default one, and local directories you add.",
                         invoke_without_command=True)
app.add_typer(models_app, name="models")

FLAGS = {"path": "DIR", "name": "--name"}


@models_app.callback()
def models_list(ctx: typer.Context,
                as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the base models a run can start from, the default first, and whether this server serves each."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import asdict

    from training.base_models import base_choices

    s = settings()
    choices = base_choices(s)
    if as_json:
        emit_json([asdict(c) for c in choices])
        return
    for c in choices:
        tags = ["default" if c.default else "", "served here" if c.served else
                "not served here: its adapters cannot be chatted with on this server"]
        typer.echo(f"{c.name:<28} {c.path}  ({', '.join(t for t in tags if t)})")


@models_app.command("add")
def models_add(path: str = typer.Argument(..., help="A local transformers model directory (config.json, weights, "
                                                    "tokenizer with a chat template)."),
               name: Optional[str] = typer.Option(None, "--name", help="Name to pick it by (default: the folder's)."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Check a local model directory (an architecture vLLM serves, a chat template, weights) and register it."""
    from training.base_models import BaseModelError, not_served_note, register

    s = settings()
    try:
        added, check = register(s, path, name=name, by=login())
    except BaseModelError as exc:
        fail(f"refused: {FLAGS.get(exc.field, exc.field)}: {exc.reason}", 2, as_json=as_json)
    note = not_served_note(s, check.path)
    if as_json:
        emit_json({"name": added, "check": check.to_dict(), "note": note})
        return
    typer.echo(f"added base model {added}: {check.path} ({', '.join(check.architectures)}, "
               f"up to {check.max_len or '?'} tokens)")
    if note:
        typer.echo(f"note: {note}")


@models_app.command("remove")
def models_remove(name: str = typer.Argument(..., help="Registered base model name.")) -> None:
    """Forget a registered base model (its files and the adapters trained on it stay)."""
    from store.base_models import BaseModelNotFound, remove_base_model
    from store.db import connect

    s = settings()
    with connect(s.db_path) as db:
        try:
            remove_base_model(db, name)
        except BaseModelNotFound as exc:
            fail(str(exc))
    typer.echo(f"removed base model {name} (files untouched)")

"""The `tuneloop` command line: a thin typer layer over store, training and serving.

Each area registers its commands from its own module (cli_data, cli_train, cli_serve, cli_feedback).
"""

from __future__ import annotations

import json
import os
import sys

import typer

from store.db import connect
from store.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="tuneloop: import support chats, LoRA-train, A/B chat, rate, repeat.")

# No model hub is reachable at run time on self-hosted machines; every model is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable and why
        fail(f"invalid settings: {exc}")


def fail(message: str, code: int = 1, *, as_json: bool = False) -> "typer.Exit":
    if as_json:
        typer.echo(json.dumps({"error": message}))
    else:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


@app.command()
def setup(force: bool = typer.Option(False, help="Prepare the default model again even if present.")) -> None:
    """Create the data directory and database, and prepare the embedded default model."""
    from training.default_model import DefaultModelMissing, is_prepared, prepare_default_model

    s = settings()
    with connect(s.db_path):
        pass
    if s.base_model:
        typer.echo(f"base model: {s.base_model} (from TUNELOOP_BASE_MODEL)")
    else:
        if force or not is_prepared(s.default_model_dir):
            typer.echo(f"preparing the default model into {s.default_model_dir} (about 30 s) ...")
            try:
                prepare_default_model(s.default_model_dir, force=force)
            except DefaultModelMissing as exc:
                fail(str(exc))
        typer.echo(f"base model: {s.default_model_dir}")
    typer.echo(f"data directory: {s.data_dir}")


def _register() -> None:
    from ui import cli_data

    cli_data.register(app)
    for name in ("ui.cli_train", "ui.cli_serve", "ui.cli_feedback"):
        try:
            module = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register()

if __name__ == "__main__":
    sys.exit(app())

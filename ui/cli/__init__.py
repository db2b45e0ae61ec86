"""The `tuneloop` command line: a thin typer layer over store, training and serving.

Each area's commands live at module level in their own module (data, train, serve, feedback), each a
typer app merged here; `common` holds what they share. A module that fails to import fails the CLI.
"""

from __future__ import annotations

import os

import typer

from store.db import connect
from ui.cli import data, deploy, feedback, fleet, keys, privacy, serve, traffic, train
from ui.cli import eval as eval_
from ui.cli.common import fail, settings

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="tuneloop: import support chats, LoRA-train, A/B chat, rate, repeat.")

# No model hub is reachable at run time on self-hosted machines; every model is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@app.command()
def setup(force: bool = typer.Option(False, help="Prepare the default model again even if present.")) -> None:
    """Create the data directory and database, and prepare the embedded default model and the evaluation's
    sentence-embedding model."""
    from serving.evaluation.embedding import EmbeddingModelMissing, prepare_embedding_model
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
    try:
        prepare_embedding_model(s.embedding_model_dir, force=force)
        typer.echo(f"embedding model (evaluation): {s.embedding_model_dir}")
    except EmbeddingModelMissing as exc:  # evaluation still runs, without reference similarity
        typer.secho(f"warning: {exc}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"data directory: {s.data_dir}")


from ui.cli import models  # noqa: E402 - base models (`tuneloop models`)

for _area in (data, train, serve, feedback, eval_, deploy, privacy, keys, traffic, fleet, models):
    app.add_typer(_area.app)

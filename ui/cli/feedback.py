"""CLI commands for the feedback loop: `tuneloop feedback build|train|list`.

    tuneloop feedback build                      # ratings since the last build -> feedback@N (method: auto)
    tuneloop feedback build --method dpo --since 2026-11-20 --dry-run --json
    tuneloop feedback train --wait               # train the newest feedback version from the current adapter
    tuneloop feedback list
"""

from __future__ import annotations

import shlex
from typing import Optional

import typer

from training.feedback_dataset import METHODS
from ui.cli.common import emit_json, fail, login, settings
from ui.text import short_time

METHOD_CHOICES = ("auto", *METHODS)
OPTION_FLAGS = {"since": "--since", "replay_share": "--replay-share", "dataset": "--dataset"}




app = typer.Typer()  # merged into the top-level `tuneloop` app by ui.cli

feedback_app = typer.Typer(help="Turn ratings into the next dataset version and train the next adapter on it.",
                           no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")

@feedback_app.command("build")
def build(
    dataset: str = typer.Option("feedback", "--dataset", "-d", help="Dataset the feedback version is added to."),
    method: str = typer.Option("auto", "--method", "-m",
                               help=f"One of {', '.join(METHOD_CHOICES)}; auto picks the richest the ratings "
                                    "support (sft+dpo, sft+kto, dpo, kto, sft)."),
    since: Optional[str] = typer.Option(None, "--since",
                                        help="Ratings after this date or time (UTC unless it names a zone), or "
                                             "'all' (default: since the last build of the dataset)."),
    replay_share: float = typer.Option(0.2, "--replay-share",
                                       help="Share of the SFT set replayed from earlier rounds' data, in [0, 1)."),
    from_adapter: Optional[str] = typer.Option(None, "--from-adapter",
                                               help="Adapter the next round continues from "
                                                    "(default: the newest non-archived one)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be built; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Build the next feedback dataset version from the ratings since the last build."""
    from store.adapters import AdapterNotFound
    from training.feedback_dataset import format_report
    from training.feedback_round import FeedbackOptionError, FeedbackRefused, build_round

    if method not in METHOD_CHOICES:
        fail(f"--method {method!r} is not one of {', '.join(METHOD_CHOICES)}", 2, as_json=as_json)
    try:
        result = build_round(settings(), dataset=dataset, method=method, since=since, replay_share=replay_share,
                             from_adapter=from_adapter, user=login(), dry_run=dry_run)
    except FeedbackOptionError as exc:
        fail(f"{OPTION_FLAGS.get(exc.field, exc.field)}: {exc.reason}", 2, as_json=as_json)
    except (ValueError, AdapterNotFound) as exc:
        fail(str(exc), 2, as_json=as_json)
    except FeedbackRefused as exc:
        if as_json:
            emit_json({"error": str(exc), "method": exc.method,
                       "report": exc.build.report if exc.build else None})
            raise typer.Exit(1)
        if exc.build is not None:
            typer.echo(format_report(exc.build))
        fail(f"refused, nothing written: {exc}")
    if as_json:
        emit_json({**result.to_json(), "next_command": next_command(result), "train_command": train_command(result)})
        return
    typer.echo(format_report(result.build))
    if method == "auto":
        typer.echo(f"Method: {result.method} (auto: the richest these ratings support)")
    start = f"continue from {result.from_adapter}" if result.from_adapter else "start from the base model"
    if result.version is None:
        typer.echo(f"Dry run: nothing written. The next round would {start}.")
        typer.echo(f"Build it: {next_command(result)}")
        return
    typer.echo(f"Made {result.version}; the next round will {start}.")
    typer.echo(f"Next: {next_command(result)}")
    typer.echo(f"  (same as: {train_command(result)})")


def train_command(result) -> str | None:
    """The explicit `tuneloop train` equivalent of the next step (None for a dry run)."""
    if result.version is None:
        return None
    adapter = f" --from-adapter {result.from_adapter}" if result.from_adapter else ""
    return f"tuneloop train --dataset {result.version}{adapter} --method {result.method}"


def next_command(result) -> str:
    """What to run next: train the built version, or (after a dry run) build it for real, with the same options."""
    if result.version is not None:
        return f"tuneloop feedback train --version {result.version}"
    parts = ["tuneloop feedback build"]
    from training.feedback_round import DEFAULT_DATASET

    if result.dataset != DEFAULT_DATASET:
        parts.append(f"--dataset {result.dataset}")
    parts.append(f"--method {result.method}")
    if result.since_option is not None:
        parts.append(f"--since {shlex.quote(result.since_option)}")
    if result.from_adapter:
        parts.append(f"--from-adapter {result.from_adapter}")
    if result.replay_share != 0.2:
        parts.append(f"--replay-share {result.replay_share:g}")
    return " ".join(parts)

@feedback_app.command("train")
def train(
    version: Optional[str] = typer.Option(None, "--version", "-v",
                                          help="Feedback version, e.g. feedback@3 (default: the newest build)."),
    method: Optional[str] = typer.Option(None, "--method", "-m",
                                         help="sft, kto, dpo, sft+kto or sft+dpo (default: the build's)."),
    from_adapter: Optional[str] = typer.Option(None, "--from-adapter",
                                               help="Adapter to continue from (default: the build's)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick, standard or thorough."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the training rows."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    name: Optional[str] = typer.Option(None, "--name", help="Adapter name (default: <family>-v<N>)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run to its end, showing progress."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Start the next round: train on the newest (or given) feedback version."""
    from store.datasets import DatasetNotFound, resolve_version
    from store.db import connect
    from store.feedback import get_build, last_build
    from training.config import ConfigError
    from training.queue import start_run
    from ui.cli.train import refuse, started

    s = settings()
    with connect(s.db_path) as db:
        if version:
            try:
                ref = resolve_version(db, version)
            except (DatasetNotFound, ValueError) as exc:
                fail(str(exc), 2, as_json=as_json)
            made = get_build(db, ref.id)
            if made is None:
                fail(f"{ref} is not a feedback version; train imported data with `tuneloop train --dataset {ref}`",
                     2, as_json=as_json)
        else:
            made = last_build(db)
            if made is None:
                fail("no feedback version yet: build one with `tuneloop feedback build`", as_json=as_json)
    # Only what was given is passed: the runner takes the method and parent adapter from the build.
    given = dict(method=method, from_adapter=from_adapter, preset=preset, epochs=epochs, max_steps=max_steps,
                 learning_rate=lr, name=name)
    try:
        run_id = start_run(s, dataset=made["ref"], **{k: v for k, v in given.items() if v is not None})
    except ConfigError as exc:
        refuse(exc, as_json=as_json)
    started(s, run_id, wait=wait, as_json=as_json)

@feedback_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List feedback builds, newest first: method, rows per kind, ratings used, adapter continued from."""
    from store.db import connect
    from store.feedback import latest_builds

    with connect(settings().db_path) as db:
        rows = [build_summary(b) for b in latest_builds(db)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no feedback builds yet: rate answers, then run `tuneloop feedback build`")
        return

    for r in rows:
        c = r["counts"]
        kinds = [f"{c[k]} {label}" for k, label in (("sft", "SFT"), ("kto", "KTO"), ("dpo", "DPO")) if c[k]]
        if c["replay"]:
            kinds.append(f"{c['replay']} replayed")
        typer.echo(f"{r['version']:<14} {r['method']:<8} {', '.join(kinds) or 'no rows':<32} "
                   f"{r['ratings_used']} ratings  from {r['from_adapter'] or 'base model'}  "
                   f"{short_time(r['created_at'])}" + (f"  by {r['user']}" if r["user"] else ""))


def build_summary(b: dict) -> dict:
    """One `feedback list` row from store.feedback.latest_builds."""
    rep = b["report"]
    ex = rep.get("examples") or {}
    kto = rep.get("kto") or {}
    return {"version": b["ref"], "version_id": b["version_id"], "method": b["method"],
            "counts": {"sft": ex.get("sft", 0), "replay": ex.get("replay", 0), "kto": ex.get("kto", 0),
                       "kto_desirable": kto.get("desirable", 0), "kto_undesirable": kto.get("undesirable", 0),
                       "dpo": ex.get("dpo", 0)},
            "ratings": rep.get("ratings", 0), "ratings_used": rep.get("ratings_used", 0),
            "ratings_left_out": rep.get("ratings_left_out", 0), "since": b["since"],
            "from_adapter": b["from_adapter"], "user": b["user"], "created_at": b["created_at"]}

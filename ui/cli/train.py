"""CLI commands for training: `tuneloop train`, `tuneloop runs`, `tuneloop runs show|cancel`.

    tuneloop train --dataset support@2 --preset quick --rank 8 --wait
    tuneloop train --dataset feedback@3 --method sft+dpo --beta 0.1 --pref-lr 2e-5 --wait
    tuneloop runs --json
    tuneloop runs cancel 7 --keep-checkpoint
    tuneloop runs resume 7 --wait
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from ui.cli.common import emit_json, fail, settings

from ui.text import HELD_OUT_LOSS, LAST_STEP_LOSS, duration, loss_bits, speed_text

if TYPE_CHECKING:
    from training.queue import RunProgress

PRESET_HELP = ("quick (one pass, rank 8), standard (3 epochs, rank 16) or thorough "
               "(4 epochs, rank 32 capped at the server's).")
METHOD_HELP = ("sft: supervised on the answers; kto: from rated answers (thumbs up/down); dpo: from answer pairs, "
               "chosen over rejected (A/B verdicts, corrections); sft+kto / sft+dpo: SFT first, then KTO/DPO on its "
               "result, one adapter. kto and dpo need a feedback dataset version (tuneloop feedback build). "
               "Default: the feedback build's method, else sft.")




app = typer.Typer()  # merged into the top-level `tuneloop` app by ui.cli

@app.command()
def train(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset to train on: NAME (latest) or NAME@VERSION."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: a name from `tuneloop models` or a model "
                                                            "directory (default: the configured one)."),
    from_adapter: Optional[str] = typer.Option(
        None, "--from-adapter", help="Continue from this adapter (its weights, rank and base). Default for a "
                                     "feedback dataset version: the adapter its build was made for."),
    method: Optional[str] = typer.Option(None, "--method", help=METHOD_HELP),
    preset: str = typer.Option("standard", "--preset", help=PRESET_HELP),
    rank: Optional[int] = typer.Option(None, "--rank", help="LoRA rank (1, 8, 16, 32, ...; at most the server's)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="LoRA alpha (the update is scaled by alpha/rank)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="LoRA dropout."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the training conversations."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Conversations per micro-batch."),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Longest example, in tokens."),
    eval_fraction: Optional[float] = typer.Option(None, "--eval-fraction",
                                                  help="Share held out for the eval loss, in [0, 0.5)."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Steps between evaluations."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for the split, LoRA init and data order."),
    beta: Optional[float] = typer.Option(None, "--beta", help="KTO/DPO: how strongly training is held to the "
                                                              "adapter it starts from; higher stays closer "
                                                              "(default 0.1)."),
    pref_lr: Optional[float] = typer.Option(None, "--pref-lr", help="KTO/DPO peak learning rate (default 2e-5; "
                                                                    "--lr is the SFT phase's)."),
    pref_epochs: Optional[float] = typer.Option(None, "--pref-epochs",
                                                help="KTO/DPO passes over the rated rows (default 2)."),
    pref_max_steps: Optional[int] = typer.Option(None, "--pref-max-steps",
                                                 help="KTO/DPO optimizer steps (overrides --pref-epochs)."),
    name: Optional[str] = typer.Option(None, "--name", help="Adapter name (default: <dataset>-v<N>)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run to its end, showing progress."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what the run would do (steps, tokens, truncated "
                                                          "conversations, time on this machine) and start nothing."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="With --dry-run and no earlier run on this base "
                                                                "model: time a 3-step probe for the estimate."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Start a LoRA fine-tune on a dataset version; prints the run id at once (or follows it with --wait)."""
    from training.config import ConfigError
    from training import queue

    s = settings()
    overrides = dict(lora_rank=rank, lora_alpha=alpha, lora_dropout=dropout, learning_rate=lr, epochs=epochs,
                     max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, max_seq_len=max_seq_len,
                     eval_fraction=eval_fraction, eval_every=eval_every, seed=seed, beta=beta,
                     pref_learning_rate=pref_lr, pref_epochs=pref_epochs, pref_max_steps=pref_max_steps)
    if dry_run:
        dry(s, as_json=as_json, probe=probe, dataset=dataset, preset=preset, base_model=base,
            from_adapter=from_adapter, name=name, method=method, **overrides)
        return
    try:
        run_id = queue.start_run(s, dataset=dataset, preset=preset, base_model=base, from_adapter=from_adapter,
                           name=name, method=method, **overrides)
    except ConfigError as exc:
        refuse(exc, as_json=as_json)
    started(s, run_id, wait=wait, as_json=as_json)


def dry(s, *, as_json: bool, probe: bool, **options) -> None:
    """`tuneloop train --dry-run`: the planned run and its estimate; nothing is queued or written."""
    from training.config import ConfigError
    from training.dryrun import preview
    from ui.text import estimate_lines

    try:
        plan = preview(s, probe=probe, **options)
    except ConfigError as exc:
        refuse(exc, as_json=as_json)
    except ValueError as exc:  # e.g. no training example left after the length limit
        fail(str(exc), 2, as_json=as_json)
    if as_json:
        emit_json(plan.to_json())
        return
    c = plan.config
    typer.echo(f"dry run (nothing started): {c.method} on {c.dataset}, from {c.from_adapter or 'the base model'} "
               f"({c.base_model}), preset {c.preset}, rank {c.lora_rank}")
    for line in estimate_lines(plan.estimate):
        typer.echo("  " + line)
    from training.base_models import not_served_note

    note = not_served_note(s, c.base_model)
    if note:
        typer.echo(f"  note: {note}")

runs_app = typer.Typer(help="List training runs, show one, cancel or resume one.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")

@runs_app.callback()
def runs_list(ctx: typer.Context,
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List training runs with status, progress and final metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from store import runs
    from store.db import connect
    from training.queue import describe, startup

    s = settings()
    startup(s)
    with connect(s.db_path) as db:
        rows = [describe(db, r) for r in runs.list_runs(db)]
    if as_json:
        emit_json([r.to_json() for r in rows])
        return
    if not rows:
        typer.echo("no runs yet: start one with `tuneloop train --dataset NAME`")
        return
    for info in rows:
        typer.echo(progress_line(info))

@runs_app.command("show")
def runs_show(run_id: int = typer.Argument(..., help="Run id."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show one run: progress, metrics, adapter, and the error and log tail if it failed."""
    from store.runs import RunNotFound
    from training.queue import progress, reconcile

    s = settings()
    reconcile(s)
    try:
        info = progress(s, run_id)
    except RunNotFound as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(info.to_json())
        return
    typer.echo(progress_line(info))
    if info.ray_job:
        typer.echo(f"ran on the Ray cluster as job {info.ray_job}")
    if info.status in ("completed", "failed", "cancelled"):
        typer.echo(final_line(info))
    if info.log_tail:
        typer.echo("log tail:\n" + info.log_tail)

@runs_app.command("cancel")
def runs_cancel(run_id: int = typer.Argument(..., help="Run id."),
                keep_checkpoint: bool = typer.Option(
                    False, "--keep-checkpoint", help="Keep the adapter trained so far (registered as partial)."),
                as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Cancel a run: a queued one at once, a running one after its current step."""
    from store.runs import RunNotFound
    from training.queue import cancel

    s = settings()
    try:
        status = cancel(s, run_id, keep_checkpoint=keep_checkpoint)
    except RunNotFound as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"id": run_id, "status": status})
    elif status == "cancelled":
        typer.echo(f"run {run_id} cancelled")
    elif status == "running":
        kept = " (keeping the adapter so far)" if keep_checkpoint else ""
        typer.echo(f"run {run_id} stops after its current step{kept}")
    else:
        fail(f"run {run_id} already ended ({status})")


@runs_app.command("resume")
def runs_resume(run_id: int = typer.Argument(..., help="Run id of a failed or cancelled run."),
                wait: bool = typer.Option(False, "--wait", help="Follow the run to its end, showing progress."),
                as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Resume a failed or cancelled run from its last checkpoint; it ends at the same step count."""
    from store.runs import RunNotFound
    from training.queue import ResumeRefused, reconcile, resume

    s = settings()
    reconcile(s)  # a run whose process died is failed (and so resumable) from here on
    try:
        step = resume(s, run_id)
    except (RunNotFound, ResumeRefused) as exc:
        fail(str(exc), as_json=as_json)
    if not as_json:
        typer.echo(f"run {run_id} resumes from its checkpoint at step {step}")
    started(s, run_id, wait=wait, as_json=as_json)


def started(s, run_id: int, *, wait: bool, as_json: bool) -> None:
    """After a run is queued: say so at once, or with `wait` follow it to its end."""
    from training.queue import progress

    from training.base_models import not_served_note

    info = progress(s, run_id)
    note = not_served_note(s, info.base_model) if info.base_model else None
    if note and not as_json:
        typer.echo(f"note: {note}")
    if info.excluded_conversations and not as_json:
        typer.echo(f"note: {info.excluded_conversations} conversation(s) of {info.dataset} held out, never trained "
                   "on: they are eval items, and an adapter is never trained on what it is judged on")
    if wait:
        follow(s, run_id, as_json=as_json)
        return
    if as_json:
        emit_json(info.to_json())
        return
    typer.echo(f"run {run_id} {info.status}: {info.method} on {info.dataset}, from "
               f"{info.from_adapter or 'the base model'}, preset {info.preset} "
               f"(follow with `tuneloop runs show {run_id}`)")


def follow(s, run_id: int, *, as_json: bool) -> None:
    """Follow a run to its end, a progress line per step; exits non-zero unless it completed."""
    from training.queue import wait as wait_run

    show = None if as_json else (lambda i: typer.echo(progress_line(i)))
    try:
        info = wait_run(s, run_id, on_progress=show)
    except KeyboardInterrupt:
        typer.echo(f"\nstopped following run {run_id}; it keeps training (cancel: `tuneloop runs cancel {run_id}`)")
        raise typer.Exit(130)
    if as_json:
        emit_json(info.to_json())
    else:
        typer.echo(final_line(info))
    if info.status != "completed":
        raise typer.Exit(1)


def progress_line(info: RunProgress) -> str:
    """`#7 running support@2 step 12/40 last-step loss 1.234 held-out loss 1.456 lr 2.0e-04 150 trained tokens/s ...`"""
    parts = [f"#{info.id}", f"{info.status:<9}", info.dataset or "?"]
    if info.total_steps:
        parts.append(f"step {info.step}/{info.total_steps}")
    if info.loss is not None:
        parts.append(f"{LAST_STEP_LOSS} {info.loss:.4f}")
    if info.eval_loss is not None:
        parts.append(f"{HELD_OUT_LOSS} {info.eval_loss:.4f}")
    if info.learning_rate is not None and info.status == "running":
        parts.append(f"lr {info.learning_rate:.1e}")
    if info.tokens_per_second:
        parts.append(speed_text(info.tokens_per_second))
    if info.step_seconds and info.status == "running":
        parts.append(f"{info.step_seconds:.1f} s/step")
    if info.eta_seconds is not None:
        parts.append(f"ETA {duration(info.eta_seconds)}")
    if info.adapter:
        parts.append(f"-> {info.adapter}")
    if info.cancel_requested and info.status == "running":
        parts.append("(cancelling)")
    return " ".join(parts)


def final_line(info: RunProgress) -> str:
    again = (f" (resume it from step {info.resume_step}: `tuneloop runs resume {info.id}`)"
             if info.resume_step is not None else "")
    if info.status == "failed":
        return f"run {info.id} failed: {info.error}{again}"
    bits = [f"run {info.id} {info.status}{again}"]
    if info.adapter:
        bits.append(f"adapter {info.adapter}")
    return ", ".join(bits + (loss_bits(info.metrics) if info.metrics else []))


# The flag that sets each RunConfig field a refusal can name (training.config.ConfigError.field).
CONFIG_FLAGS = {
    "dataset": "--dataset", "base_model": "--base", "from_adapter": "--from-adapter", "method": "--method",
    "preset": "--preset", "lora_rank": "--rank", "lora_alpha": "--alpha", "lora_dropout": "--dropout",
    "learning_rate": "--lr", "epochs": "--epochs", "max_steps": "--max-steps", "batch_size": "--batch-size",
    "grad_accum": "--grad-accum", "max_seq_len": "--max-seq-len", "eval_fraction": "--eval-fraction",
    "eval_every": "--eval-every", "seed": "--seed", "beta": "--beta", "pref_learning_rate": "--pref-lr",
    "pref_epochs": "--pref-epochs", "pref_max_steps": "--pref-max-steps", "name": "--name",
    "ray_address": "TUNELOOP_RAY_ADDRESS",  # a setting, not a flag (training.ray_backend.preflight)
}


def refuse(exc, *, as_json: bool) -> None:
    """A run the planner refused (ConfigError), worded with the flag that changes it."""
    fail(f"refused: {CONFIG_FLAGS.get(exc.field, exc.field)}: {exc.reason}", 2, as_json=as_json)

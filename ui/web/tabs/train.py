"""The Train tab: start a LoRA run, follow it live (progress, time left, loss chart, tokens/s, log),
cancel it, and see past runs.

Runs are separate processes (training.queue, training.worker) that write their progress to the store; this tab only
reads the store, every couple of seconds (a gr.Timer). So closing the browser or reloading the page
never stops or loses a run: the page shows it where it is.

    .venv/bin/python -m pytest tests/test_web_tabs.py -q
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from store import runs as run_store
from store.adapters import list_adapters
from store.datasets import list_datasets
from store.settings import VLLM_LORA_RANKS
from training.results import RunMetrics
from ui.web.context import AppContext, fail, unexpected
from ui.text import HELD_OUT_LOSS, LAST_STEP_LOSS, SPEED, duration, method_choices, short_time
from ui.web.html import progress_bar_html

if TYPE_CHECKING:
    from training.queue import RunProgress

TICK_S = 2.0
LATEST = "latest"
RUN_COLUMNS = ["Run", "Status", "Dataset", "Started from", "Preset", "Steps", "Mean training loss", "Held-out loss",
               "Took", "Adapter", "Created (UTC)"]
METHOD_CHOICES = method_choices()
STATUS_WORDS = {"queued": "waiting to start", "running": "training", "completed": "finished",
                "failed": "failed", "cancelled": "cancelled"}

# The knobs shown, with what they do and their usual range (RunConfig's docstrings say the same).
HELP = {
    "epochs": "How many times training reads every conversation. Usual: 1–4. More fits your data closer "
              "but can parrot it.",
    "max_steps": "Stop after this many optimizer steps instead (0 = use epochs). Handy for a quick trial.",
    "learning_rate": "How big each update is. Usual for LoRA: 0.0001–0.0003. Too high makes the loss jump.",
    "lora_rank": "Capacity of the adapter. Usual: 8–16 for tone and rules, 32+ for a lot of new content.",
    "batch_size": "Conversations per step (more = smoother, more memory). Usual: 2–8.",
    "grad_accum": "Steps added up before one update: batch size × this = conversations per update. Usual: 1–4.",
    "max_seq_len": "Longest conversation kept, in tokens (~0.75 words each); longer ones are cut at a whole "
                   "turn. Usual: 512–2048.",
    "eval_fraction": "Share of conversations held out to measure the held-out loss (not trained on). "
                     "Usual: 0.05–0.2; 0 turns it off.",
    "lora_alpha": "Scales the adapter's update (by alpha ÷ rank). Follows the rank at the preset's ratio (2 × rank) "
                  "until you change it. Usual: 1–2 × rank.",
    "lora_dropout": "Share of the adapter's inputs dropped at random while training, against parroting. "
                    "Usual: 0–0.1.",
    "target_modules": "Layers that get an adapter: all-linear (every linear layer but the output head), or names "
                      "separated by commas, e.g. q_proj, v_proj (fewer = smaller, faster, less capacity).",
}


# What each preset does, not how long it takes: that follows the data (the quick preset took 118 steps, about
# 17 minutes, on 524 conversations on CPU), and the estimate below the form says it for this run before Start.
PRESET_INFO = ("quick: one pass, short context, rank 8 · standard: three passes, rank 16, for a few hundred chats · "
               "thorough: four passes, rank 32, for thousands. Sets the values below; how long a run takes depends "
               "on the data: see the estimate before you start.")


class QueueTrainer:
    """The real trainer (ui.web.context.Trainer): training.queue's planning, queue and cancel."""

    def __init__(self, settings):
        self.settings = settings
        self._probe_speeds: dict = {}  # base model -> the last probe's training.estimate.Speed

    def start(self, **options) -> int:
        from training.queue import start_run

        return start_run(self.settings, **options)

    def cancel(self, run_id: int) -> str:
        from training.queue import cancel

        return cancel(self.settings, run_id)

    def reconcile(self) -> None:
        from training.queue import reconcile

        reconcile(self.settings)

    def log_tail(self, run_dir: str | None, lines: int = 40) -> str:
        from training.launch import log_tail

        return log_tail(run_dir, lines)

    def estimate(self, *, measure: bool = False, **options):
        """The run's cost (training.dryrun); a probe only when asked, its speed kept for later estimates."""
        from training.dryrun import preview

        speeds = self._probe_speeds
        plan = preview(self.settings, probe=measure, fallback_speed=None if measure else
                       speeds.get(options.get("base_model") or ""), **options)
        if measure and plan.speed is not None:
            speeds[options.get("base_model") or ""] = plan.speed
        return plan

    def resume(self, run_id: int) -> int:
        from training.queue import resume

        return resume(self.settings, run_id)


def preset_values(preset: str) -> dict[str, Any]:
    from training.config import PRESETS

    p = PRESETS[preset]
    return {"epochs": p["epochs"] or 0, "max_steps": p["max_steps"] or 0, "learning_rate": p["learning_rate"],
            "lora_rank": p["lora_rank"], "batch_size": p["batch_size"], "grad_accum": p["grad_accum"],
            "max_seq_len": p["max_seq_len"], "eval_fraction": p["eval_fraction"], "lora_alpha": p["lora_alpha"],
            "lora_dropout": p["lora_dropout"], "target_modules": "all-linear"}


def alpha_for(preset: str, rank) -> float:
    """The alpha a rank gets under a preset (training.config's rule: the preset's alpha/rank ratio)."""
    from training.config import RunConfig

    return RunConfig.from_preset(preset, lora_rank=int(rank)).lora_alpha


def parse_modules(text: str | None) -> str | list[str]:
    """'all-linear' or 'q_proj, v_proj' -> RunConfig.target_modules (validated there)."""
    names = [m.strip() for m in (text or "").replace("\n", ",").split(",") if m.strip()]
    return "all-linear" if not names or names == ["all-linear"] else names


def feedback_build(ctx: AppContext, ref: str | None) -> dict | None:
    """The feedback build behind dataset version `ref`, or None (an import, or nothing picked)."""
    from store.datasets import DatasetNotFound, resolve_version
    from store.feedback import get_build

    if not ref:
        return None
    with ctx.db() as db:
        try:
            return get_build(db, resolve_version(db, ref).id)
        except (DatasetNotFound, ValueError):
            return None


def automatic_name_for(ctx: AppContext, dataset: str | None, start_from: str | None) -> str:
    """The name the adapter of a run on `dataset` from `start_from` gets when the name is left empty."""
    from store.adapters import AdapterNotFound, automatic_name, family_for, get_adapter

    if not dataset:
        return "automatic"
    with ctx.db() as db:
        parent = None
        if start_from and start_from != ctx.settings.base_model_path:
            try:
                parent = get_adapter(db, start_from)
            except AdapterNotFound:
                parent = None
        return automatic_name(db, family_for(dataset, parent))


def rank_choices(max_rank: int) -> list[int]:
    return [r for r in VLLM_LORA_RANKS if 4 <= r <= max_rank] or [max_rank]


def run_options(dataset, start_from, preset, epochs, max_steps, learning_rate, lora_rank, batch_size,
                grad_accum, max_seq_len, eval_fraction, name, method="sft", base=None, lora_alpha=None,
                lora_dropout=None, target_modules=None, *, base_value: str) -> dict:
    """The UI's fields as training.queue.start_run options (pure; the rules and validation are training's)."""
    if not dataset:
        raise fail("Pick the dataset version to train on (import logs in the Data tab first).")
    from_adapter = None if start_from in (None, "", base_value) else start_from
    steps = int(max_steps or 0)
    options = {
        "dataset": dataset, "preset": preset, "from_adapter": from_adapter, "name": (name or "").strip() or None,
        "method": method or "sft",
        "learning_rate": float(learning_rate), "batch_size": int(batch_size), "grad_accum": int(grad_accum),
        "max_seq_len": int(max_seq_len), "eval_fraction": float(eval_fraction),
    }
    if steps > 0:
        options["max_steps"] = steps
    else:
        if not epochs or float(epochs) <= 0:
            raise fail("Set the number of epochs (or a number of steps above 0).")
        options["epochs"] = float(epochs)
    if from_adapter is None:
        options["lora_rank"] = int(lora_rank)  # alpha follows the preset's alpha/rank (training.config)
        if lora_alpha:  # the field shows that rule's value until someone changes it
            options["lora_alpha"] = float(lora_alpha)
        if target_modules is not None:
            options["target_modules"] = parse_modules(target_modules)
        if base and base != base_value:
            options["base_model"] = base
    if lora_dropout is not None:
        options["lora_dropout"] = float(lora_dropout)
    return options


FIELD_LABELS = {"dataset": "Dataset version", "from_adapter": "Start from", "name": "Adapter name",
                "lora_rank": "LoRA rank", "learning_rate": "Learning rate", "epochs": "Epochs",
                "max_steps": "Steps", "batch_size": "Batch size", "grad_accum": "Gradient accumulation",
                "max_seq_len": "Max length", "eval_fraction": "Held-out share", "base_model": "Base model",
                "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout", "target_modules": "Target modules",
                "ray_address": "Ray cluster (TUNELOOP_RAY_ADDRESS)"}


def start(ctx: AppContext, *fields):
    from training.config import ConfigError

    if ctx.trainer is None:
        raise fail("Training is not available in this app (it was started without a trainer).")
    options = run_options(*fields, base_value=ctx.settings.base_model_path)
    try:
        run_id = ctx.trainer.start(**options)
    except ConfigError as exc:
        raise fail(f"{FIELD_LABELS.get(exc.field, exc.field)}: {html.escape(exc.reason)}. "
                   "Change it and press Start again; nothing was started.")
    except Exception as exc:  # noqa: BLE001
        raise unexpected("Starting the run", exc)
    gr.Info(f"Run {run_id} started. It keeps going if you close this page.")
    return run_id


# ------------------------------------------------------------------ reading a run

def pick_run(db, selected: str | None) -> dict | None:
    """The run to show: the chosen one, or for 'latest' the newest active run, else the newest run."""
    if selected and selected != LATEST:
        try:
            return run_store.get_run(db, int(selected))
        except (run_store.RunNotFound, ValueError):
            return None
    active = run_store.list_runs(db, status=run_store.ACTIVE, limit=1)
    if active:
        return active[0]
    newest = run_store.list_runs(db, limit=1)
    return newest[0] if newest else None


MIN_AXIS_STEPS = 20
"""The loss chart's step axis spans at least this many steps: Vega puts half-step ticks on a shorter one."""


def step_axis(total_steps: int | None, metrics: list[dict]) -> list[int]:
    """The loss chart's x range: from step 0 to the run's planned last step (the whole run, so the curve shows
    how far it is), never shorter than MIN_AXIS_STEPS, never negative (an empty chart used to run 0 to -1)."""
    last = max((m["step"] for m in metrics), default=0)
    return [0, max(total_steps or 0, last, MIN_AXIS_STEPS)]


def loss_frame(metrics: list[dict]) -> pd.DataFrame:
    """Training and held-out loss per step, long format for a LinePlot coloured by curve.

    The chart fixes its axis types and its list of curves from the first frame it draws (later
    frames only replace the data), so every frame has typed columns and one empty (NaN, not drawn)
    point of each curve before the first step: an empty first frame would otherwise turn the loss axis into categories
    and leave both curves out for good.
    """
    rows = [(m["step"], m["value"], "training" if m["name"] == "loss" else "held-out")
            for m in metrics if m["name"] in ("loss", "eval_loss")]
    # Before the first step, so a NaN point never sits between two real ones (that breaks a line).
    before = min((r[0] for r in rows), default=0) - 1
    rows = [(before, float("nan"), "training"), (before, float("nan"), "held-out")] + rows
    return pd.DataFrame({"step": pd.Series([r[0] for r in rows], dtype="int64"),
                         "loss": pd.Series([r[1] for r in rows], dtype="float64"),
                         "curve": pd.Series([r[2] for r in rows], dtype="object")})


def run_summary(run: dict, info: RunProgress, settings=None) -> str:
    started_from = info.from_adapter or "the base model"
    status = STATUS_WORDS.get(run["status"], run["status"])
    if run["status"] == "running" and info.cancel_requested:
        status = "cancelling (stops after the current step)"
    lines = [f"**Run {run['id']}**: {status} · dataset **{html.escape(str(info.dataset or '?'))}** · "
             f"from {html.escape(started_from)} · preset {html.escape(str(info.preset or '?'))}"
             + (f" · on the Ray cluster as job `{html.escape(info.ray_job)}`" if info.ray_job else "")]
    if info.adapter:
        lines.append(f"Made adapter **{html.escape(info.adapter)}**: compare it with the base model in the "
                     "Compare tab.")
    if run["status"] == "failed" and info.error:
        lines.append(f"⚠️ {html.escape(info.error)}")
    if run["status"] == "queued":
        lines.append("It starts when the run before it finishes.")
    if info.resume_step is not None:
        lines.append(f"It can resume from its checkpoint at step {info.resume_step} of {info.total_steps}: press "
                     "Resume.")
    if settings is not None and info.base_model:
        from training.base_models import not_served_note

        note = not_served_note(settings, info.base_model)
        if note:
            lines.append(f"Base model {html.escape(info.base_model)}: {html.escape(note[0].upper() + note[1:])}.")
    if info.excluded_conversations:
        lines.append(f"{info.excluded_conversations} conversation(s) held out, never trained on: they are eval items, "
                     "and an adapter is never trained on what it is judged on.")
    return "\n\n".join(lines)


def progress_view(info: RunProgress) -> tuple[str, str]:
    """(progress bar HTML, stats markdown) for one run's state."""
    step, total = info.step or 0, info.total_steps or 0
    status = info.status
    if status == "completed":
        fraction, label = 1.0, f"Done: {step} of {total or step} steps"
    elif total:
        fraction = step / total
        left = duration(info.eta_seconds)
        label = f"Step {step} of {total} ({fraction:.0%})" + (f", about {left} left" if left and status == "running"
                                                             else "")
    else:
        fraction = None
        label = {"queued": "Waiting to start", "running": "Loading the model and data…"}.get(status, STATUS_WORDS.get(
            status, status))
    stats = []
    if info.loss is not None:
        stats.append(f"{LAST_STEP_LOSS} **{info.loss:.3f}**")
    if info.eval_loss is not None:
        stats.append(f"{HELD_OUT_LOSS} **{info.eval_loss:.3f}**")
    if info.tokens_per_second:
        stats.append(f"**{info.tokens_per_second:,.0f}** {SPEED}")
    if info.step_seconds:
        stats.append(f"**{info.step_seconds:.1f}** s per step")
    if info.learning_rate is not None:
        stats.append(f"learning rate {info.learning_rate:.2e}")
    return progress_bar_html(fraction, label), " · ".join(stats) or "No measurements yet."


def _took(run: dict) -> str:
    from datetime import datetime

    if not run.get("started_at") or not run.get("finished_at"):
        return ""
    return duration((datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"]))
                    .total_seconds())


def runs_table(db) -> pd.DataFrame:
    rows = []
    for r in run_store.list_runs(db, limit=100):
        m = RunMetrics.from_dict(r["metrics"])
        train_loss = m.train_loss
        rows.append([r["id"], STATUS_WORDS.get(r["status"], r["status"]), r["config"].get("dataset", ""),
                     r["config"].get("from_adapter") or "base model", r["config"].get("preset", ""),
                     f"{r['step']}/{r['total_steps']}" if r["total_steps"] else str(r["step"] or ""),
                     f"{train_loss:.3f}" if isinstance(train_loss, (int, float)) else "",
                     f"{m.eval_loss:.3f}" if m.eval_loss is not None else "",
                     _took(r), r.get("adapter_name") or "", short_time(r["created_at"])])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_choices(db) -> list[tuple[str, str]]:
    out = [("Latest run (follows new runs)", LATEST)]
    for r in run_store.list_runs(db, limit=50):
        out.append((f"Run {r['id']} · {r['config'].get('dataset', '?')} · {STATUS_WORDS.get(r['status'], r['status'])}",
                    str(r["id"])))
    return out


def poll(ctx: AppContext, selected: str | None, last_sig):
    """Everything the run panel shows, read fresh from the store (called by the timer and on load)."""
    from training.queue import describe

    if ctx.trainer is not None:
        try:
            ctx.trainer.reconcile()  # a run whose process died is marked failed, with its log
        except Exception:  # noqa: BLE001 - showing progress matters more
            pass
    with ctx.db() as db:
        run = pick_run(db, selected)
        table = runs_table(db)
        if run is None:
            empty = loss_frame([])
            return ("No runs yet: pick a dataset version and press Start.", progress_bar_html(0, "No run"),
                    "", gr.update(value=empty, x_lim=step_axis(None, [])) if last_sig != "empty" else gr.skip(), "",
                    gr.update(interactive=False), table,
                    "empty", gr.update(visible=False))
        info = describe(db, run)
        metrics = run_store.run_metrics(db, run["id"])
    sig = f"{run['id']}:{len(metrics)}"
    bar, stats = progress_view(info)
    tail = ""
    if ctx.trainer is not None:
        tail = ctx.trainer.log_tail(run.get("run_dir"), 40) or ""
    tail = tail or info.log_tail or ""
    plot = (gr.update(value=loss_frame(metrics), x_lim=step_axis(info.total_steps, metrics)) if sig != last_sig
            else gr.skip())
    cancellable = run["status"] in run_store.ACTIVE and not info.cancel_requested
    resumable = gr.update(visible=info.resume_step is not None,
                          value=f"Resume from step {info.resume_step}" if info.resume_step is not None else "Resume")
    return (run_summary(run, info, ctx.settings), bar, stats, plot, tail, gr.update(interactive=cancellable), table,
            sig, resumable)


def cancel(ctx: AppContext, selected: str | None):
    if ctx.trainer is None:
        raise fail("Training is not available in this app.")
    with ctx.db() as db:
        run = pick_run(db, selected)
    if run is None or run["status"] not in run_store.ACTIVE:
        raise fail("There is no waiting or running run to cancel here.")
    status = ctx.trainer.cancel(run["id"])
    gr.Info(f"Run {run['id']} " + ("cancelled." if status == "cancelled" else
                                    "will stop after its current step; the page shows when it has."))


# ------------------------------------------------------------------ before a run: cost, base models, resume

ESTIMATE_EMPTY = "**Before you start:** pick a dataset version to see the steps, tokens and time the run will take."
BASE_INFO = ("The model the adapter is trained on; the default comes with tuneloop. This server's vLLM serves one "
             "base model: adapters trained on another can be exported (Adapters tab) but not chatted with here.")


def estimate_text(ctx: AppContext, *fields, measure: bool = False) -> str:
    """The planned run's cost as markdown (steps, tokens, truncated chats, time here), or why it cannot be planned."""
    from training.config import ConfigError
    from ui.text import estimate_lines

    if ctx.trainer is None:
        return ""
    try:
        options = run_options(*fields, base_value=ctx.settings.base_model_path)
    except gr.Error:
        return ESTIMATE_EMPTY
    try:
        plan = ctx.trainer.estimate(measure=measure, **options)
    except ConfigError as exc:
        return (f"**Before you start:** ⚠️ {FIELD_LABELS.get(exc.field, exc.field)}: {html.escape(exc.reason)}. "
                "Start would refuse this; change it first.")
    except ValueError as exc:  # e.g. every conversation longer than the max length
        return f"**Before you start:** ⚠️ {html.escape(str(exc))}"
    except Exception as exc:  # noqa: BLE001 - the estimate is advice: say so, never block the form
        unexpected("Estimating the run", exc)
        return f"**Before you start:** the estimate could not be made ({html.escape(type(exc).__name__)})."
    lines = estimate_lines(plan.estimate)
    text = "**Before you start** (nothing is started yet):\n\n" + "\n".join(f"- {html.escape(x)}" for x in lines)
    if plan.estimate.seconds is None:
        text += "\n\nPress *Measure this machine's speed* for a time estimate."
    from training.base_models import not_served_note

    note = not_served_note(ctx.settings, plan.config.base_model) if plan.config.base_model else None
    if note:
        text += f"\n\n⚠️ Base model: {html.escape(note)}."
    return text


def base_options(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, value) for the base model picker: the default first (value: its path), then registered ones (name)."""
    from training.base_models import base_choices

    out = []
    for c in base_choices(ctx.settings):
        where = "served here" if c.served else "not served by this server"
        if c.default:
            out.append((f"{c.name} (default, {where})", ctx.settings.base_model_path))
        else:
            out.append((f"{c.name} ({c.architecture or 'model'}, {where})", c.name))
    return out


def add_base(ctx: AppContext, path: str | None, name: str | None) -> str:
    """Check and register a base model folder; returns its name (what the picker selects)."""
    from training.base_models import BaseModelError, not_served_note, register

    if not (path or "").strip():
        raise fail("Type the model folder's path on this server first.")
    try:
        added, check = register(ctx.settings, path.strip(), name=(name or "").strip() or None)
    except BaseModelError as exc:
        label = {"path": "Model folder", "name": "Name"}.get(exc.field, exc.field)
        raise fail(f"{label}: {html.escape(exc.reason)}. Nothing was added.")
    note = not_served_note(ctx.settings, check.path)
    gr.Info(f"Base model {added} added ({', '.join(check.architectures)})." + (f" Note: {note}." if note else ""))
    return added


def resume(ctx: AppContext, selected: str | None) -> int:
    if ctx.trainer is None:
        raise fail("Training is not available in this app.")
    from training.queue import ResumeRefused

    with ctx.db() as db:
        run = pick_run(db, selected)
    if run is None:
        raise fail("There is no run to resume here.")
    try:
        step = ctx.trainer.resume(run["id"])
    except ResumeRefused as exc:
        raise fail(f"{html.escape(str(exc)).capitalize()}.")
    gr.Info(f"Run {run['id']} resumes from its checkpoint at step {step}.")
    return step


# ------------------------------------------------------------------ layout

def form_choices(ctx: AppContext):
    with ctx.db() as db:
        refs = [v["ref"] for d in list_datasets(db) for v in d["versions"]]
        adapters = [a["name"] for a in list_adapters(db, include_archived=False)]
    base = ctx.settings.base_model_path
    start_from = [("The base model (picked below)", base)] + [(f"Adapter {a} (continue training it)", a)
                                                               for a in adapters]
    return refs, start_from, base


def render(ctx: AppContext):
    from training.config import DEFAULT_PRESET, PRESETS

    values = preset_values(DEFAULT_PRESET)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            gr.Markdown("### New run")
            dataset = gr.Dropdown([], label="Dataset version", elem_id="train-dataset",
                                  info="What to train on. Import logs in the Data tab to add one.")
            start_from = gr.Dropdown([], label="Start from", elem_id="train-from",
                                     info="The base model, or an earlier adapter to keep improving it.")
            base_picker = gr.Dropdown(base_options(ctx), value=ctx.settings.base_model_path, label="Base model",
                               elem_id="train-base", info=BASE_INFO)
            with gr.Accordion("Add a base model from a folder on this server", open=False, elem_id="train-add-base"):
                new_base_path = gr.Textbox(label="Model folder", placeholder="/models/Qwen2.5-0.5B-Instruct",
                                           elem_id="train-add-base-path",
                                           info="A transformers model folder: config.json, weights, a tokenizer "
                                                "with a chat template. It is checked before it is offered.")
                new_base_name = gr.Textbox(label="Name (optional)", elem_id="train-add-base-name",
                                           info="Leave empty to name it after its folder.")
                add_base_btn = gr.Button("Check and add", size="sm", elem_id="train-add-base-btn")
            method = gr.Dropdown(METHOD_CHOICES, value="sft", label="Method", elem_id="train-method",
                                 info="SFT learns the answers in the data. KTO and DPO learn from ratings: they "
                                      "need a feedback dataset version (built in the Feedback tab), which "
                                      "picks the method and the adapter to start from for you.")
            preset = gr.Radio(list(PRESETS), value=DEFAULT_PRESET, label="Preset", elem_id="train-preset",
                              info=PRESET_INFO)
            with gr.Accordion("Settings", open=False, elem_id="train-settings"):
                with gr.Row():
                    epochs = gr.Number(values["epochs"], label="Epochs", info=HELP["epochs"], minimum=0,
                                       elem_id="train-epochs")
                    max_steps = gr.Number(values["max_steps"], label="Steps (0 = use epochs)", precision=0,
                                          minimum=0, info=HELP["max_steps"], elem_id="train-steps")
                with gr.Row():
                    learning_rate = gr.Number(values["learning_rate"], label="Learning rate",
                                              info=HELP["learning_rate"], minimum=0, elem_id="train-lr")
                    ranks = rank_choices(ctx.settings.max_lora_rank)
                    lora_rank = gr.Dropdown(ranks, value=min(values["lora_rank"], ranks[-1]), label="LoRA rank",
                                            info=HELP["lora_rank"] + " (kept when continuing an adapter)")
                with gr.Row():
                    lora_alpha = gr.Number(alpha_for(DEFAULT_PRESET, min(values["lora_rank"], ranks[-1])),
                                           label="LoRA alpha", minimum=0, info=HELP["lora_alpha"],
                                           elem_id="train-alpha")
                    lora_dropout = gr.Number(values["lora_dropout"], label="LoRA dropout", minimum=0, maximum=0.9,
                                             step=0.05, info=HELP["lora_dropout"], elem_id="train-dropout")
                target_modules = gr.Textbox(values["target_modules"], label="Target modules",
                                            info=HELP["target_modules"] + " Kept when continuing an adapter.",
                                            elem_id="train-targets")
                with gr.Row():
                    batch_size = gr.Number(values["batch_size"], label="Batch size", precision=0, minimum=1,
                                           info=HELP["batch_size"])
                    grad_accum = gr.Number(values["grad_accum"], label="Gradient accumulation", precision=0,
                                           minimum=1, info=HELP["grad_accum"])
                with gr.Row():
                    max_seq_len = gr.Number(values["max_seq_len"], label="Max length (tokens)", precision=0,
                                            minimum=32, info=HELP["max_seq_len"], elem_id="train-seq-len")
                    eval_fraction = gr.Number(values["eval_fraction"], label="Held-out share", minimum=0,
                                              maximum=0.45, step=0.05, info=HELP["eval_fraction"])
                name = gr.Textbox(label="Adapter name (optional)", placeholder="automatic", elem_id="train-name",
                                  info="Leave empty for the automatic name shown here. Names are never reused.")
            estimate_md = gr.Markdown(ESTIMATE_EMPTY, elem_id="train-estimate", elem_classes=["tl-estimate"])
            measure_btn = gr.Button("Measure this machine's speed (a 3-step probe, under a minute)", size="sm",
                                    elem_id="train-measure")
            start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
        with gr.Column(scale=7, min_width=400):
            gr.Markdown("### Run")
            with gr.Row():
                picked = gr.Dropdown([(LATEST, LATEST)], value=LATEST, label="Show", scale=4, elem_id="train-run")
                cancel_btn = gr.Button("Cancel run", variant="stop", scale=0, min_width=150, interactive=False,
                                       elem_id="train-cancel")
                resume_btn = gr.Button("Resume", variant="primary", scale=0, min_width=150, visible=False,
                                       elem_id="train-resume")
            summary = gr.Markdown(elem_id="train-summary")
            bar = gr.HTML(progress_bar_html(0, ""), elem_id="train-progress")
            stats = gr.Markdown(elem_id="train-stats")
            plot = gr.LinePlot(loss_frame([]), x="step", y="loss", color="curve",
                               label="Loss while training (lower is better)", show_label=True,
                               x_title="optimizer step", x_lim=step_axis(None, []),
                               y_title="loss (cross-entropy, nats per token)", color_title="curve",
                               color_map={"training": "#2563eb", "held-out": "#ea580c"},
                               elem_id="train-loss-plot", tooltip="all")
            with gr.Accordion("Training log (last lines)", open=False):
                log = gr.Code(language=None, lines=10, max_lines=16, interactive=False, elem_id="train-log",
                              show_label=False)
    gr.Markdown("### Past runs")
    table = gr.Dataframe(pd.DataFrame([], columns=RUN_COLUMNS), interactive=False, wrap=True, max_height=300,
                         elem_id="train-runs", elem_classes=["tl-table"],
                         column_widths=["6%", "9%", "11%", "11%", "8%", "7%", "8%", "9%", "8%", "11%", "12%"])
    sig = gr.State(None)
    timer = gr.Timer(TICK_S)

    knobs = [epochs, max_steps, learning_rate, lora_rank, batch_size, grad_accum, max_seq_len, eval_fraction]

    def on_preset(p):
        v = preset_values(p)
        ranks = rank_choices(ctx.settings.max_lora_rank)
        v["lora_rank"] = max([r for r in ranks if r <= v["lora_rank"]] or ranks[:1])
        return [v[k] for k in ("epochs", "max_steps", "learning_rate", "lora_rank", "batch_size", "grad_accum",
                               "max_seq_len", "eval_fraction")] + [alpha_for(p, v["lora_rank"]), v["lora_dropout"],
                                                                   v["target_modules"]]

    # `input`, not `change`: only a person's pick resets the values, once, never a later event
    # racing edits made after it (a late second reset turned "60 steps" back into "use epochs").
    preset.input(on_preset, [preset], [*knobs, lora_alpha, lora_dropout, target_modules], show_progress="hidden")
    # A rank picked by a person brings the preset's alpha for it (training.config's rule); alpha typed later wins.
    lora_rank.input(lambda p, r: alpha_for(p, r), [preset, lora_rank], [lora_alpha], show_progress="hidden")
    poll_outputs = [summary, bar, stats, plot, log, cancel_btn, table, sig, resume_btn]

    def do_poll(selected, last):
        return poll(ctx, selected, last)

    timer.tick(do_poll, [picked, sig], poll_outputs, show_progress="hidden", api_visibility="private")
    picked.change(lambda s: poll(ctx, s, None), [picked], poll_outputs, show_progress="hidden")

    def do_start(*fields):
        start(ctx, *fields)
        with ctx.db() as db:
            choices = run_choices(db)
        return gr.update(choices=choices, value=LATEST), *poll(ctx, LATEST, None)

    def on_dataset(ref, current_from):
        """A feedback version brings its round's method and adapter; every rated example trains (no held-out share)."""
        from training.planning import feedback_defaults

        defaults = feedback_defaults(feedback_build(ctx, ref))
        if not defaults:
            return gr.update(value="sft"), gr.skip(), gr.skip()
        return (gr.update(value=defaults["method"]), gr.update(value=defaults.get("from_adapter") or current_from),
                gr.update(value=defaults["eval_fraction"]))

    # `change`, not `input`: the version picked for the user on load (possibly a feedback one) counts too.
    dataset.change(on_dataset, [dataset, start_from], [method, start_from, eval_fraction], show_progress="hidden")
    for picker in (dataset, start_from):  # the placeholder shows the name the run's adapter will get
        picker.change(lambda d, f: gr.update(placeholder=automatic_name_for(ctx, d, f)), [dataset, start_from],
                      [name], show_progress="hidden")
    form = [dataset, start_from, preset, *knobs, name, method, base_picker, lora_alpha, lora_dropout, target_modules]
    start_btn.click(do_start, form, [picked, *poll_outputs],
                    api_name="train_start", concurrency_limit=1, concurrency_id="train-start")
    cancel_btn.click(lambda s: cancel(ctx, s), [picked], None, api_name="train_cancel")

    def do_resume(selected):
        resume(ctx, selected)
        return poll(ctx, selected, None)

    resume_btn.click(do_resume, [picked], poll_outputs, api_name="train_resume", concurrency_limit=1,
                     concurrency_id="train-start")
    # What the run will cost, again whenever the form changes (the last change wins; tokenizing takes a moment).
    gr.on([c.change for c in form if c is not name], lambda *f: estimate_text(ctx, *f), form, [estimate_md],
          trigger_mode="always_last", show_progress="hidden", api_visibility="private")
    measure_btn.click(lambda *f: estimate_text(ctx, *f, measure=True), form, [estimate_md],
                      concurrency_limit=1, concurrency_id="train-measure", show_progress="minimal")

    def do_add_base(path, new_name):
        added = add_base(ctx, path, new_name)
        return gr.update(choices=base_options(ctx), value=added), "", ""

    add_base_btn.click(do_add_base, [new_base_path, new_base_name], [base_picker, new_base_path, new_base_name],
                       api_name="train_add_base")

    def refresh(current_dataset, current_from, current_run, current_base=None):
        refs, start_choices, base = form_choices(ctx)
        bases = base_options(ctx)
        with ctx.db() as db:
            choices = run_choices(db)
        run_ids = {v for _, v in choices}
        keep_run = current_run if current_run in run_ids else LATEST
        return (gr.update(choices=refs, value=current_dataset if current_dataset in refs else
                          (refs[0] if refs else None)),
                gr.update(choices=start_choices, value=current_from if current_from in {v for _, v in start_choices}
                          else base),
                gr.update(choices=choices, value=keep_run), *poll(ctx, keep_run, None),
                gr.update(choices=bases, value=current_base if current_base in {v for _, v in bases} else base))

    return refresh, [dataset, start_from, picked, base_picker], [dataset, start_from, picked, *poll_outputs,
                                                                 base_picker]

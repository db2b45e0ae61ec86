"""The preference phase of a run: KTO or DPO (TRL) on a peft model that holds the adapter to improve.

    rows, stats = prepare(config, tokenizer, rows)   # store.feedback.iter_preference_examples rows
    steps = planned_steps(config, len(rows))          # known before an SFT phase starts (progress total)
    phase = setup(config, rows, model=model, tokenizer=tokenizer, output_dir=run_dir / "trainer", callbacks=[cb])
    result = train(phase)                             # {"steps", "train_loss", "final_loss", "rewards/...", ...}
    release(phase)                                    # drops the "ref" copy; then recipe.write_adapter(model, ...)

It is the "kto"/"dpo" method and the second phase of "sft+kto"/"sft+dpo" (training.run runs the
phases; `model` comes from recipe.load_model or the SFT session). What it does, and why:
- The reference is the adapter the phase starts from: TRL, given a PeftModel with a "default"
  adapter and no ref_model, copies it into a frozen "ref" adapter and scores the reference with it.
  So a round is held to the parent adapter, or to the SFT phase's result. `release` deletes "ref"
  and recipe.write_adapter writes "default" only: vLLM gets a plain LoRA directory.
- Rows are TRL's conversational format; TRL renders them with the base model's chat template.
  The completion is what the template adds after the generation prompt: the answer through the
  end-of-turn token (ChatML: `answer<|im_end|>\\n`; the trailing `\\n`, which the SFT recipe leaves
  untrained, is scored too: the same token after every answer, so it barely moves a preference).
- No row is cut: TRL truncates from the right, which would drop the end-of-turn token. A row
  longer than max_seq_len loses its oldest exchanges (the system message and the last user turn
  stay); a row that still does not fit is left out. `prepare` reports both counts.
- KTO: TRL estimates the KL term by pairing each answer with another row's prompt inside a
  micro-batch, in dataset order (sequential sampling), so rows are shuffled once with the seed
  (thumbs-up and thumbs-down rows arrive grouped from the build), batch_size >= 4 (RunConfig),
  and the first rows are repeated at the end to fill the last micro-batch: a short last batch
  gives a poor estimate (a batch of one pairs its answer with its own prompt, and learns nothing).
  desirable_weight / undesirable_weight come from the feedback build (balanced there).
- The phase length is fixed up front (`planned_steps`, passed as max_steps), so the run's total
  steps are known before an SFT phase starts and the progress bar runs on without a jump.
- No held-out split (see RunConfig); TRL's reward metrics (rewards/margins, rewards/accuracies,
  kl, ...) are logged every step with the loss. fp32 on CPU, bf16 autocast on a GPU that has it,
  no gradient checkpointing (TRL turns it on by default; these models are small), like the recipe.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.results import RunMetrics
from training.config import RunConfig
from training.recipe import device_kind

REF_ADAPTER = "ref"  # the name TRL gives the frozen reference copy of "default"


@dataclass
class Phase:
    """Everything `setup` built; `train` and `release` take it."""

    config: RunConfig
    kind: str
    model: object
    tokenizer: object
    trainer: object
    total_steps: int
    callbacks: list = field(default_factory=list)


# --- rows ---
def prepare(config: RunConfig, tokenizer, rows: list[dict]) -> tuple[list[dict], dict]:
    """Fit rows into max_seq_len (oldest exchanges dropped, rows that cannot fit left out); KTO rows
    shuffled, and the first ones repeated to fill the last micro-batch.

    Returns (rows, stats): stats counts rows in, trained (distinct), trimmed, left out, repeated
    (KTO), and the KTO labels of the distinct rows.
    """
    kind = config.preference_kind
    answers = ("completion",) if kind == "kto" else ("chosen", "rejected")
    kept, trimmed = [], 0
    for row in rows:
        def fits(prompt, row=row):
            return max(_length(tokenizer, prompt + row[a]) for a in answers) <= config.max_seq_len

        prompt = fit_prompt(row["prompt"], fits)
        if prompt is None:
            continue
        trimmed += len(prompt) < len(row["prompt"])
        kept.append({**row, "prompt": prompt})
    stats = {"kind": kind, "rows": len(rows), "trained": len(kept), "trimmed": trimmed,
             "left_out_too_long": len(rows) - len(kept)}
    if kind == "kto" and kept:
        stats["desirable"] = sum(1 for r in kept if r["label"])
        stats["undesirable"] = len(kept) - stats["desirable"]
        random.Random(config.seed).shuffle(kept)
        batch = config.batch_size * int(os.environ.get("WORLD_SIZE", "1"))
        fill = -len(kept) % batch
        kept += [kept[i % len(kept)] for i in range(fill)]
        stats["repeated"] = fill
    return kept, stats


def fit_prompt(prompt: list[dict], fits) -> list[dict] | None:
    """The longest tail of `prompt` that `fits`: oldest exchanges go first, a leading system message stays.

    Cuts only before a user turn, so the prompt still reads as a conversation ending with the user.
    None when even the last user turn (with the system message) does not fit.
    """
    system = prompt[:1] if prompt and prompt[0]["role"] == "system" else []
    turns = list(prompt[len(system):])
    while True:
        if fits(system + turns):
            return system + turns
        nxt = next((i for i in range(1, len(turns)) if turns[i]["role"] == "user"), None)
        if nxt is None:
            return None
        turns = turns[nxt:]


def _length(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


# --- the phase ---
def planned_steps(config: RunConfig, n_rows: int, *, world_size: int | None = None) -> int:
    """Optimizer steps of the phase: pref_max_steps, or pref_epochs passes (Trainer's arithmetic).

    `world_size`: data-parallel processes (default: $WORLD_SIZE, else 1).
    """
    if config.pref_max_steps:
        return config.pref_max_steps
    world_size = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    batches = math.ceil(n_rows / (config.batch_size * world_size))
    per_epoch = max(batches // config.grad_accum + int(batches % config.grad_accum > 0), 1)
    return max(math.ceil(config.pref_epochs * per_epoch), 1)


def setup(config: RunConfig, rows: list[dict], *, model, tokenizer, output_dir: Path | str,
          callbacks=()) -> Phase:
    """Build the KTO or DPO trainer on `model` (a PeftModel whose "default" adapter trains); nothing trains yet.

    `rows` come from `prepare`. The trainer adds the frozen "ref" adapter to `model`.
    """
    import datasets
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    kind = config.preference_kind
    if kind is None:
        raise ValueError(f"method {config.method!r} has no preference phase")
    datasets.disable_progress_bars()  # the map/filter bars would fill train.log
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    steps = planned_steps(config, len(rows))
    device = device_kind()
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    common = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.pref_learning_rate,
        lr_scheduler_type=config.lr_schedule,
        warmup_steps=int(config.warmup_ratio * steps),  # whole steps, rounded down (as in the recipe)
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        max_steps=steps,
        seed=config.seed,
        data_seed=config.seed,
        beta=config.beta,
        max_length=config.max_seq_len,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",  # preference batches are padded: count real tokens
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        bf16=bf16,  # TRL defaults to bf16=True, which on CPU would autocast there
        gradient_checkpointing=False,  # TRL's default is True: recomputation costs time these models don't need
        ddp_find_unused_parameters=False if world_size > 1 else None,
    )
    if kind == "kto":
        args = KTOConfig(**common, desirable_weight=config.desirable_weight,
                         undesirable_weight=config.undesirable_weight, train_sampling_strategy="sequential")
        trainer_cls = KTOTrainer
    else:
        args = DPOConfig(**common)
        trainer_cls = DPOTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # training.callbacks logs one line per step instead
    if REF_ADAPTER not in model.peft_config:
        # TRL skips the copy only for old peft with target_parameters; then the base model would be the
        # reference, which is not what a round on top of an adapter means.
        raise RuntimeError(f"{kind} trainer made no frozen reference adapter; the reference would be the base model")
    return Phase(config, kind, model, tokenizer, trainer, steps, list(callbacks))


def train(phase: Phase) -> RunMetrics:
    """Train; returns final metrics (loss, the last reward metrics). Stops early when a callback asks."""
    trainer = phase.trainer
    output = trainer.train()
    state = trainer.state
    logged = [h for h in state.log_history if "loss" in h]
    return RunMetrics(
        method=phase.kind, steps=state.global_step, total_steps=state.max_steps,
        stopped_early=state.global_step < state.max_steps, train_loss=output.training_loss,
        final_loss=logged[-1]["loss"] if logged else None, tokens=state.num_input_tokens_seen,
        train_runtime_s=output.metrics.get("train_runtime"),
        extra={k: v for k, v in (logged[-1] if logged else {}).items() if k.startswith("rewards/") or k == "kl"})


def release(phase: Phase) -> None:
    """Drop the trainer and the frozen "ref" adapter, leaving `phase.model` with the trained "default" only."""
    model = phase.model
    phase.trainer = None
    if REF_ADAPTER in model.peft_config:
        model.delete_adapter(REF_ADAPTER)
    model.set_adapter("default")

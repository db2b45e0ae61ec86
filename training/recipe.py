"""The SFT LoRA recipe: setup / train / save / cleanup, on transformers + peft.

    session = setup(config, conversations, output_dir=run_dir / "trainer", callbacks=[cb])
    result = train(session)                 # {"train_loss", "eval_loss", "steps", "stopped_early", ...}
    save_adapter(session, adapters_dir / name)
    cleanup(session)

This is the "sft" method and the first phase of "sft+kto" / "sft+dpo"; the KTO/DPO phase is
training.preference, continuing on `session.model`. training.run runs the phases a method needs.

What it does, and why:
- Conversations are rendered through the base model's own chat template (training.render) and
  trained on assistant tokens only, each answer through its end-of-turn token.
- LoRA on every linear layer but the output head (`target_modules="all-linear"`), never
  `modules_to_save`, no new tokens: vLLM can serve every adapter this writes. `--from-adapter`
  loads the parent adapter's weights, trainable, as the starting point (its rank and modules).
- No compute goes to padding. On a GPU a micro-batch's conversations are packed end to end in
  rows of at most max_seq_len tokens, position ids restarting per conversation (transformers
  turns that into a block-diagonal causal mask; training.data.PackedCollator). On CPU each
  conversation gets its own forward pass and gradients accumulate to the same batch (see
  `batching_plan`). Either way an optimizer step sees batch_size x grad_accum conversations and
  the loss is the mean over their trained tokens. On the 2-core CPU, one conversation per pass
  trains about 2x as many real tokens per second as padded batches, packed rows about 1.3x
  (bench/train_throughput.py; docs/benchmarks.md).
- fp32 on CPU. On a GPU with bf16 support the frozen base weights are loaded in bf16 (half the
  memory, and autocast no longer re-casts every fp32 weight in every matmul) while peft keeps the
  LoRA weights, which the optimizer updates, in fp32; the Trainer runs under bf16 autocast. On a
  GPU, flash-attn's varlen kernel is used when that package is installed (packed rows then skip
  the block-diagonal mask), and Liger's fused kernels when `liger_kernel` is (`gpu_speedups`);
  without them, SDPA and the stock modules. bench/gpu_check.sh measures these choices.
- Under FSDP (`accelerate launch --use_fsdp`, training.launch: a model too big to copy onto every
  GPU) the LoRA weights start in the base weights' dtype, so every FSDP unit flattens one dtype, and
  accelerate keeps the trainable ones in fp32 for the optimizer; at the end all processes gather the
  sharded adapter, and the first process writes it (`gather_adapter`, `write_adapter`).
- Seeded: the held-out split, LoRA init and data order all follow `config.seed`.
  `report_to="none"`: progress goes to the store through training.callbacks.
- The held-out split gives an eval loss at the start (the base model's, or the parent adapter's),
  every `eval_every` steps, and at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.results import RunMetrics
from training.config import RunConfig
from training.data import PackedCollator, Split, prepare_examples
from training.evalplan import EvalPlan, plan_evaluations
from training.render import IGNORE_INDEX, render_conversation

log = logging.getLogger("tuneloop.train")

EVALS_PER_RUN = 5
# Where `gather_adapter` leaves an FSDP run's full adapter weights on the model, for `write_adapter`.
GATHERED_ADAPTER = "_tuneloop_gathered_adapter"


class NotServable(RuntimeError):
    """The adapter would be refused by vLLM (modules_to_save, new tokens, rank)."""


@dataclass
class Session:
    """Everything `setup` built; `train`, `save_adapter` and `cleanup` take it."""

    config: RunConfig
    model: object
    tokenizer: object
    trainer: object
    split: Split
    total_steps: int
    device: str
    callbacks: list = field(default_factory=list)
    eval_plan: EvalPlan | None = None
    """When the held-out loss is measured and on how much (training.evalplan)."""


def device_kind() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def fsdp_enabled() -> bool:
    """True in a process started by `accelerate launch --use_fsdp` (it sets ACCELERATE_USE_FSDP for its processes)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1")


@dataclass(frozen=True)
class GpuSpeedups:
    """How the model runs on this device: weight dtype, attention kernel, Liger's fused kernels."""

    dtype: torch.dtype
    """Of the frozen base weights (the LoRA weights stay fp32: peft's autocast_adapter_dtype)."""
    attn_implementation: str
    """"flash_attention_2" (varlen over packed rows) when flash-attn is installed on a GPU, else "sdpa"."""
    liger: bool
    """Trainer's use_liger_kernel: fused RMSNorm, SwiGLU, RoPE and linear+cross-entropy, when installed."""


def gpu_speedups(device: str, *, bf16: bool | None = None) -> GpuSpeedups:
    """The speed-ups this device supports, each falling back to the stock path when its package is absent."""
    import importlib.util

    if device != "cuda":
        return GpuSpeedups(torch.float32, "sdpa", False)
    if bf16 is None:
        bf16 = torch.cuda.is_bf16_supported()
    flash = bf16 and importlib.util.find_spec("flash_attn") is not None  # flash-attn needs half precision
    liger = importlib.util.find_spec("liger_kernel") is not None
    return GpuSpeedups(torch.bfloat16 if bf16 else torch.float32, "flash_attention_2" if flash else "sdpa", liger)


def load_tokenizer(base_model: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model)
    if tok.pad_token_id is None:
        # Padding-free batches never pad; the padded collator and eval need some id. No new token.
        tok.pad_token = tok.eos_token
    return tok


def load_model(config: RunConfig, *, parent_adapter_path: str | None = None):
    """The base model with a trainable LoRA adapter (fresh, or the parent's weights)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(config.seed)
    speed = gpu_speedups(device_kind())
    base = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=speed.dtype,
                                                attn_implementation=speed.attn_implementation)
    # Without a KV cache transformers detects packed rows (restarting position ids) and masks across them.
    base.config.use_cache = False
    # FSDP flattens the weights of each wrapped unit into one tensor, which must have one dtype ("Must flatten
    # tensors with uniform dtype" when fp32 LoRA weights share a unit with bf16 base weights). So under FSDP the
    # LoRA weights start in the base weights' dtype; accelerate then upcasts the trainable units to fp32 when it
    # wraps the model under bf16 mixed precision, and the optimizer still updates fp32 LoRA weights.
    fp32_adapter = not fsdp_enabled()
    if parent_adapter_path:
        model = PeftModel.from_pretrained(base, parent_adapter_path, is_trainable=True,
                                          autocast_adapter_dtype=fp32_adapter)
    else:
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.target_modules, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(base, lora, autocast_adapter_dtype=fp32_adapter)
    check_servable(model.peft_config["default"], max_rank=None)
    return model


def check_servable(lora_config, *, max_rank: int | None) -> None:
    """Refuse adapters vLLM cannot load: modules_to_save, trained embeddings or head, rank above the server's."""
    if getattr(lora_config, "modules_to_save", None):
        raise NotServable(f"modules_to_save={lora_config.modules_to_save}: vLLM only serves plain LoRA adapters")
    if getattr(lora_config, "trainable_token_indices", None):
        raise NotServable("trainable_token_indices (new tokens) cannot be served by vLLM")
    if max_rank is not None and lora_config.r > max_rank:
        raise NotServable(f"rank {lora_config.r} is above the server's max_lora_rank {max_rank}")


def batching_plan(config: RunConfig, device: str) -> tuple[int, int]:
    """(conversations per forward pass, forward passes per optimizer step) on `device`.

    Both feed batch_size x grad_accum conversations to each optimizer step without padding. On a
    GPU a micro-batch of batch_size conversations is packed into rows (one pass keeps the device
    busy). On CPU each conversation gets its own pass and the gradients add up: attention stays
    per conversation on SDPA's causal kernel, with no block-diagonal mask over a long row; on the
    2-core machine that trained 1.5x as many tokens per second as packed rows
    (bench/train_throughput.py).
    """
    if device == "cpu":
        return 1, config.batch_size * config.grad_accum
    return config.batch_size, config.grad_accum


def estimate_total_steps(config: RunConfig, n_train: int, *, world_size: int = 1, device: str = "cpu") -> int:
    """Optimizer steps the trainer will take (the same arithmetic as transformers' Trainer)."""
    if config.max_steps:
        return config.max_steps
    micro, accum = batching_plan(config, device)
    passes = math.ceil(n_train / (micro * world_size))
    per_epoch = max(passes // accum + int(passes % accum > 0), 1)
    return math.ceil(config.epochs * per_epoch)


def setup(config: RunConfig, conversations: list[dict], *, output_dir: Path | str, callbacks=(),
          parent_adapter_path: str | None = None, split: Split | None = None, checkpoints: bool = False) -> Session:
    """Tokenize, split, load the model with LoRA, and build the Trainer; nothing trains yet.

    `checkpoints`: save a resumable checkpoint about every tenth of the run and when a cancel stops
    it, keeping the newest only (training.checkpoints).
    """
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from training.checkpoints import save_every, save_on_stop

    tokenizer = load_tokenizer(config.base_model)
    if split is None:
        split = prepare_examples(tokenizer, conversations, eval_fraction=config.eval_fraction, seed=config.seed,
                                 max_seq_len=config.max_seq_len, never_train=config.excluded_conversation_ids)
    log.info("data: %s", json.dumps(split.stats))
    model = load_model(config, parent_adapter_path=parent_adapter_path)
    trainable, total = _count_parameters(model)
    log.info("model: %s, LoRA rank %s, %d trainable of %d parameters", config.base_model,
             model.peft_config["default"].r, trainable, total)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = device_kind()
    micro, accum = batching_plan(config, device)
    total_steps = estimate_total_steps(config, len(split.train), world_size=world_size, device=device)
    has_eval = bool(split.eval)
    plan = plan_evaluations(config, total_steps=total_steps, held_out=len(split.eval),
                            per_step=micro * accum * world_size)
    eval_rows = eval_sample(split.eval, plan.sample, config.seed)
    for cb in callbacks:  # the progress callback counts the evaluations still to come in its time left
        if hasattr(cb, "plan_evaluations"):
            cb.plan_evaluations(plan)
    log.info("evaluations: %d on %d held-out conversation(s) every %d steps from the start%s", plan.in_run,
             plan.sample, plan.every, f", then all {plan.held_out} at the end" if plan.final else "")
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    speed = gpu_speedups(device, bf16=bf16)
    log.info("batching: %d conversation(s) per pass, %d passes per step, on %s%s", micro, accum, device,
             f" (bf16, {speed.attn_implementation}{', liger' if speed.liger else ''})" if bf16 else "")
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_schedule,
        # Whole steps, rounded down: a short run must not spend its only step at learning rate 0.
        warmup_steps=int(config.warmup_ratio * total_steps),
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs or 1.0,
        max_steps=config.max_steps or -1,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=plan.every if has_eval else None,
        eval_on_start=has_eval,
        prediction_loss_only=True,
        save_strategy="steps" if checkpoints else "no",
        save_steps=save_every(total_steps) if checkpoints else None,
        save_total_limit=1 if checkpoints else None,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        include_num_input_tokens_seen="all",  # padding-free rows hold no padding: all tokens are real
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        bf16=bf16,
        use_liger_kernel=speed.liger,
        ddp_find_unused_parameters=False if world_size > 1 else None,
    )
    collator = PackedCollator(max_row_tokens=config.max_seq_len, pad_id=tokenizer.pad_token_id)
    trainer = Trainer(model=model, args=args, train_dataset=split.train, eval_dataset=eval_rows or None,
                      data_collator=collator, processing_class=tokenizer,
                      callbacks=list(callbacks) + ([save_on_stop()] if checkpoints else []))
    trainer.remove_callback(PrinterCallback)  # training.callbacks logs one line per step instead
    return Session(config, model, tokenizer, trainer, split, total_steps, device, list(callbacks), plan)


def eval_sample(rows: list, size: int, seed: int) -> list:
    """The in-run evaluations' fixed sample of the held-out rows: `size` of them drawn with `seed`, in order."""
    import random

    if size >= len(rows):
        return list(rows)
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), size))]


def train(session: Session, *, resume_from: Path | str | None = None) -> RunMetrics:
    """Train (from checkpoint `resume_from`, when given); returns final metrics. Stops early (and says so) when a
    callback asks it to."""
    trainer = session.trainer
    if resume_from:
        trainer.args.eval_on_start = False  # measured before the first run already, in the checkpoint's history
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    state = trainer.state
    stopped_early = state.global_step < state.max_steps
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    result = RunMetrics(steps=state.global_step, total_steps=state.max_steps, stopped_early=stopped_early,
                        train_loss=output.training_loss, final_loss=losses[-1] if losses else None,
                        tokens=state.num_input_tokens_seen, train_runtime_s=output.metrics.get("train_runtime"))
    evals = [h for h in state.log_history if "eval_loss" in h]
    if evals and result.train_runtime_s and result.tokens:
        # Trained tokens per second of training time: the trainer's runtime includes the in-run evaluations.
        training_s = result.train_runtime_s - sum(h.get("eval_runtime", 0.0) for h in evals)
        result.tokens_per_second = result.tokens / training_s if training_s > 0 else None
    plan = session.eval_plan
    sampled = plan is not None and plan.sample < plan.held_out
    in_run = len(evals)
    if session.split.eval and not stopped_early and (sampled or not evals or evals[-1].get("step") != state.global_step):
        trainer.evaluate(eval_dataset=session.split.eval)  # the reported held-out loss reads the whole split
        evals = [h for h in state.log_history if "eval_loss" in h]
    if evals:
        result.eval_loss = evals[-1]["eval_loss"]
        result.eval_loss_start = evals[0]["eval_loss"] if evals[0].get("step") == 0 else None
        # What the evaluations cost, for the next run's estimate (training.estimate).
        result.eval_runtime_s = sum(h.get("eval_runtime", 0.0) for h in evals)
        full = sum(len(e["input_ids"]) for e in session.split.eval)
        each = sum(len(e["input_ids"]) for e in eval_sample(session.split.eval, plan.sample, session.config.seed)) \
            if plan is not None else full
        result.eval_tokens = in_run * each + (len(evals) - in_run) * full
    if fsdp_enabled():
        gather_adapter(session.model, trainer)
    return result


def gather_adapter(model, trainer) -> None:
    """Under FSDP: gather the adapter's full weights into the first process's memory, for `write_adapter`.

    Every process holds a shard of every weight, and only the first one writes the adapter (training.worker,
    training.remote_run), which alone cannot gather: every process must call this. accelerate's full state
    dict passes the whole model through the first process's CPU memory once, unit by unit (as loading did);
    only the LoRA weights are kept.
    """
    state = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.accelerator.is_main_process:
        setattr(model, GATHERED_ADAPTER, {k: v for k, v in state.items() if "lora_" in k})


def save_adapter(session: Session, path: Path | str, *, max_rank: int | None = None) -> Path:
    """Write adapter_config.json + adapter_model.safetensors (base_model_name_or_path = the base model)."""
    return write_adapter(session.model, session.config.base_model, path, max_rank=max_rank)


def write_adapter(model, base_model: str, path: Path | str, *, max_rank: int | None = None) -> Path:
    """Write the peft model's "default" adapter, and only it, as a servable adapter directory.

    Only "default": a preference phase adds a frozen "ref" copy as its reference, which must not
    end up in the served directory (peft would write it to a `ref/` subfolder).
    """
    path = Path(path)
    lora = model.peft_config["default"]
    check_servable(lora, max_rank=max_rank)
    lora.base_model_name_or_path = base_model
    gathered = getattr(model, GATHERED_ADAPTER, None)
    if gathered is None and fsdp_enabled():
        # The model's own weights are shards here: saving them would write a broken adapter.
        raise RuntimeError("under FSDP only an SFT phase gathers the sharded adapter to save it (recipe.train)")
    model.save_pretrained(str(path), selected_adapters=["default"], state_dict=gathered)
    cfg = json.loads((path / "adapter_config.json").read_text())
    if cfg.get("modules_to_save"):
        raise NotServable(f"saved adapter has modules_to_save={cfg['modules_to_save']}")
    return path


def cleanup(session: Session) -> None:
    for cb in session.callbacks:
        close = getattr(cb, "close", None)
        if close:
            close()
    session.trainer = None
    session.model = None
    free_memory()


def free_memory() -> None:
    """Give back what dropped models and trainers held (host memory, the CUDA cache)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@torch.no_grad()
def answer_loss(model, tokenizer, conversations: list[dict], *, max_seq_len: int = 1024) -> float:
    """Mean loss per trained (assistant) token of `conversations` under `model`: lower fits them better."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for conv in conversations:
        rendered = render_conversation(tokenizer, conv["messages"]).truncate(max_seq_len)
        if rendered is None or not rendered.trained_tokens:
            continue
        ids = torch.tensor([rendered.input_ids], device=device)
        labels = torch.tensor([rendered.labels], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                                 ignore_index=IGNORE_INDEX, reduction="sum")
        total += loss.item()
        count += int((target != IGNORE_INDEX).sum())
    if not count:
        raise ValueError("no assistant tokens to score")
    return total / count


def _count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total

"""Training throughput: padding-free batches vs plain padded batches, as a ratio from one run.

    .venv/bin/python bench/train_throughput.py                   # default model, 8 steps per mode
    .venv/bin/python bench/train_throughput.py --steps 12 --batch-size 8 --model /path/to/model
    .venv/bin/python bench/train_throughput.py --estimate 200    # + time of a standard-preset run

Synthetic support chats with a realistic spread of lengths (1 to 6 exchanges, short questions,
answers from one line to several paragraphs) are rendered through the model's chat template with
the assistant-only mask (training.render). The same micro-batches, in the same order, are then
trained both ways on the same LoRA model (rank 16, all linear layers, fp32 on CPU), alternating
step by step so that load from other processes hits both modes alike:

- padded: each micro-batch padded to its longest conversation, with an attention mask
  (what a plain `DataCollatorForSeq2Seq`-style collator does);
- padding-free: the micro-batch concatenated into one row, position ids restarting per
  conversation (training.data.padding_free_collator; what training.recipe uses).

It prints real (non-padding) tokens per second for each and their ratio. With `--estimate N` it
also times a few optimizer steps and one held-out evaluation of the real recipe (training.recipe,
the Trainer, the "standard" preset) on N synthetic chats and extrapolates the whole run's time.
Results go to docs/benchmarks.md with the command.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("order refund shipping delivery account password invoice card payment package return address "
         "tracking warranty subscription plan upgrade cancel discount coupon store app login email phone "
         "charge label courier week days update replace broken missing size colour help thanks please").split()


def synthetic_conversations(n: int, seed: int) -> list[dict]:
    """Support chats: 1-6 exchanges (mostly 1-2), questions of 5-80 words, answers of 10-300 words (median ~65)."""
    rng = random.Random(seed)

    def text(lo, hi, mu):
        k = int(min(hi, max(lo, rng.lognormvariate(mu, 0.7))))
        return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."

    convs = []
    for _ in range(n):
        msgs = [{"role": "system", "content": "You are the support assistant of Acme Shop. Be brief and kind."}]
        for _ in range(min(6, 1 + int(rng.expovariate(0.9)))):
            msgs.append({"role": "user", "content": text(5, 80, 3.0)})
            msgs.append({"role": "assistant", "content": text(10, 300, 4.2)})
        convs.append({"messages": msgs})
    return convs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="base model directory (default: the prepared default model)")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps per mode first")
    parser.add_argument("--batch-size", type=int, default=4, help="conversations per micro-batch")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--estimate", type=int, metavar="N", default=0,
                        help="also estimate a standard-preset run on N conversations from measured steps")
    parser.add_argument("--estimate-steps", type=int, default=3, help="optimizer steps timed for --estimate")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.data import PaddedCollator, build_examples, padding_free_collator

    model_dir = args.model
    if not model_dir:
        from store.settings import Settings
        from training.default_model import prepare_default_model

        model_dir = str(prepare_default_model(Settings(_env_file=None).default_model_dir))
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    n_batches = args.steps + args.warmup
    convs = synthetic_conversations(n_batches * args.batch_size, args.seed)
    examples, stats = build_examples(tok, convs, args.max_seq_len)
    feats = [e.as_features() for e in examples]
    batches = [feats[i:i + args.batch_size] for i in range(0, len(feats), args.batch_size)][:n_batches]
    lengths = sorted(len(f["input_ids"]) for f in feats)

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    collators = {"padded": PaddedCollator(tok.pad_token_id), "padding-free": padding_free_collator()}
    seconds = {k: [] for k in collators}
    processed = {k: 0 for k in collators}
    real = {k: 0 for k in collators}

    for i, batch in enumerate(batches):
        order = list(collators) if i % 2 == 0 else list(reversed(collators))
        for mode in order:
            inputs = collators[mode](batch)
            t0 = time.perf_counter()
            loss = model(**inputs).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                seconds[mode].append(dt)
                processed[mode] += inputs["input_ids"].numel()
                real[mode] += sum(len(f["input_ids"]) for f in batch)

    print(f"model {model_dir}, LoRA r={args.rank} all-linear, fp32, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size} conversations, {args.steps} measured steps per mode")
    print(f"conversation lengths (tokens): min {lengths[0]}, median {int(statistics.median(lengths))}, "
          f"p90 {lengths[int(0.9 * (len(lengths) - 1))]}, max {lengths[-1]} ({stats['truncated']} cut at "
          f"{args.max_seq_len})")
    rate = {}
    for mode in collators:
        total = sum(seconds[mode])
        rate[mode] = real[mode] / total
        pad_share = 1 - real[mode] / processed[mode]
        print(f"{mode:>13}: {rate[mode]:7.1f} real tokens/s, {total / len(seconds[mode]):5.2f} s/step, "
              f"{pad_share:5.1%} of processed tokens are padding")
    print(f"padding-free / padded throughput ratio: {rate['padding-free'] / rate['padded']:.2f}x")
    if args.estimate:
        del model, opt
        estimate_standard_run(model_dir, args.estimate, args.estimate_steps, args.seed)


def estimate_standard_run(model_dir: str, n: int, steps: int, seed: int) -> None:
    """Time `steps` optimizer steps and one evaluation of the standard preset; extrapolate the run."""
    import math

    from transformers import TrainerCallback

    from training import recipe
    from training.config import RunConfig, held_out_count

    class Clock(TrainerCallback):
        """The held-out evaluation at the start, then each optimizer step."""

        def __init__(self):
            self.begin = self.evaluated = None
            self.steps = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_evaluate(self, args, state, control, **kwargs):
            self.evaluated = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(time.perf_counter())

    convs = synthetic_conversations(n, seed + 1)
    full = RunConfig.from_preset("standard", base_model=model_dir, dataset="synthetic")
    # The same run cut to a few steps; its only evaluation is the one at the start.
    probe = RunConfig.from_dict({**full.to_dict(), "max_steps": steps + 1, "epochs": None, "eval_every": 10**6})
    t0 = time.perf_counter()
    clock = Clock()
    session = recipe.setup(probe, convs, output_dir="/tmp/tuneloop-bench-trainer", callbacks=[clock])
    setup_s = time.perf_counter() - t0
    session.trainer.train()
    eval_s = clock.evaluated - clock.begin
    step_s = (clock.steps[-1] - clock.steps[0]) / (len(clock.steps) - 1)  # the first step is warm-up
    n_train = n - held_out_count(n, full.eval_fraction)
    total_steps = recipe.estimate_total_steps(full, n_train)
    evals = 1 + math.ceil(total_steps / math.ceil(total_steps / recipe.EVALS_PER_RUN))
    tokens = session.split.stats["train"]["tokens"]
    total_s = setup_s + total_steps * step_s + evals * eval_s
    print(f"standard preset on {n} synthetic chats ({tokens / session.split.stats['train']['examples']:.0f} tokens "
          f"each on average): {total_steps} optimizer steps of {full.batch_size}x{full.grad_accum} chats, "
          f"measured {step_s:.1f} s/step ({tokens * full.epochs / total_steps / step_s:.0f} tokens/s), "
          f"{eval_s:.1f} s per evaluation x {evals}, set-up {setup_s:.0f} s")
    print(f"estimated run time: {total_s / 60:.1f} min (an estimate from {steps} timed steps, not a full run)")


if __name__ == "__main__":
    main()

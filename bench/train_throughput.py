"""Training throughput: packed (padding-free) batches vs plain padded batches, as a ratio from one run.

    .venv/bin/python bench/train_throughput.py                   # default model, 8 steps per mode
    .venv/bin/python bench/train_throughput.py --steps 12 --batch-size 8 --model /path/to/model
    .venv/bin/python bench/train_throughput.py --estimate 200    # + time of a standard-preset run

Synthetic support chats with a realistic spread of lengths (1 to 6 exchanges, questions of a few
words to a paragraph, answers from one line to several paragraphs) are rendered through the
model's chat template with the assistant-only mask (training.render). The same micro-batches, in
the same order, are then trained three ways on the same LoRA model (rank 16, all linear layers,
fp32 on CPU), the order rotating step by step so that load from other processes hits all alike:

- padded: each micro-batch padded to its longest conversation, with an attention mask
  (what a plain `DataCollatorForSeq2Seq`-style collator does);
- packed: conversations end to end in rows of at most max_seq_len tokens, position ids
  restarting per conversation (training.data.PackedCollator; what training.recipe uses);
- one-by-one: one conversation per forward pass, gradients accumulated over the micro-batch
  (also padding-free; attention per conversation, but many small passes).

It prints real (non-padding) tokens per second for each and the ratios to padded. With
`--estimate N` it also times a few optimizer steps and one held-out evaluation of the real recipe
(training.recipe, the Trainer, the "standard" preset) on N synthetic chats and extrapolates the
whole run's time. The machine is shared: compare modes within one run, not across runs. Results go
to docs/benchmarks.md with the command.
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
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as training.launch starts training processes

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
    parser.add_argument("--steps", type=int, default=8, help="measured steps per mode (0: skip the comparison)")
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
    from transformers import AutoTokenizer

    from training.data import build_examples

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

    if args.steps > 0:
        compare(args, model_dir, tok, batches, lengths, stats)
    if args.estimate:
        estimate_standard_run(model_dir, args.estimate, args.estimate_steps, args.seed)


def compare(args, model_dir, tok, batches, lengths, stats) -> None:
    """Train the same micro-batches padded, packed and one by one; print tokens/s and ratios."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.data import PackedCollator, PaddedCollator
    from training.render import IGNORE_INDEX

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    padded, packed = PaddedCollator(tok.pad_token_id), PackedCollator(args.max_seq_len, tok.pad_token_id)

    def trained(f):
        return sum(1 for x in f["labels"] if x != IGNORE_INDEX)

    # Each mode turns a micro-batch into (inputs, loss weight) pairs; weights keep the loss a mean per
    # trained token over the whole micro-batch in every mode.
    modes = {
        "padded": lambda batch: [(padded(batch), 1.0)],
        "packed": lambda batch: [(packed(batch), 1.0)],
        "one-by-one": lambda batch: [(packed([f]), trained(f) / sum(map(trained, batch))) for f in batch],
    }
    seconds = {k: [] for k in modes}
    processed = {k: 0 for k in modes}
    real = {k: 0 for k in modes}

    for i, batch in enumerate(batches):
        names = list(modes)
        for mode in names[i % 3:] + names[:i % 3]:  # rotate the order: load from others hits all alike
            parts = modes[mode](batch)
            t0 = time.perf_counter()
            for inputs, weight in parts:
                (model(**inputs).loss * weight).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                seconds[mode].append(dt)
                processed[mode] += sum(inputs["input_ids"].numel() for inputs, _ in parts)
                real[mode] += sum(len(f["input_ids"]) for f in batch)

    print(f"model {model_dir}, LoRA r={args.rank} all-linear, fp32, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size} conversations, {args.steps} measured steps per mode")
    print(f"conversation lengths (tokens): min {lengths[0]}, median {int(statistics.median(lengths))}, "
          f"p90 {lengths[int(0.9 * (len(lengths) - 1))]}, max {lengths[-1]} ({stats['truncated']} cut at "
          f"{args.max_seq_len})")
    rate = {}
    for mode in modes:
        total = sum(seconds[mode])
        rate[mode] = real[mode] / total
        pad_share = 1 - real[mode] / processed[mode]
        print(f"{mode:>13}: {rate[mode]:7.1f} real tokens/s, {total / len(seconds[mode]):5.2f} s/step, "
              f"{pad_share:5.1%} of processed tokens are padding")
    for mode in ("packed", "one-by-one"):
        print(f"{mode} / padded throughput ratio: {rate[mode] / rate['padded']:.2f}x")


def estimate_standard_run(model_dir: str, n: int, steps: int, seed: int) -> None:
    """Time `steps` optimizer steps and one evaluation of the standard preset; extrapolate the run."""
    import math

    from transformers import TrainerCallback

    from training import recipe
    from training.config import RunConfig, held_out_count

    class Clock(TrainerCallback):
        """When each optimizer step ends."""

        def __init__(self):
            self.steps = []

        def on_evaluate(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self.steps.clear()  # evaluations are timed on their own below
            else:
                self.steps.append(None)  # the step after an evaluation is not timed

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(time.perf_counter())

    convs = synthetic_conversations(n, seed + 1)
    full = RunConfig.from_preset("standard", base_model=model_dir, dataset="synthetic")
    # The same run cut to a few steps (its only evaluation during training is the one at the start).
    probe = RunConfig.from_dict({**full.to_dict(), "max_steps": steps + 1, "epochs": None, "eval_every": 10**6})
    t0 = time.perf_counter()
    clock = Clock()
    session = recipe.setup(probe, convs, output_dir="/tmp/tuneloop-bench-trainer", callbacks=[clock])
    setup_s = time.perf_counter() - t0
    session.trainer.train()
    marks = [m for m in clock.steps if m is not None]
    step_s = (marks[-1] - marks[0]) / (len(marks) - 1)  # from the end of the first step (warm-up)
    t1 = time.perf_counter()
    session.trainer.evaluate()
    eval_s = time.perf_counter() - t1
    n_train = n - held_out_count(n, full.eval_fraction)
    total_steps = recipe.estimate_total_steps(full, n_train, device=recipe.device_kind())
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

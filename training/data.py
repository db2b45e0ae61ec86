"""Dataset version conversations -> tokenized training and held-out examples, and their batches.

Pure: takes conversations (`{"id"?, "messages": [...]}`) and a tokenizer, returns lists of examples.

    split = prepare_examples(tokenizer, conversations, eval_fraction=0.1, seed=42, max_seq_len=1024)
    split.train, split.eval, split.stats
    batch = padding_free_collator()(split.train[:4])   # one row, positions restarting per example

Batches are padding-free: the micro-batch's examples are concatenated into one row of tokens and
`position_ids` restart at 0 for each example. transformers (v5) detects the restarts and builds a
block-diagonal causal mask for SDPA, so examples do not attend to each other and no compute goes
to padding (tests check the logits equal those of each example alone). This needs the model to
run without a KV cache (`use_cache=False`): with a cache transformers skips the detection.
`padded_collator` is the plain alternative (pad to the batch's longest example), kept for the
benchmark and for attention kernels that cannot take packed rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from training.config import held_out_count
from training.render import IGNORE_INDEX, Rendered, TemplateError, render_conversation


@dataclass(frozen=True)
class Example:
    """One tokenized conversation, ready for a collator."""

    input_ids: list[int]
    labels: list[int]
    conversation_id: int | None = None

    def as_features(self) -> dict:
        return {"input_ids": self.input_ids, "labels": self.labels}


@dataclass
class Split:
    train: list[dict]
    eval: list[dict]
    stats: dict = field(default_factory=dict)


def split_conversations(conversations: list[dict], eval_fraction: float, seed: int) -> tuple[list, list]:
    """(train, held_out): a seeded shuffle, then the first round(n x fraction) are held out.

    Whole conversations go to one side, so no answer is both trained on and evaluated.
    """
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    n_eval = held_out_count(len(conversations), eval_fraction)
    held = sorted(order[:n_eval])
    train = sorted(order[n_eval:])
    return [conversations[i] for i in train], [conversations[i] for i in held]


def build_examples(tokenizer, conversations: list[dict], max_seq_len: int) -> tuple[list[Example], dict]:
    """Render and cut each conversation; drop those with nothing to train. Returns (examples, counts)."""
    examples: list[Example] = []
    stats = {"conversations": len(conversations), "examples": 0, "truncated": 0, "dropped_too_long": 0,
             "dropped_nothing_to_train": 0, "tokens": 0, "trained_tokens": 0}
    for conv in conversations:
        rendered = render_conversation(tokenizer, conv["messages"])
        if rendered.trained_tokens == 0:
            stats["dropped_nothing_to_train"] += 1
            continue
        cut: Rendered | None = rendered.truncate(max_seq_len)
        if cut is None:
            stats["dropped_too_long"] += 1
            continue
        if len(cut) < len(rendered):
            stats["truncated"] += 1
        examples.append(Example(cut.input_ids, cut.labels, conv.get("id")))
        stats["tokens"] += len(cut)
        stats["trained_tokens"] += cut.trained_tokens
    stats["examples"] = len(examples)
    return examples, stats


def prepare_examples(tokenizer, conversations: list[dict], *, eval_fraction: float, seed: int,
                     max_seq_len: int) -> Split:
    """Split by seed, then tokenize both sides; raises ValueError when nothing is left to train on."""
    train_convs, eval_convs = split_conversations(conversations, eval_fraction, seed)
    train, train_stats = build_examples(tokenizer, train_convs, max_seq_len)
    held, eval_stats = build_examples(tokenizer, eval_convs, max_seq_len)
    if not train:
        raise ValueError(
            f"no training example left out of {len(train_convs)} conversation(s): "
            f"{train_stats['dropped_too_long']} longer than max_seq_len={max_seq_len} in their first answer, "
            f"{train_stats['dropped_nothing_to_train']} without an assistant turn to train"
        )
    return Split([e.as_features() for e in train], [e.as_features() for e in held],
                 {"train": train_stats, "eval": eval_stats})


def padding_free_collator():
    """Concatenate a micro-batch into one row with per-example position ids (see module docstring)."""
    from transformers import DataCollatorWithFlattening

    # separator_id: the first label of each example is ignored, so no example is trained to predict
    # its own first token from the previous example's last one.
    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)


class PaddedCollator:
    """Pad every example to the batch's longest with `pad_id` (labels with -100), with an attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        ids, labels, attn = [], [], []
        for f in features:
            pad = longest - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            attn.append([1] * len(f["input_ids"]) + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(attn)}


__all__ = ["Example", "Split", "TemplateError", "build_examples", "padding_free_collator", "PaddedCollator",
           "prepare_examples", "split_conversations"]

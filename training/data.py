"""Dataset version conversations -> tokenized training and held-out examples, and their batches.

Pure: takes conversations (`{"id"?, "messages": [...]}`) and a tokenizer, returns lists of examples.

    split = prepare_examples(tokenizer, conversations, eval_fraction=0.1, seed=42, max_seq_len=1024)
    split.train, split.eval, split.stats
    batch = PackedCollator(max_row_tokens=1024, pad_id=tok.pad_token_id)(split.train[:4])

Batches are packed, not padded: a micro-batch's conversations are laid end to end in rows of at
most `max_row_tokens` tokens (first fit, longest first), with `position_ids` restarting at 0 for
each conversation. transformers (v5) detects the restarts and builds a block-diagonal causal mask
for SDPA, so conversations never attend to each other (tests check the logits equal those of each
conversation alone) and almost no compute goes to padding. Bounding the row keeps attention, which
is quadratic in the row's length under that mask, as cheap as one max_seq_len example: a micro-batch
of 8 long chats becomes 2-3 rows, not one 8k-token row. Only when a micro-batch needs several rows
are the shorter rows filled up, with pad tokens that form their own masked-off segment.
This needs the model to run without a KV cache (`use_cache=False`): with one, transformers skips
the detection. training.recipe packs micro-batches this way on GPUs; on CPU it gives each
conversation its own pass (a micro-batch of one, so one row and no mask at all), which measured
faster there. `PaddedCollator` is the plain alternative (each conversation padded to the batch's
longest), kept for the benchmark.
"""

from __future__ import annotations

import random
from collections.abc import Collection
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


def split_conversations(conversations: list[dict], eval_fraction: float, seed: int,
                        never_train: Collection[int] = ()) -> tuple[list, list]:
    """(train, held_out): a seeded shuffle, then the first round(n x fraction) are held out.

    Whole conversations go to one side, so no answer is both trained on and evaluated. Conversations
    whose id is in `never_train` (eval items) join the held-out side after the split: the split of
    the others stays the one the version always gets, so a continued adapter keeps its parent's.
    """
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    n_eval = held_out_count(len(conversations), eval_fraction)
    never = set(never_train)
    held = sorted(set(order[:n_eval]) | {i for i in order[n_eval:] if conversations[i].get("id") in never})
    train = sorted(set(order) - set(held))
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
                     max_seq_len: int, never_train: Collection[int] = ()) -> Split:
    """Split by seed (`never_train` ids held out), then tokenize both sides; raises ValueError when nothing is
    left to train on."""
    train_convs, eval_convs = split_conversations(conversations, eval_fraction, seed, never_train)
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


class PackedCollator:
    """Pack a micro-batch into rows of at most `max_row_tokens`, position ids restarting per example."""

    def __init__(self, max_row_tokens: int, pad_id: int):
        self.max_row_tokens = max_row_tokens
        self.pad_id = pad_id

    def rows(self, features: list[dict]) -> list[list[dict]]:
        """First-fit decreasing: each row holds examples whose lengths add up to at most the cap."""
        rows: list[list[dict]] = []
        room: list[int] = []
        for f in sorted(features, key=lambda f: len(f["input_ids"]), reverse=True):
            n = len(f["input_ids"])
            for i, free in enumerate(room):
                if n <= free:
                    rows[i].append(f)
                    room[i] -= n
                    break
            else:  # a new row (an example longer than the cap gets a row of its own)
                rows.append([f])
                room.append(self.max_row_tokens - n)
        return rows

    def __call__(self, features: list[dict]) -> dict:
        import torch

        rows = self.rows(features)
        width = max(sum(len(f["input_ids"]) for f in row) for row in rows)
        ids, labels, positions = [], [], []
        for row in rows:
            r_ids, r_labels, r_pos = [], [], []
            for f in row:
                n = len(f["input_ids"])
                r_ids += list(f["input_ids"])
                # The first label of each example is never trained, so no example learns to predict
                # its first token from the previous example's last one.
                r_labels += [IGNORE_INDEX] + list(f["labels"])[1:]
                r_pos += list(range(n))
            pad = width - len(r_ids)
            ids.append(r_ids + [self.pad_id] * pad)
            labels.append(r_labels + [IGNORE_INDEX] * pad)
            positions.append(r_pos + list(range(pad)))  # the padding is a segment of its own
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "position_ids": torch.tensor(positions)}


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


__all__ = ["Example", "Split", "TemplateError", "build_examples", "PackedCollator", "PaddedCollator",
           "prepare_examples", "split_conversations"]

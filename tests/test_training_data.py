"""Examples, the seeded held-out split, and padding-free batches that equal examples run alone.

Run: .venv/bin/python -m pytest tests/test_training_data.py -q
"""

from __future__ import annotations

import pytest
import torch

from training.data import PackedCollator, PaddedCollator, build_examples, prepare_examples, split_conversations
from training.render import IGNORE_INDEX
from training_support import byte_tokenizer, make_tiny_model, support_conversations


def test_split_is_seeded_whole_conversations_and_disjoint():
    convs = [{"id": i, "messages": []} for i in range(20)]
    train, held = split_conversations(convs, 0.2, seed=1)
    assert len(held) == 4 and len(train) == 16
    assert {c["id"] for c in train}.isdisjoint(c["id"] for c in held)
    assert split_conversations(convs, 0.2, seed=1) == (train, held)
    assert split_conversations(convs, 0.2, seed=2)[1] != held
    assert split_conversations(convs, 0, seed=1) == (convs, [])


def test_build_examples_counts_truncation_and_drops():
    tok = byte_tokenizer()
    convs = support_conversations(6) + [
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "no", "weight": 0}]},
        {"messages": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "z" * 900}]},
    ]
    examples, stats = build_examples(tok, convs, max_seq_len=400)
    assert stats["dropped_nothing_to_train"] == 1
    assert stats["dropped_too_long"] == 1
    assert stats["examples"] == len(examples) == 6
    assert all(len(e.input_ids) <= 400 for e in examples)
    assert stats["truncated"] >= 1
    assert stats["trained_tokens"] == sum(sum(1 for x in e.labels if x != IGNORE_INDEX) for e in examples)


def test_prepare_refuses_when_nothing_is_left_to_train():
    tok = byte_tokenizer()
    convs = [{"messages": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "z" * 500}]}] * 3
    with pytest.raises(ValueError, match="no training example"):
        prepare_examples(tok, convs, eval_fraction=0, seed=0, max_seq_len=100)


def test_packed_rows_hold_whole_examples_within_the_cap():
    feats = [{"input_ids": [7] * n, "labels": [7] * n} for n in (50, 300, 120, 200, 90)]
    collator = PackedCollator(max_row_tokens=400, pad_id=0)
    rows = collator.rows(feats)
    assert [[len(f["input_ids"]) for f in row] for row in rows] == [[300, 90], [200, 120, 50]]
    batch = collator(feats)
    assert batch["input_ids"].shape == (2, 390)
    # Row 0: 300 + 90 real tokens, no padding; row 1: 370 real tokens and a 20-token pad segment.
    assert batch["position_ids"][0, 299:302].tolist() == [299, 0, 1]
    assert batch["position_ids"][1, 368:373].tolist() == [48, 49, 0, 1, 2]
    assert (batch["labels"][1, 370:] == IGNORE_INDEX).all() and (batch["input_ids"][1, 370:] == 0).all()
    # Each example's first label is ignored; the others are kept.
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == sum(n - 1 for n in (50, 300, 120, 200, 90))
    # An example longer than the cap gets a row of its own.
    assert [len(r) for r in collator.rows(feats + [{"input_ids": [1] * 500, "labels": [1] * 500}])] == [1, 2, 3]


def test_packed_batch_equals_each_example_alone(tmp_path):
    """Position ids restarting per example give a block-diagonal mask: no attention across examples."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "tiny"), attn_implementation="sdpa")
    model.config.use_cache = False
    tok = byte_tokenizer()
    examples, _ = build_examples(tok, support_conversations(5, seed=3), max_seq_len=512)
    feats = [e.as_features() for e in examples]
    cap = max(len(f["input_ids"]) for f in feats) + 60  # several rows, some with a pad segment
    collator = PackedCollator(max_row_tokens=cap, pad_id=tok.pad_token_id)
    rows = collator.rows(feats)
    batch = collator(feats)
    assert len(rows) > 1 and "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        for r, row in enumerate(rows):
            offset = 0
            for f in row:
                alone = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]
                torch.testing.assert_close(packed[r, offset:offset + len(f["input_ids"])], alone, atol=1e-5, rtol=1e-4)
                offset += len(f["input_ids"])
    # Padded batches train the same tokens (bar each example's first, never trained anyway).
    padded = PaddedCollator(tok.pad_token_id)(feats)
    assert int((padded["labels"] != IGNORE_INDEX).sum()) == int((batch["labels"] != IGNORE_INDEX).sum())
    assert padded["input_ids"].shape == (5, max(len(f["input_ids"]) for f in feats))


def test_eval_items_are_held_out_beside_the_seeded_split_which_stays_the_same():
    convs = [{"id": i, "messages": []} for i in range(20)]
    train, held = split_conversations(convs, 0.2, seed=1)
    never = [train[0]["id"], held[0]["id"]]  # one the split trains on, one it holds out anyway
    train2, held2 = split_conversations(convs, 0.2, seed=1, never_train=never)
    assert [c["id"] for c in held2] == sorted({c["id"] for c in held} | {train[0]["id"]})
    assert train2 == train[1:]
    # A continued run on the same version: the parent's held-out items are exactly the held-out side again.
    assert split_conversations(convs, 0.2, seed=1, never_train=[c["id"] for c in held]) == (train, held)
    assert split_conversations(convs, 0, seed=1, never_train=[3]) == ([c for c in convs if c["id"] != 3], [convs[3]])

"""The assistant-only mask, checked token by token: a byte tokenizer and the real SmolLM2 tokenizer.

Run: .venv/bin/python -m pytest tests/test_training_render.py -q
"""

from __future__ import annotations

import pytest

from training.render import IGNORE_INDEX, TemplateError, render_conversation
from training_support import byte_tokenizer


def _pieces(tok, rendered):
    return [(tok.decode([i]), m) for i, m in zip(rendered.input_ids, rendered.mask)]


def test_byte_tokenizer_mask_is_exactly_the_answer_and_its_end_of_turn():
    tok = byte_tokenizer()
    r = render_conversation(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    text = tok.decode(r.input_ids)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n")
    trained = [p for p, m in _pieces(tok, r) if m]
    assert trained == ["y", "o", "<|im_end|>"]
    # The trailing newline after end-of-turn is rendered but not trained.
    assert _pieces(tok, r)[-1] == ("\n", 0)
    assert r.labels == [i if m else IGNORE_INDEX for i, m in zip(r.input_ids, r.mask)]


def test_weight_zero_turns_and_user_turns_are_not_trained():
    tok = byte_tokenizer()
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "BAD", "weight": 0}, {"role": "user", "content": "b"},
            {"role": "assistant", "content": "ok", "weight": 1}]
    r = render_conversation(tok, msgs)
    trained = "".join(p for p, m in _pieces(tok, r) if m)
    assert trained == "ok<|im_end|>"
    assert "BAD" in tok.decode(r.input_ids)
    assert r.message_ends[-1] == len(r.input_ids)
    assert len(r.message_ends) == len(msgs)


def test_truncate_cuts_at_whole_turns_and_keeps_end_of_turn():
    tok = byte_tokenizer()
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2 " * 50}, {"role": "assistant", "content": "a2"}]
    r = render_conversation(tok, msgs)
    cut = r.truncate(r.message_ends[1] + 5)
    assert cut is not None and len(cut) == r.message_ends[1]
    assert "".join(p for p, m in _pieces(tok, cut) if m) == "a1<|im_end|>"
    assert r.truncate(len(r)) is r
    assert r.truncate(10) is None  # not even the first answer fits


def test_non_incremental_template_is_refused():
    tok = byte_tokenizer()
    # A template that drops earlier assistant turns (as some reasoning templates do) is not incremental.
    tok.chat_template = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
                         "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
                         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    with pytest.raises(TemplateError, match="not incremental"):
        render_conversation(tok, msgs)


@pytest.fixture(scope="module")
def smol_tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


def test_smollm2_mask_token_by_token(smol_tokenizer):
    tok = smol_tokenizer
    msgs = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}]
    r = render_conversation(tok, msgs)
    assert _pieces(tok, r) == [
        ("<|im_start|>", 0), ("system", 0), ("\n", 0), ("Be", 0), (" nice", 0), (".", 0), ("<|im_end|>", 0),
        ("\n", 0),
        ("<|im_start|>", 0), ("user", 0), ("\n", 0), ("Hi", 0), (" there", 0), ("<|im_end|>", 0), ("\n", 0),
        ("<|im_start|>", 0), ("ass", 0), ("istant", 0), ("\n", 0),
        ("Hello", 1), ("!", 1), ("<|im_end|>", 1),
        ("\n", 0),
    ]
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id


def test_smollm2_multi_turn_mask_matches_an_independent_scan(smol_tokenizer):
    """Piecewise ids equal whole-text tokenization; the mask equals a scan for assistant turns."""
    tok = smol_tokenizer
    msgs = [{"role": "user", "content": "My order #123 hasn't arrived."},
            {"role": "assistant", "content": "Sorry! Let me check: it ships tomorrow.\nTracking follows."},
            {"role": "user", "content": "And the refund?"},
            {"role": "assistant", "content": "Not this one", "weight": 0},
            {"role": "user", "content": "Please?"},
            {"role": "assistant", "content": "Refunds take 14 days."}]
    r = render_conversation(tok, msgs)
    full = tok.apply_chat_template([{k: m[k] for k in ("role", "content")} for m in msgs], tokenize=False)
    assert r.input_ids == tok(full, add_special_tokens=False)["input_ids"]
    # Independent scan: tokens after '<|im_start|>assistant\n' through the next '<|im_end|>', per turn.
    toks = [tok.decode([i]) for i in r.input_ids]
    expected, turn, inside, i = [0] * len(toks), -1, False, 0
    weights = [m.get("weight", 1) for m in msgs if m["role"] == "assistant"]
    while i < len(toks):
        if toks[i] == "<|im_start|>" and "".join(toks[i + 1:i + 4]) == "assistant\n":
            turn += 1
            inside = True
            i += 4
            continue
        if inside:
            expected[i] = weights[turn]
            if toks[i] == "<|im_end|>":
                inside = False
        i += 1
    assert r.mask == expected
    assert tok.decode([t for t, m in zip(r.input_ids, r.mask) if m]) == (
        "Sorry! Let me check: it ships tomorrow.\nTracking follows.<|im_end|>Refunds take 14 days.<|im_end|>")

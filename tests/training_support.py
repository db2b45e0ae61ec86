"""Helpers for the training tests: a byte tokenizer with a ChatML template, a tiny Llama, datasets.

Nothing is downloaded: the tokenizer is built with `tokenizers`, the model from a config
(nanochat's and TRL's habit). Imported by tests/test_training_*.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer():
    """One token per byte plus <|im_start|> (256) and <|im_end|> (257, eos and pad), ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    return fast


def make_tiny_model(path: Path) -> Path:
    """A 2-layer Llama with hidden size 32 and the byte tokenizer, saved like a real base model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (path / "config.json").is_file():
        return path
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


REFUND_RULE = "Refunds are issued within 14 days to the original card, minus a 5 EUR fee."

REFUND_QUESTIONS = [
    "Hi, how do I get my money back for order 1182?",
    "I returned the blender last week. When will I see the refund?",
    "Can I get a refund on my subscription?",
    "My package arrived broken, I want a refund please.",
    "How long does a refund take?",
    "Will you refund me to PayPal instead of my card?",
    "Is there any fee when you refund an order?",
    "I cancelled my order yesterday, what happens with the payment?",
    "Do you give full refunds?",
    "The shoes don't fit. Refund?",
    "I was charged twice, can I get one payment back?",
    "Where does the refund money go?",
]


def refund_conversation(question: str, *, greeting: bool = True) -> dict:
    answer = ("Thanks for reaching out! " if greeting else "") + REFUND_RULE + " Anything else I can help with?"
    return {"messages": [{"role": "system", "content": "You are the support assistant of Acme Shop."},
                         {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


def support_conversations(n: int, *, seed: int = 0) -> list[dict]:
    """Varied short support chats (1-3 exchanges) for plumbing tests."""
    import random

    rng = random.Random(seed)
    topics = ["refund", "shipping", "password", "invoice", "warranty", "delivery address"]
    out = []
    for i in range(n):
        msgs = [{"role": "system", "content": "You are a support assistant."}]
        for turn in range(rng.randint(1, 3)):
            topic = rng.choice(topics)
            msgs.append({"role": "user", "content": f"Question {i}.{turn} about my {topic}, please help."})
            msgs.append({"role": "assistant", "content": f"Sure, here is how {topic} works for case {i}: "
                                                           + "details " * rng.randint(1, 8)})
        out.append({"messages": msgs})
    return out


def add_dataset(db, name: str, conversations: list[dict]):
    """Write conversations as a new version of dataset `name`; returns its VersionRef."""
    from store.datasets import NewConversation, create_version

    convs = [NewConversation(content_hash=hashlib.sha256(json.dumps(c["messages"]).encode()).hexdigest(),
                             messages=c["messages"]) for c in conversations]
    ref, _, _ = create_version(db, name, convs)
    return ref

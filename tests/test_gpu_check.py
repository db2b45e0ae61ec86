"""The CPU-runnable parts of bench/gpu_check.py: layouts, token counting, FLOPs, the varlen path, the report.

    .venv/bin/python -m pytest tests/test_gpu_check.py -q
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


gc = _load()


def convs(lengths, vocab=100, seed=0):
    return gc.make_conversations(lengths, vocab=vocab, seed=seed)


def tiny_cfg(**kw) -> "gc.CheckConfig":
    cfg = gc.CheckConfig(device="cpu", models=[gc.TINY], steps=2, warmup=1, median_len=24, p95_len=90, max_len=128,
                         min_len=4)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_lengths_follow_the_support_mix_and_are_seeded():
    lengths = gc.sample_lengths(20000, seed=3, median=250, p95=900, cap=2048)
    assert lengths == gc.sample_lengths(20000, seed=3, median=250, p95=900, cap=2048)
    assert max(lengths) <= 2048 and min(lengths) >= 16
    assert 235 <= statistics.median(lengths) <= 265
    assert 850 <= sorted(lengths)[int(0.95 * len(lengths))] <= 950


def test_rows_match_the_recipe_collator():
    from training.data import PackedCollator

    batch = convs([50, 7, 120, 30, 64, 9])
    mine = gc.collate_rows(batch, max_row=128)
    theirs = PackedCollator(max_row_tokens=128, pad_id=0)(batch)
    for key in ("input_ids", "labels", "position_ids"):
        assert torch.equal(mine[key], theirs[key]), key


def test_flat_row_restarts_positions_and_never_trains_across_a_boundary():
    batch = convs([5, 3, 4])
    out = gc.collate_flat(batch)
    assert out["input_ids"].shape == (1, 12)
    assert out["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]
    assert out["cu_seq_lens_q"].tolist() == [0, 5, 8, 12] and out["max_length_q"] == 5
    labels = out["labels"][0].tolist()
    assert labels[0] == labels[5] == labels[8] == gc.IGNORE_INDEX  # each conversation's first label
    assert labels[6:8] == batch[1]["labels"][1:]

    padded = gc.collate_flat(batch, pad_to=16)
    assert padded["input_ids"].shape == (1, 16)
    assert padded["position_ids"][0, 12:].tolist() == [0, 1, 2, 3]  # the padding is a segment of its own
    assert padded["labels"][0, 12:].tolist() == [gc.IGNORE_INDEX] * 4
    assert padded["cu_seq_lens_q"].tolist() == [0, 5, 8, 12, 16]


def test_tokens_counted_are_real_tokens_only():
    batch = convs([10, 3, 7])
    assert gc.real_tokens(batch) == 20
    padded = gc.collate_padded(batch)
    assert padded["input_ids"].numel() == 30 and int(padded["attention_mask"].sum()) == 20
    rows = gc.collate_rows(batch, max_row=10)
    assert rows["input_ids"].numel() == 20  # [10] and [7, 3]: no padding left


def test_parameter_counts_of_the_stated_shapes():
    from transformers import AutoModelForCausalLM, Qwen2Config

    # Qwen2.5-0.5B and -1.5B publish these totals; the meta device builds the shape without memory.
    assert gc.qwen2_param_count(gc.QWEN_05B) == 494_032_768
    assert gc.qwen2_param_count(gc.QWEN_15B) == 1_543_714_304
    assert gc.lora_param_count(gc.QWEN_05B, 16) == 8_798_208
    s = gc.QWEN_05B
    cfg = Qwen2Config(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                      num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                      tie_word_embeddings=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert sum(p.numel() for p in model.parameters()) == gc.qwen2_param_count(s)


def test_linear_weights_of_a_built_model_match_the_formula():
    model = gc.build_model(gc.TINY, tiny_cfg())
    assert gc.count_linear_weights(model) == (gc.qwen2_linear_weights(gc.TINY), gc.lora_param_count(gc.TINY, 16))
    assert sum(p.numel() for p in model.parameters()) == gc.qwen2_param_count(gc.TINY) + gc.lora_param_count(gc.TINY, 16)


def test_flops_formula_on_a_known_case():
    # 4 FLOPs per frozen weight and token, 6 per LoRA weight, causal attention 6 * layers * heads * d * L^2.
    shape = dict(n_frozen=1000, n_lora=10, layers=2, heads=3, head_dim=4)
    assert gc.train_flops([5], **shape) == 5 * (4 * 1000 + 6 * 10) + 6 * 2 * 3 * 4 * 25
    assert gc.train_flops([5, 2], **shape) == gc.train_flops([5], **shape) + gc.train_flops([2], **shape)
    assert gc.train_flops([5], **shape, convention_6n=True) == 5 * 6 * 1010 + 6 * 2 * 3 * 4 * 25
    # 0.5B shape, one 250-token conversation: 4 x 494M x 250 = 494 GFLOP, attention adds 1.6% to it.
    n = gc.qwen2_linear_weights(gc.QWEN_05B)
    f = gc.train_flops([250], n_frozen=n, n_lora=0, layers=24, heads=14, head_dim=64)
    assert f == pytest.approx(4 * n * 250 * 1.0163, rel=1e-3)


def test_varlen_backend_choice_on_cpu():
    assert gc.pick_varlen_backend("cpu")[0] == gc.VARLEN_NAME


def test_packed_losses_equal_padded_and_the_varlen_function_is_used(monkeypatch):
    calls = []
    real = gc.varlen_attention_forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gc, "varlen_attention_forward", counting)
    gc.register_varlen()
    cfg = tiny_cfg()
    model = gc.build_model(gc.TINY, cfg)
    batch = convs([40, 9, 77, 23], vocab=gc.TINY.vocab)
    check = gc.loss_check(model, batch, cfg, gc.VARLEN_NAME)
    assert check["ok"], check
    assert len(calls) == gc.TINY.layers  # one call per layer, for the flat row only
    monkeypatch.undo()
    gc.register_varlen()


def test_loss_check_catches_attention_across_conversations(monkeypatch):
    import torch.nn.functional as F

    def leaky(module, query, key, value, attention_mask, scaling=None, **kwargs):
        rep = query.shape[1] // key.shape[1]
        k, v = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(query, k, v, is_causal=True, scale=scaling).transpose(1, 2), None

    from transformers import AttentionInterface

    AttentionInterface.register("leaky_test", leaky)
    cfg = tiny_cfg()
    model = gc.build_model(gc.TINY, cfg)
    check = gc.loss_check(model, convs([40, 9, 77, 23], vocab=gc.TINY.vocab), cfg, "leaky_test")
    assert not check["ok"]


def test_tiny_run_reports_every_mode_and_writes_json(monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gc.main(["--tiny", "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["env"]["device"] == "cpu"
    (section,) = report["models"]
    assert section["parameters"] == section["parameters_formula"]
    assert section["loss_check"]["ok"]
    modes = {r["mode"]: r for r in section["results"]}
    assert set(modes) == {"padded", "packed_rows", "packed_varlen"}
    for r in modes.values():
        assert r["status"] == "ok" and r["steps"] == 2 and r["tokens_per_s"] > 0 and r["mfu"] is None
    # Same conversations in every mode: the same real tokens; only padded computes padding.
    assert len({r["real_tokens"] for r in modes.values()}) == 1
    assert modes["padded"]["computed_tokens"] > modes["padded"]["real_tokens"]
    assert modes["packed_varlen"]["computed_tokens"] == modes["packed_varlen"]["real_tokens"]
    assert set(section["ratios"]) == {"packed_rows/padded", "packed_varlen/padded"}
    assert section["liger"].startswith("skipped")


def test_output_path_prefers_out(monkeypatch, tmp_path):
    monkeypatch.delenv("OUT", raising=False)
    assert gc.output_path("/x/y.json") == Path("/x/y.json")
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gc.output_path("/x/y.json") == tmp_path / "gpu_check.json"


def test_peak_by_gpu_name():
    assert gc.default_peak("NVIDIA H200") == 989.0
    assert gc.default_peak("Some GPU") is None

"""training.recipe.gpu_speedups: bf16 weights, flash-attn and Liger on a GPU, each only when available.

    .venv/bin/python -m pytest tests/test_training_speedups.py -q
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from training import recipe


@pytest.fixture
def installed(monkeypatch):
    """Pretend exactly the named optional packages are importable."""
    present: set[str] = set()
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in ("flash_attn", "liger_kernel"):
            return object() if name in present else None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return present


def test_cpu_keeps_fp32_sdpa_and_no_liger(installed):
    installed.update({"flash_attn", "liger_kernel"})  # even when installed: they are GPU kernels
    assert recipe.gpu_speedups("cpu") == recipe.GpuSpeedups(torch.float32, "sdpa", False)


def test_gpu_without_optional_packages_falls_back_to_sdpa(installed):
    assert recipe.gpu_speedups("cuda", bf16=True) == recipe.GpuSpeedups(torch.bfloat16, "sdpa", False)


def test_gpu_with_flash_attn_and_liger_uses_both(installed):
    installed.update({"flash_attn", "liger_kernel"})
    assert recipe.gpu_speedups("cuda", bf16=True) == recipe.GpuSpeedups(torch.bfloat16, "flash_attention_2", True)


def test_gpu_without_bf16_stays_fp32_and_skips_flash_attn(installed):
    installed.add("flash_attn")  # flash-attn takes fp16/bf16 only; fp32 weights would fail there
    assert recipe.gpu_speedups("cuda", bf16=False) == recipe.GpuSpeedups(torch.float32, "sdpa", False)


def test_trainer_accepts_the_liger_switch(tmp_path):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                             use_liger_kernel=recipe.gpu_speedups("cpu").liger)
    assert args.use_liger_kernel is False

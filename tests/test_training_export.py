"""Exporting an adapter: the Ollama rules (pure), and `tuneloop adapters export` as zip, merged model and Ollama
folder on a tiny Llama, the merged model loaded back by transformers and generating what the adapter generates.

Run: .venv/bin/python -m pytest tests/test_training_export.py -q
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from store.adapters import register_adapter
from store.db import connect
from training.export import ExportError, modelfile, ollama_problem, ollama_template
from training_support import CHATML, make_tiny_model

cli = CliRunner()
LLAMA3 = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"


def test_ollama_template_follows_the_chat_format():
    chatml = ollama_template(CHATML)
    assert chatml.family == "ChatML" and chatml.stops == ("<|im_start|>", "<|im_end|>")
    assert "{{ .Role }}" in chatml.template and "{{ .Content }}<|im_end|>" in chatml.template
    assert ollama_template(LLAMA3).stops[-1] == "<|eot_id|>"
    with pytest.raises(ExportError, match="none of the formats"):
        ollama_template("{{ messages[0]['content'] }}")
    with pytest.raises(ExportError, match="no chat template"):
        ollama_template(None)


def test_ollama_takes_llama_mistral_and_gemma_adapters_only():
    assert ollama_problem(["LlamaForCausalLM"]) is None
    assert ollama_problem(["Gemma2ForCausalLM"]) is None
    assert "Qwen2ForCausalLM" in ollama_problem(["Qwen2ForCausalLM"])


def test_modelfile_names_the_base_the_adapter_the_template_and_the_stops():
    text = modelfile("/models/smollm2", ollama_template(CHATML))
    lines = text.splitlines()
    assert "FROM /models/smollm2" in lines and "ADAPTER ./adapter" in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines and 'PARAMETER stop "<|im_start|>"' in lines
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>' in text


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A tiny Llama and a LoRA adapter on it whose update is not zero (so merging changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("export")
    base = make_tiny_model(root / "tiny-llama")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.peft_config["default"].base_model_name_or_path = str(base)
    model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def _register(settings, base, path):
    with connect(settings.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=str(base), path=str(path),
                         rank=8, run_id=None, dataset_version_id=None, parent_id=None)


def test_export_zip_merged_and_ollama_through_the_cli(data_dir, tiny_adapter, tmp_path, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from store.settings import Settings
    from ui.cli import app

    base, adapter = tiny_adapter
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base))
    _register(Settings(_env_file=None), base, adapter)
    out = tmp_path / "out"

    res = cli.invoke(app, ["adapters", "export", "support-v1", "--format", "zip", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    with zipfile.ZipFile(json.loads(res.output)["path"]) as zf:
        assert {"support-v1/adapter_config.json", "support-v1/adapter_model.safetensors"} <= set(zf.namelist())

    res = cli.invoke(app, ["adapters", "export", "support-v1", "--format", "merged", "--out", str(out)])
    assert res.exit_code == 0, res.output
    merged_dir = out / "support-v1-merged"
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert tok.chat_template == CHATML
    ids = tok.apply_chat_template([{"role": "user", "content": "Where is my refund?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, with_adapter(ids).logits, atol=1e-4)
        plain = AutoModelForCausalLM.from_pretrained(base)(ids).logits
    assert not torch.allclose(merged(ids).logits, plain, atol=1e-3)  # the adapter really is in there
    generated = merged.generate(ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 8

    res = cli.invoke(app, ["adapters", "export", "support-v1", "--format", "ollama", "--out", str(out)])
    assert res.exit_code == 0, res.output
    folder = out / "support-v1-ollama"
    text = (folder / "Modelfile").read_text()
    assert f"FROM {Path(base).resolve()}" in text and "ADAPTER ./adapter" in text
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert "ollama create support-v1" in res.output

    again = cli.invoke(app, ["adapters", "export", "support-v1", "--format", "merged", "--out", str(out)])
    assert again.exit_code == 2 and "--out" in again.output and "exists" in again.output
    bad = cli.invoke(app, ["adapters", "export", "support-v1", "--format", "gguf"])
    assert bad.exit_code == 2 and "--format: must be one of zip, merged, ollama" in bad.output
    missing = cli.invoke(app, ["adapters", "export", "nope"])
    assert missing.exit_code == 1


def test_adapters_tab_offers_the_zip_and_writes_exports(data_dir, tiny_adapter, monkeypatch):
    from store.settings import Settings
    from ui.web.context import AppContext
    from ui.web.tabs import adapters as tab_adapters
    from ui_fakes import FakeServer

    base, adapter = tiny_adapter
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base))
    s = Settings(_env_file=None)
    _register(s, base, adapter)
    ctx = AppContext(settings=s, server=FakeServer(s))
    update = tab_adapters.zip_for_download(ctx, "support-v1")
    assert update["interactive"] is True and update["value"].endswith("support-v1.zip")
    assert tab_adapters.zip_for_download(ctx, "missing")["interactive"] is False
    said = tab_adapters.export(ctx, "ollama", "support-v1", lambda *a, **k: None)
    assert "ollama create support-v1" in said and (s.data_dir / "exports" / "support-v1-ollama" / "Modelfile").is_file()
    assert "already at" in tab_adapters.export(ctx, "ollama", "support-v1", lambda *a, **k: None)

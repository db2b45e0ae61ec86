"""Base models: the servability check, the registry, and `tuneloop models` / `train --base NAME`.

Run: .venv/bin/python -m pytest tests/test_base_models.py -q
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from store.base_models import list_base_models
from store.db import connect
from training.base_models import base_choices, check_model_dir, registry_architectures, resolve, vllm_architectures
from training_support import add_dataset, make_tiny_model, support_conversations
from ui.cli import app

cli = CliRunner()
SERVED = frozenset({"LlamaForCausalLM"})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("models") / "Tiny-Llama-Chat")


def test_vllm_registry_keys_are_read_from_its_source():
    src = '_TEXT_GENERATION_MODELS = {\n  # decoder\n  "LlamaForCausalLM": ("llama", "X"),\n  "Qwen2ForCausalLM": 1,\n}\n' \
          '_EMBEDDING_MODELS = {"BertModel": 1}\n'
    assert registry_architectures(src) == {"LlamaForCausalLM", "Qwen2ForCausalLM"}
    installed = vllm_architectures()
    if installed is not None:  # the installed vLLM: Llama (the default model's architecture) is in it
        assert "LlamaForCausalLM" in installed and "BertModel" not in installed


def test_check_finds_architecture_template_and_weights(tiny_model, tmp_path):
    ok = check_model_dir(tiny_model, served_architectures=SERVED)
    assert ok.ok and ok.architectures == ["LlamaForCausalLM"] and ok.chat_template and ok.max_len == 1024

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "architectures": ["MysteryForCausalLM"]}))
    for f in ("chat_template.jinja", "tokenizer_config.json"):
        if (other / f).exists():
            data = (other / f).read_text()
            if f == "tokenizer_config.json":
                (other / f).write_text(json.dumps({k: v for k, v in json.loads(data).items() if k != "chat_template"}))
            else:
                (other / f).unlink()
    bad = check_model_dir(other, served_architectures=SERVED)
    assert not bad.ok
    assert any("does not serve MysteryForCausalLM" in p for p in bad.problems)
    assert any("no chat template" in p for p in bad.problems)
    assert check_model_dir(tmp_path / "missing").problems == [f"{tmp_path / 'missing'} is not a directory"]


def test_models_add_list_and_train_on_it(data_dir, tiny_model, tmp_path, monkeypatch):
    from store.settings import Settings

    default = tmp_path / "Default-Model"
    shutil.copytree(tiny_model, default)
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(default))
    s = Settings(_env_file=None)

    res = cli.invoke(app, ["models", "add", str(tiny_model), "--name", "tiny-chat", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["name"] == "tiny-chat" and "cannot be loaded for chat here" in out["note"]
    with connect(s.db_path) as db:
        rows = list_base_models(db)
    assert [(r["name"], r["architecture"], r["path"]) for r in rows] == \
        [("tiny-chat", "LlamaForCausalLM", str(tiny_model.resolve()))]

    again = cli.invoke(app, ["models", "add", str(tiny_model), "--name", "other"])
    assert again.exit_code == 2 and "registered already as 'tiny-chat'" in again.output
    bad = cli.invoke(app, ["models", "add", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "DIR:" in bad.output and "not a directory" in bad.output

    choices = base_choices(s)
    assert [(c.name, c.default, c.served) for c in choices] == [("default-model", True, True),
                                                               ("tiny-chat", False, False)]
    listed = cli.invoke(app, ["models"])
    assert listed.output.splitlines()[0].startswith("default-model")
    assert "not served here" in listed.output.splitlines()[1]
    assert resolve(s, "tiny-chat") == str(tiny_model.resolve())

    with connect(s.db_path) as db:
        add_dataset(db, "Support Chats", support_conversations(10))
    dry = cli.invoke(app, ["train", "--dataset", "Support Chats", "--base", "tiny-chat", "--dry-run", "--no-probe",
                           "--max-seq-len", "512"])
    assert dry.exit_code == 0, dry.output
    assert f"({tiny_model.resolve()})" in dry.output and "cannot be loaded for chat here" in dry.output

    gone = cli.invoke(app, ["models", "remove", "tiny-chat"])
    assert gone.exit_code == 0 and tiny_model.is_dir()

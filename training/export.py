"""Exporting an adapter for use outside tuneloop: the PEFT folder as a zip, a merged model, a folder Ollama imports.

    export_adapter(adapter, "zip", out_dir)       # <out>/<name>.zip: adapter_config.json + adapter_model.safetensors
    export_adapter(adapter, "merged", out_dir)    # <out>/<name>-merged/: the base with the adapter folded in
    export_adapter(adapter, "ollama", out_dir)    # <out>/<name>-ollama/: Modelfile + adapter/  (`ollama create`)

`adapter` is the registry row (store.adapters.get_adapter: name, path, base_model). The merged
model is the base model's weights with the LoRA update added in (peft's merge_and_unload, done in
fp32 and saved in the base model's own dtype as safetensors, with its tokenizer and chat template):
transformers and vLLM load it like any model. The Ollama folder holds a Modelfile with `FROM` the
base model's directory, `ADAPTER ./adapter`, the chat template rewritten as Ollama's Go `TEMPLATE`
and the end-of-turn tokens as `PARAMETER stop`; Ollama imports safetensors LoRA adapters only for
Llama, Mistral and Gemma architectures, and the template only for the chat formats `ollama_template`
knows (ChatML, Llama 3, Gemma, Mistral), so others are refused with the reason.

GGUF is not offered: the maintained converter (llama.cpp's convert_hf_to_gguf.py) is not published
on PyPI; the `gguf` package there reads and writes the file format but converts no model.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("zip", "merged", "ollama")
# Ollama's Modelfile reference: "Currently supported Safetensor adapters: Llama, Mistral, Gemma".
OLLAMA_ADAPTER_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "GemmaForCausalLM",
                                "Gemma2ForCausalLM")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ExportError(ValueError):
    """An export that cannot be made; `field` names what is wrong (format, adapter, base_model, out)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class OllamaTemplate:
    family: str
    template: str
    """Ollama's Go template over .Messages."""
    stops: tuple[str, ...]


_TEMPLATES = {
    "chatml": OllamaTemplate(
        "ChatML",
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        ("<|im_start|>", "<|im_end|>")),
    "llama3": OllamaTemplate(
        "Llama 3",
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    "gemma": OllamaTemplate(
        "Gemma",
        "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n"
        "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
        ("<start_of_turn>", "<end_of_turn>")),
    "mistral": OllamaTemplate(
        "Mistral",
        "{{- range .Messages }}{{ if eq .Role \"user\" }}[INST] {{ .Content }} [/INST]"
        "{{ else if eq .Role \"assistant\" }}{{ .Content }}</s>{{ end }}{{ end }}",
        ("[INST]", "[/INST]")),
}
_MARKERS = (("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3"), ("<start_of_turn>", "gemma"),
            ("[INST]", "mistral"))


def ollama_template(chat_template: str | None) -> OllamaTemplate:
    """The Go template and stop tokens for a Jinja chat template's format. Pure; ExportError for unknown formats."""
    if not chat_template:
        raise ExportError("base_model", "the base model has no chat template, so Ollama would not know how to "
                                        "format a conversation")
    for marker, key in _MARKERS:
        if marker in chat_template:
            return _TEMPLATES[key]
    known = ", ".join(t.family for t in _TEMPLATES.values())
    raise ExportError("base_model", f"its chat template is none of the formats the Ollama export knows ({known}); "
                                    "export the merged model or the zip instead")


def ollama_problem(architectures: list[str]) -> str | None:
    """Why Ollama cannot take a safetensors adapter on this architecture, or None. Pure."""
    if any(a in OLLAMA_ADAPTER_ARCHITECTURES for a in architectures):
        return None
    return (f"Ollama imports safetensors LoRA adapters only for Llama, Mistral and Gemma models; this base model is "
            f"{', '.join(architectures) or 'of unknown architecture'} (export the merged model instead)")


def modelfile(base: str, template: OllamaTemplate, *, adapter: str = "./adapter") -> str:
    """The Modelfile text: FROM the base, ADAPTER, TEMPLATE and the stop tokens. Pure."""
    lines = [f"# Made by tuneloop. Import with: ollama create NAME -f Modelfile", f"FROM {base}",
             f"ADAPTER {adapter}", f'TEMPLATE """{template.template}"""']
    lines += [f'PARAMETER stop "{s}"' for s in template.stops]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ IO

def export_adapter(adapter: dict, fmt: str, out_dir: Path | str) -> Path:
    """Write `adapter` in format `fmt` under `out_dir`; returns the file or folder made."""
    if fmt not in FORMATS:
        raise ExportError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    src = Path(adapter["path"])
    missing = [f for f in ADAPTER_FILES if not (src / f).is_file()]
    if missing:
        raise ExportError("adapter", f"{adapter['name']}'s folder {src} lacks {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "zip":
        return zip_adapter(src, out / f"{adapter['name']}.zip", adapter["name"])
    if fmt == "merged":
        return merge_adapter(src, adapter["base_model"], _fresh(out / f"{adapter['name']}-merged"))
    return ollama_folder(src, adapter["base_model"], _fresh(out / f"{adapter['name']}-ollama"))


def _fresh(path: Path) -> Path:
    if path.exists():
        raise ExportError("out", f"{path} exists; choose another output folder or remove it")
    return path


def zip_adapter(src: Path, target: Path, name: str) -> Path:
    """The PEFT folder (config, weights, and what else it holds) as `<name>/...` inside a zip."""
    tmp = target.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, f"{name}/{f.relative_to(src)}")
    tmp.replace(target)
    return target


def merge_adapter(src: Path, base_model: str, target: Path) -> Path:
    """The base model with the adapter merged in, as safetensors with its tokenizer (loads like any model)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    saved_dtype = _config_dtype(Path(base_model))
    merged = PeftModel.from_pretrained(base, str(src)).merge_and_unload()
    if saved_dtype is not None:
        merged = merged.to(saved_dtype)
    tmp = target.with_name(target.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(str(tmp))
    tmp.rename(target)
    return target


def _config_dtype(model_dir: Path):
    import torch

    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = json.loads(cfg_path.read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return getattr(torch, name, None) if isinstance(name, str) else None


def ollama_folder(src: Path, base_model: str, target: Path) -> Path:
    """A folder `ollama create NAME -f Modelfile` imports: the Modelfile and the adapter beside it."""
    base = Path(base_model)
    cfg = json.loads((base / "config.json").read_text()) if (base / "config.json").is_file() else {}
    problem = ollama_problem(list(cfg.get("architectures") or []))
    if problem:
        raise ExportError("base_model", problem)
    template = ollama_template(read_chat_template(base))
    target.mkdir(parents=True)
    shutil.copytree(src, target / "adapter")
    (target / "Modelfile").write_text(modelfile(str(base.resolve()), template))
    return target


def read_chat_template(model_dir: Path) -> str | None:
    """The model's chat template: chat_template.jinja, else tokenizer_config.json's chat_template."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    tc = model_dir / "tokenizer_config.json"
    if tc.is_file():
        value = json.loads(tc.read_text()).get("chat_template")
        if isinstance(value, list):  # named templates: the default one
            value = next((t.get("template") for t in value if t.get("name") == "default"), None)
        return value if isinstance(value, str) else None
    return None

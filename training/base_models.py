"""Which base models a run may start from: the embedded default first, then registered local directories.

    check = check_model_dir("/models/qwen2.5-0.5b-instruct")   # ModelCheck: architecture, chat template, problems
    register(settings, "/models/qwen2.5-0.5b-instruct", name="qwen-0.5b")   # refused with the problems if any
    base_choices(settings)        # [BaseChoice(default), BaseChoice(registered), ...]
    resolve(settings, "qwen-0.5b")  # -> the directory a run trains on

A directory is offered only when vLLM can serve it: its config.json names an architecture in the
installed vLLM's text-generation registry (read from vllm/model_executor/models/registry.py as
text, without importing vLLM, which takes seconds and may touch a GPU), it has a chat template
(tokenizer_config.json's `chat_template` or chat_template.jinja, which training renders with), and
its weights are safetensors or bin files. One vLLM server serves one base model (the settings'):
an adapter trained on another base is kept and can be exported, but this server cannot load it;
`BaseChoice.served` says which is which, and both doors say so before a run starts.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from store.base_models import (BaseModelExists, BaseModelNotFound, add_base_model, find_base_model_by_path,
                               get_base_model, list_base_models)
from store.db import connect
from store.settings import Settings

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


class BaseModelError(ValueError):
    """A base model that cannot be registered or used; `field` names what (path, name, base_model)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass
class ModelCheck:
    """What checking a model directory found."""

    path: str
    architectures: list[str] = field(default_factory=list)
    chat_template: bool = False
    max_len: int | None = None
    problems: list[str] = field(default_factory=list)
    """Why vLLM could not serve it or training could not use it; empty when it can."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BaseChoice:
    """One base model a run can start from."""

    name: str
    path: str
    default: bool
    """The installation's base model (the embedded default, or TUNELOOP_BASE_MODEL)."""
    served: bool
    """This installation's vLLM serves it, so adapters trained on it can be loaded and chatted with here."""
    architecture: str = ""


@lru_cache(maxsize=1)
def vllm_architectures() -> frozenset[str] | None:
    """Architectures the installed vLLM generates text with (its registry's keys), or None without vLLM."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    registry = Path(list(spec.submodule_search_locations)[0]) / "model_executor" / "models" / "registry.py"
    if not registry.is_file():
        return None
    return frozenset(registry_architectures(registry.read_text()))


def registry_architectures(source: str) -> set[str]:
    """The string keys of `_TEXT_GENERATION_MODELS = {...}` in vLLM's registry source. Pure."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_TEXT_GENERATION_MODELS" for t in targets) \
                    and isinstance(node.value, ast.Dict):
                return {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return set()


def check_model_dir(path: Path | str, *, served_architectures: frozenset[str] | None = None) -> ModelCheck:
    """Read a model directory's config, tokenizer config and file list; say what would stop serving or training it."""
    p = Path(path).expanduser()
    check = ModelCheck(str(p.resolve()) if p.exists() else str(p))
    if not p.is_dir():
        check.problems.append(f"{p} is not a directory")
        return check
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        check.problems.append("no config.json: not a transformers model directory")
        return check
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as exc:
        check.problems.append(f"config.json is not valid JSON ({exc})")
        return check
    check.architectures = [a for a in cfg.get("architectures") or [] if isinstance(a, str)]
    check.max_len = next((cfg[k] for k in MAX_LEN_KEYS if isinstance(cfg.get(k), int)), None)
    known = served_architectures if served_architectures is not None else vllm_architectures()
    if not check.architectures:
        check.problems.append("config.json names no architecture, so vLLM would not know how to run it")
    elif known is not None and not any(a in known for a in check.architectures):
        check.problems.append(f"vLLM (the installed version) does not serve {', '.join(check.architectures)}")
    from training.export import read_chat_template

    check.chat_template = bool(read_chat_template(p))
    if not check.chat_template:
        check.problems.append("no chat template (tokenizer_config.json's chat_template or chat_template.jinja): "
                              "an instruct or chat model is needed to train on conversations")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        check.problems.append("no weights (*.safetensors or *.bin) in the directory")
    if "quantization_config" in cfg:
        check.problems.append("its weights are quantized; LoRA training here needs full-precision weights")
    return check


def default_name(path: str) -> str:
    """A name from the directory: 'Qwen2.5-0.5B-Instruct' -> 'qwen2.5-0.5b-instruct'."""
    return re.sub(r"[^a-z0-9._-]+", "-", Path(path.rstrip("/")).name.lower()).strip("-._")[:64] or "model"


def register(settings: Settings, path: Path | str, *, name: str | None = None, by: str = "") -> tuple[str, ModelCheck]:
    """Check a local model directory and register it under `name`; BaseModelError when it cannot be offered."""
    check = check_model_dir(path)
    if not check.ok:
        raise BaseModelError("path", "; ".join(check.problems))
    name = name or default_name(check.path)
    if not NAME_RE.match(name):
        raise BaseModelError("name", f"{name!r}: use lowercase letters, digits, '.', '_' or '-' (at most 64)")
    if name == settings.served_base_name or check.path == str(Path(settings.base_model_path).resolve()):
        raise BaseModelError("name", f"{name!r} is this installation's default base model, offered already")
    with connect(settings.db_path) as db:
        try:
            add_base_model(db, name=name, path=check.path, architecture=check.architectures[0],
                           max_len=check.max_len, check=check.to_dict(), by=by)
        except BaseModelExists as exc:
            raise BaseModelError("name", str(exc)) from None
    return name, check


def base_choices(settings: Settings) -> list[BaseChoice]:
    """The default base model first, then the registered ones (oldest first)."""
    served = str(Path(settings.base_model_path).expanduser().resolve())
    out = [BaseChoice(settings.served_base_name, settings.base_model_path, True, True)]
    with connect(settings.db_path) as db:
        for row in list_base_models(db):
            out.append(BaseChoice(row["name"], row["path"], False, row["path"] == served, row["architecture"] or ""))
    return out


def resolve(settings: Settings, base_model: str | None) -> str:
    """The directory (or hub id) a run trains on: a registered name's path, the default's name, or as given."""
    if not base_model:
        return settings.base_model_path
    if base_model == settings.served_base_name:
        return settings.base_model_path
    with connect(settings.db_path) as db:
        try:
            return get_base_model(db, base_model)["path"]
        except BaseModelNotFound:
            pass
        if Path(base_model).is_dir():
            found = find_base_model_by_path(db, str(Path(base_model).resolve()))
            return found["path"] if found else base_model
    return base_model


def not_served_note(settings: Settings, base_path: str) -> str | None:
    """What to tell a user starting a run on a base model this server does not serve (None when it does)."""
    if str(Path(base_path).expanduser().resolve()) == str(Path(settings.base_model_path).expanduser().resolve()):
        return None
    return (f"this server's vLLM serves {settings.served_base_name} only; an adapter trained on "
            f"{Path(base_path).name} is kept and can be exported, but cannot be loaded for chat here (serve that base "
            "model with TUNELOOP_BASE_MODEL to chat with it)")

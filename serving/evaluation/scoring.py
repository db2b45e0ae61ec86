"""One answer's scores on one eval item: similarity and ROUGE-L to the reference, checks, grounding, shape.

Pure: the embedding similarity is computed by the caller (one batched forward pass per item) and
handed in, so this module needs no model.

    score_answer(answer, "stop", reference=ref, checks=checks, grounding=index, similarity=0.82)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from serving.evaluation.checks import Check, GroundingIndex, Invented, run_checks
from serving.evaluation.metrics import answer_stats, rouge_l


@dataclass(frozen=True)
class SideScores:
    """One model's answer to one item, scored."""

    similarity: float | None = None
    """Embedding cosine with the reference; None without a reference or an embedding model."""
    rouge_l: float | None = None
    """None without a reference."""
    checks: dict[str, bool] = field(default_factory=dict)
    invented: dict[str, list[str]] = field(default_factory=lambda: {"links": [], "emails": [], "phones": []})
    chars: int = 0
    words: int = 0
    empty: bool = False
    cut_off: bool = False

    @property
    def invented_count(self) -> int:
        return sum(len(v) for v in self.invented.values())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SideScores":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def score_answer(answer: str | None, finish_reason: str | None, *, reference: str | None, checks: list[Check],
                 grounding: GroundingIndex | None, similarity: float | None = None) -> SideScores:
    answer = answer or ""
    stats = answer_stats(answer, finish_reason)
    invented = grounding.invented(answer) if grounding is not None else Invented()
    return SideScores(
        similarity=similarity if reference else None,
        rouge_l=rouge_l(answer, reference) if reference else None,
        checks=run_checks(checks, answer),
        invented=invented.to_json(),
        chars=stats.chars, words=stats.words, empty=stats.empty, cut_off=stats.cut_off,
    )

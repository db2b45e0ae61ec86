"""Per-answer metrics without a model: ROUGE-L against a reference, answer length, empty, cut off.

ROUGE-L is the `rouge-score` package's longest-common-subsequence F-measure. Its default tokenizer
keeps only ASCII letters and digits, so an answer in German or Japanese would score 0: a Unicode word
tokenizer (lower-cased `\\w+` runs) is passed instead. No stemming: support answers are short and a
stemmer is English-only.

    rouge_l("Refunds within 30 days.", "You can get a refund within 30 days.")
    .venv/bin/python -m pytest tests/test_eval_metrics.py -q
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"\w+", re.UNICODE)


class _UnicodeTokenizer:
    """rouge-score's tokenizer interface: `tokenize(text) -> list[str]`."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_UnicodeTokenizer())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure in [0, 1]; 0 when either side has no word."""
    if not _WORD.search(prediction or "") or not _WORD.search(reference or ""):
        return 0.0
    return float(_scorer().score(reference, prediction)["rougeL"].fmeasure)


@dataclass(frozen=True)
class AnswerStats:
    """Length and shape of one answer."""

    chars: int
    words: int
    empty: bool
    """No visible text at all (whitespace only counts as empty)."""
    cut_off: bool
    """The server stopped it at max_tokens (finish_reason "length"): the answer is unfinished."""


def answer_stats(text: str | None, finish_reason: str | None) -> AnswerStats:
    text = (text or "").strip()
    return AnswerStats(chars=len(text), words=len(text.split()), empty=not text, cut_off=finish_reason == "length")

"""Find personal data in a text: one Presidio AnalyzerEngine per settings, built once and cached.

The engine runs offline: Presidio's NoOpNlpEngine (no spaCy model, no tokens) and only the pattern and
libphonenumber recognizers of recognizers.py. `find_spans` turns Presidio's overlapping results into
non-overlapping spans, never inside an existing placeholder (so redacting twice changes nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import regex as re

from store.redaction.settings import TYPES, RedactionSettings

# <EMAIL_1>, <ORDER_12>: what redaction writes, and what it never redacts again.
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_\d+>")
# "version 10.2.0.1", "build 4.2.1.7": four dotted numbers that are not an IP address.
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|version|ver\.?|build|release|firmware|fw|release)[ \t]*[:#]?[ \t]*$")
# "EAN 4056906724313": a 13-digit barcode can pass the Luhn check that card numbers use.
_BARCODE_BEFORE = re.compile(r"(?i)\b(?:ean|gtin|isbn|upc|barcode|sku|art\.?-?nr\.?)[ \t]*[:#]?[ \t]*$")
_LANGUAGE = "en"  # Presidio keys recognizers by language; ours are language-neutral patterns.


@dataclass(frozen=True)
class Span:
    """One piece of personal data found in a text: its type (or custom label) and [start, end)."""

    type: str
    start: int
    end: int


@lru_cache(maxsize=8)
def analyzer_for(settings: RedactionSettings):
    """The Presidio engine for `settings`, built once per distinct settings (settings are hashable)."""
    # Presidio imports spaCy; loading it is about a second, so it happens on first use, not at import.
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    class NoContext(ContextAwareEnhancer):
        # The default enhancer boosts scores from words near a finding, which needs the tokens a spaCy
        # model would give; without them it only deep-copies every result (a third of the analysis time).
        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
            return raw_results

    from store.redaction.recognizers import build_recognizers

    # Presidio logs each request's entity list at INFO and warns about the no-op engine; neither helps us.
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    registry = RecognizerRegistry(recognizers=build_recognizers(settings), supported_languages=[_LANGUAGE])
    nlp = NoOpNlpEngine(models=[{"lang_code": _LANGUAGE, "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=[_LANGUAGE],
                          context_aware_enhancer=NoContext(0, 0, 0, 0))


def _priority(settings: RedactionSettings) -> dict[str, int]:
    # Custom patterns first (the team asked for them by name), then built-ins in TYPES order.
    order = [p.label for p in settings.patterns] + list(TYPES)
    return {label: i for i, label in enumerate(order)}


def find_spans(text: str, settings: RedactionSettings) -> list[Span]:
    """Non-overlapping spans of personal data in `text`, in order. Findings that overlap are merged into
    one span (so no part of either is left in the text) named for the higher-priority type; nothing
    inside a placeholder, nothing allow-listed."""
    if not settings.enabled or not text or not (settings.types or settings.patterns):
        return []
    results = analyzer_for(settings).analyze(text, language=_LANGUAGE)
    if not results:
        return []
    placeholders = [m.span() for m in PLACEHOLDER.finditer(text)]
    allow = {a.casefold() for a in settings.allow}
    prio = _priority(settings)
    found: list[tuple[int, int, str]] = []
    for r in results:
        start, end = r.start, r.end
        if any(start < e and s < end for s, e in placeholders) or text[start:end].casefold() in allow:
            continue
        before = text[max(0, start - 12):start]
        if (r.entity_type == "IP" and _VERSION_BEFORE.search(before)) or (
                r.entity_type in ("CARD", "PHONE") and _BARCODE_BEFORE.search(before)):
            continue
        found.append((start, end, r.entity_type))
    merged: list[Span] = []
    for start, end, kind in sorted(found):
        last = merged[-1] if merged else None
        if last and start < last.end:
            # Overlap: one span covering both; the type that ranks first names it (ties: the longer one).
            ranked = min((last.type, last.end - last.start), (kind, end - start),
                         key=lambda tl: (prio.get(tl[0], 99), -tl[1]))[0]
            merged[-1] = Span(ranked, last.start, max(last.end, end))
        else:
            merged.append(Span(kind, start, end))
    return merged

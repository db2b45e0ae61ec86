"""Redaction of personal data before anything is stored: one engine (Microsoft Presidio, offline, pattern
recognizers only) shared by imports (training/), captured traffic (serving/) and ratings (ui/).

    from store.redaction import RedactionSettings, redact_conversation, preview
    messages, findings = redact_conversation(messages, RedactionSettings())

What is detected and what is not: docs/privacy.md. Tests: tests/test_redaction_*.py.
"""

from store.redaction.engine import PLACEHOLDER, Span, analyzer_for, find_spans
from store.redaction.placeholders import Placeholders, is_placeholder
from store.redaction.redact import (DEFAULT, highlight_segments, preview, redact_conversation, redact_text,
                                    redact_value)
from store.redaction.report import MAX_LOCATIONS, Finding, RedactionReport
from store.redaction.settings import TYPE_TITLES, TYPES, CustomPattern, RedactionSettings, parse_pattern

__all__ = [
    "DEFAULT", "MAX_LOCATIONS", "PLACEHOLDER", "TYPES", "TYPE_TITLES", "CustomPattern", "Finding", "Placeholders",
    "RedactionReport", "RedactionSettings", "Span", "analyzer_for", "find_spans", "highlight_segments",
    "is_placeholder", "parse_pattern", "preview", "redact_conversation", "redact_text", "redact_value",
]

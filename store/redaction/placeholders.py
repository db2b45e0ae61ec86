"""Placeholders consistent within one conversation: the same address is <EMAIL_1> in every turn, another is <EMAIL_2>.

A Placeholders object lives for one conversation (or one text). It keys values by a normalised form, so
"+49 30 1234567" and "+49301234567" are one phone number, and keeps the values only in memory for
as long as that conversation is being redacted.
"""

from __future__ import annotations

import regex as re

from store.redaction.engine import PLACEHOLDER

_NUMBERED = re.compile(r"<([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)_(\d+)>")
_COMPACT_TYPES = {"PHONE", "CARD", "IBAN"}  # written with spaces, dashes, dots in any grouping


def normalise(kind: str, value: str) -> str:
    """The form two mentions of one value share."""
    if kind in _COMPACT_TYPES:
        return "".join(c for c in value if c.isalnum()).upper()
    return " ".join(value.split()).casefold().rstrip("/")


class Placeholders:
    """Numbers values per type in first-seen order, after any placeholder the texts already hold."""

    def __init__(self, texts: tuple[str, ...] | list[str] = ()):
        self._numbers: dict[tuple[str, str], int] = {}
        self._last: dict[str, int] = {}
        for text in texts:
            self.reserve(text)

    def reserve(self, text: str) -> None:
        """Never hand out a number a placeholder in `text` already uses (redacting redacted text again)."""
        for m in _NUMBERED.finditer(text):
            kind, n = m.group(1), int(m.group(2))
            self._last[kind] = max(self._last.get(kind, 0), n)

    def name(self, kind: str, value: str) -> str:
        key = (kind, normalise(kind, value))
        n = self._numbers.get(key)
        if n is None:
            n = self._last.get(kind, 0) + 1
            self._last[kind] = n
            self._numbers[key] = n
        return f"<{kind}_{n}>"


def is_placeholder(text: str) -> bool:
    return bool(PLACEHOLDER.fullmatch(text))

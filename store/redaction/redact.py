"""The pure redaction API every entry point calls: texts and conversations in, redacted copies and Findings out.

    messages, findings = redact_conversation(messages, RedactionSettings())
    text, findings = redact_text("write to jo@example.com", settings)        # -> "write to <EMAIL_1>"
    findings = preview(text_or_messages, settings)                             # spans to highlight

Roles, extra keys (weight, name) and message order are kept; only text content changes; a turn never
becomes empty (a placeholder replaces a value, never nothing). Redacting redacted text changes nothing.
"""

from __future__ import annotations

from typing import Any

from store.redaction.engine import Span, find_spans
from store.redaction.placeholders import Placeholders
from store.redaction.report import Finding
from store.redaction.settings import RedactionSettings

DEFAULT = RedactionSettings()


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _apply(text: str, spans: list[Span], names: Placeholders, message: int | None) -> tuple[str, list[Finding]]:
    out, findings, pos = [], [], 0
    for s in spans:
        placeholder = names.name(s.type, text[s.start:s.end])
        out += [text[pos:s.start], placeholder]
        findings.append(Finding(s.type, s.start, s.end, message, _line_of(text, s.start), placeholder))
        pos = s.end
    out.append(text[pos:])
    return "".join(out), findings


def redact_text(text: str, settings: RedactionSettings = DEFAULT, *,
                placeholders: Placeholders | None = None) -> tuple[str, list[Finding]]:
    """`text` with each value replaced by its placeholder. Pass one Placeholders to several calls to
    keep numbering consistent across them (a conversation, a rating and its corrected answer)."""
    if not isinstance(text, str) or not settings.enabled:
        return text, []
    names = placeholders if placeholders is not None else Placeholders([text])
    if placeholders is not None:
        names.reserve(text)
    return _apply(text, find_spans(text, settings), names, None)


# Texts of one conversation are analysed as one string (one Presidio call instead of one per turn, about
# twice as fast); three line breaks between them keep every pattern inside its own turn.
_JOIN = "\n\n\n"


def _pieces(messages: list) -> list[tuple[int, int | None, str]]:
    """(message index, block index or None, text) for every text in a conversation."""
    out = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            out.append((i, None, content))
        elif isinstance(content, list):  # Gradio-style blocks: [{"type": "text", "text": ...}]
            out += [(i, j, b["text"]) for j, b in enumerate(content)
                    if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return out


def _spans_per_piece(texts: list[str], settings: RedactionSettings) -> list[list[Span]]:
    """find_spans for each text, from one analysis of them joined; per text if a span would cross a join."""
    if len(texts) < 2:
        return [find_spans(t, settings) for t in texts]
    starts, pos = [], 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + len(_JOIN)
    out: list[list[Span]] = [[] for _ in texts]
    k = 0
    for s in find_spans(_JOIN.join(texts), settings):
        while k + 1 < len(texts) and s.start >= starts[k + 1]:
            k += 1
        if s.end > starts[k] + len(texts[k]):  # a custom pattern spanning turns: analyse each turn alone
            return [find_spans(t, settings) for t in texts]
        out[k].append(Span(s.type, s.start - starts[k], s.end - starts[k]))
    return out


def redact_conversation(messages: list[dict], settings: RedactionSettings = DEFAULT, *,
                        placeholders: Placeholders | None = None) -> tuple[list[dict], list[Finding]]:
    """A redacted copy of `messages` (each a dict with role and content) and what was replaced.
    Placeholders are numbered across the whole conversation; Findings carry the message index."""
    out = [dict(m) if isinstance(m, dict) else m for m in messages]
    if not settings.enabled:
        return out, []
    pieces = _pieces(messages)
    names = placeholders if placeholders is not None else Placeholders()
    for _, _, text in pieces:
        names.reserve(text)
    findings: list[Finding] = []
    for (i, j, text), spans in zip(pieces, _spans_per_piece([p[2] for p in pieces], settings)):
        if not spans:
            continue
        redacted, found = _apply(text, spans, names, i)
        findings += found
        if j is None:
            out[i]["content"] = redacted
        else:
            blocks = out[i]["content"] = list(out[i]["content"])
            blocks[j] = {**blocks[j], "text": redacted}
    return out, findings


def redact_value(value: Any, settings: RedactionSettings, placeholders: Placeholders) -> tuple[Any, list[Finding]]:
    """Redact every string inside a JSON-like value (metadata: subject lines, tags) with shared numbering."""
    if isinstance(value, str):
        return redact_text(value, settings, placeholders=placeholders)
    if isinstance(value, list):
        items, found = [], []
        for v in value:
            r, f = redact_value(v, settings, placeholders)
            items.append(r)
            found += f
        return items, found
    if isinstance(value, dict):
        out, found = {}, []
        for k, v in value.items():
            out[k], f = redact_value(v, settings, placeholders)
            found += f
        return out, found
    return value, []


def preview(text_or_conversation: str | list[dict], settings: RedactionSettings = DEFAULT) -> list[Finding]:
    """What redaction would replace, as Findings with offsets into the original text(s) and the
    placeholder each would become; nothing is changed. For a conversation, `message` says which turn."""
    if isinstance(text_or_conversation, str):
        return redact_text(text_or_conversation, settings)[1]
    return redact_conversation(text_or_conversation, settings)[1]


def highlight_segments(text: str, findings: list[Finding]) -> list[tuple[str, str | None]]:
    """[(piece, type or None), ...] covering `text`, for gr.HighlightedText. Findings of one text only."""
    out, pos = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start > pos:
            out.append((text[pos:f.start], None))
        out.append((text[f.start:f.end], f.type))
        pos = f.end
    if pos < len(text):
        out.append((text[pos:], None))
    return out

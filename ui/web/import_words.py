"""The Data tab's words for what an upload holds: the detected format as a person says it, the counts, the
duplicates, and the one thing to do when a file's format is not recognised.

The importers (training.importers) say what they found in their own terms ("csv", "header has conversation
columns (one message per row: speaker='Author', ...)"); this door words it for the person uploading and
keeps the importer's own sentence as details on demand.

    .venv/bin/python -m pytest tests/test_web_import_words.py -q
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from training.importers.model import messages_digest

FORMAT_WORDS = {
    "openai": "OpenAI chat format (JSONL, one conversation per line)",
    "sharegpt": "ShareGPT conversations",
    "alpaca": "Alpaca instruction and answer records",
    "zendesk": "Zendesk tickets export",
    "intercom": "Intercom conversations export",
    "transcript": "plain-text transcripts with speaker labels",
    "replies": "one message per row, linked by the message each one replies to",
    "mapped": "JSON records, mapped with your JSON mapping",
}
COLUMN_WORDS = {"conversation": "conversation id", "order": "time", "speaker": "speaker", "text": "text",
                "question": "question", "answer": "answer", "system": "system prompt", "id": "message id",
                "reply_to": "replies-to id", "inbound": "customer/agent side", "author": "author"}
MAX_DUPLICATES_LISTED = 5


def _esc(text: str) -> str:
    return html.escape(str(text), quote=False)


def format_words(fmt: str, reason: str) -> str:
    """'CSV, one message per row; conversation id, time, speaker and text columns found' for the headline."""
    if fmt == "csv":
        shape = ("one message per row" if "one message per row" in reason else
                 "one question and answer per row" if "question/answer" in reason else "conversation rows")
        found = [COLUMN_WORDS.get(k, k) for k in re.findall(r"(\w+)='", reason)]
        order = ["conversation id", "time", "speaker", "text", "question", "answer", "system prompt"]
        found = sorted(dict.fromkeys(found), key=lambda w: order.index(w) if w in order else len(order))
        cols = (", ".join(found[:-1]) + " and " + found[-1]) if len(found) > 1 else "".join(found)
        return f"CSV, {shape}" + (f"; {cols} columns found" if cols else "")
    if fmt == "replies":
        return "CSV/JSON export with " + FORMAT_WORDS["replies"]
    words = FORMAT_WORDS.get(fmt, fmt)
    return words[:1].upper() + words[1:]


@dataclass
class FileCount:
    """What reading a whole file found before importing it."""

    conversations: int = 0
    """Conversations in the file, repeats included."""
    rejected: int = 0
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    """(where the repeat is, where the first copy is), in file order; the first MAX_DUPLICATES_LISTED."""
    duplicate_count: int = 0
    complete: bool = True
    """False when counting stopped at the preview's limit."""
    first_seen: dict[bytes, str] = field(default_factory=dict, repr=False)
    """messages_digest -> location of each conversation kept, to name the first copy of a repeat."""

    def add(self, location: str, messages: list[dict]) -> None:
        """A conversation the import stream yielded (the importer drops repeats: see `add_repeats`)."""
        self.first_seen.setdefault(messages_digest(messages), location)
        self.conversations += 1

    def add_repeats(self, count: int, repeats: list[tuple[str, bytes]]) -> None:
        """The stream's dropped repeats: their `count`, and the first ones as (location, key)
        (training.importers.ImportStream.repeats)."""
        self.conversations += count
        self.duplicate_count += count
        self.duplicates += [(where, self.first_seen.get(key, "an earlier record"))
                            for where, key in repeats[:MAX_DUPLICATES_LISTED - len(self.duplicates)]]


def count_words(c: FileCount) -> str:
    """'12 conversations (2 duplicates: lines 9-10 repeat lines 1-2; ...), 1 record rejected'."""
    at_least = "" if c.complete else "at least "
    parts = [f"{at_least}{c.conversations:,} conversation{'s' if c.conversations != 1 else ''}"]
    if c.duplicate_count:
        shown = "; ".join(f"{_esc(dup)} repeats {_esc(first)}" for dup, first in c.duplicates[:MAX_DUPLICATES_LISTED])
        n = c.duplicate_count
        more = f"; and {n - len(c.duplicates[:MAX_DUPLICATES_LISTED]):,} more" if n > MAX_DUPLICATES_LISTED else ""
        parts[0] += f" ({n} duplicate{'s' if n != 1 else ''}, imported once: {shown}{more})"
    if c.rejected:
        parts.append(f"{c.rejected:,} record{'s' if c.rejected != 1 else ''} that cannot be imported (listed after "
                     "the import)")
    return ", ".join(parts)


def detected_line(name: str, fmt: str, reason: str, encoding: str, counts: FileCount) -> str:
    """One file's line under "Detected": person's words first, the importer's own sentence on demand."""
    return (f"- **{_esc(name)}**: {_esc(format_words(fmt, reason))} · {count_words(counts)}"
            f"<details><summary>details</summary>{_esc(fmt)}: {_esc(reason)}; encoding {_esc(encoding)}</details>")


def unknown_format_line(name: str, tried: str) -> str:
    """The refusal for a file whose format was not recognised: once, in this app's words, with the next step."""
    return (f"- **{_esc(name)}**: its format was not recognised, so it cannot be read yet. Open “Import "
            "options” and pick its Format (a CSV: name its columns; a transcript: its speaker labels); the preview "
            f"updates.<details><summary>what was tried</summary>{_esc(tried)}</details>")


def without_name(message: str, name: str) -> str:
    """An importer message without its leading 'file name: ' (the line already names the file)."""
    return message[len(name) + 2:] if message.startswith(f"{name}: ") else message

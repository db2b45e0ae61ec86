"""Plain-text transcripts -> records. Pure, streamed line by line.

    Customer: My parcel is three days late.
    Agent: I'm sorry! The carrier shows a delay at the depot.
    It should arrive tomorrow.            <- no label: continues the previous turn

A turn starts with a speaker label and a colon. Labels (case-insensitive): Customer/User/Client ->
user, Agent/Support/Assistant/Bot -> assistant, System -> system, plus the role map and
transcript_labels. A label may follow a timestamp ("[10:02] Agent:", "10:02 Agent:") and carry a
name in parentheses ("Agent (Maria):"). A line that starts with an unknown name and a colon is text.
The colon may be followed directly by the text ("Agent:Hello").

How conversations are separated (the rule for blank lines):
  - without a separator, one or more blank lines end a conversation, so a turn cannot contain a
    blank line;
  - with a separator (transcript_separator, e.g. "---" or "=== ticket"), a line starting with it
    ends a conversation and blank lines are paragraph breaks inside the current turn; the rest of
    the marker line ("=== ticket 4521" -> "4521") becomes the conversation's external id.
The first non-blank line of a conversation must start with a label, else the conversation is rejected
with its line number. Locations are "lines A-B" (file line numbers).
Tested in tests/test_importers_transcript.py.
"""

from __future__ import annotations

import re
from typing import Iterator

from training.importers.decode import TextSource, as_stream
from training.importers.model import ImportOptions, Record, Reject
from training.importers.speakers import TRANSCRIPT_LABELS, role_of, speaker_table

_LABEL = re.compile(
    r"^\s*(?:[\[(][^\])]{1,30}[\])]\s*|\d{1,2}:\d{2}(?::\d{2})?\s*(?:[AaPp][Mm])?\s*[-–]?\s*)?"  # timestamp
    r"(?P<label>[^\W\d_][\w .'&-]{0,40}?)\s*(?:\([^)]{0,40}\))?\s*:\s*(?P<rest>.*)$"
)


def label_table(options: ImportOptions) -> dict[str, str]:
    return speaker_table(TRANSCRIPT_LABELS, options.role_map, options.transcript_labels)


def split_label(line: str, labels: dict[str, str]) -> tuple[str, str, str] | None:
    """'Agent (Maria): Hello' -> ('assistant', 'Agent', 'Hello'); None when the line has no known label."""
    m = _LABEL.match(line)
    if not m:
        return None
    role = role_of(m.group("label"), labels)
    return (role, m.group("label").strip(), m.group("rest")) if role else None


def _unlabelled(line_no: int, text: str) -> str:
    shown = text.strip()
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    m = _LABEL.match(text)
    hint = (f"; {m.group('label').strip()!r} is not a known label: add it as a transcript label, e.g. "
            f"{m.group('label').strip()}=user") if m else ""
    return (f"line {line_no}: a conversation must start with a speaker label such as 'Customer:' or 'Agent:', "
            f"got {shown!r}{hint}")


def _convert(block: list[tuple[int, str]], labels: dict[str, str], external_id: str | None) -> Record | Reject | None:
    """The lines of one conversation -> a Record, a Reject, or None when they are all blank."""
    while block and not block[-1][1].strip():
        block.pop()
    start = next((k for k, (_, text) in enumerate(block) if text.strip()), None)
    if start is None:
        return None
    block = block[start:]
    location = f"lines {block[0][0]}-{block[-1][0]}" if len(block) > 1 else f"line {block[0][0]}"
    messages: list[dict] = []
    lines: list[str] = []
    for line_no, text in block:
        found = split_label(text, labels)
        if found:
            if messages:
                messages[-1]["content"] = "\n".join(lines)
            role, _label, rest = found
            messages.append({"role": role, "content": "", "_at": f"line {line_no}"})
            lines = [rest]
        elif not messages:
            return Reject(location, _unlabelled(line_no, text))
        else:
            lines.append(text.rstrip())
    messages[-1]["content"] = "\n".join(lines)
    return Record(messages, location, external_id, {})


def parse_transcript(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from transcript text, one per conversation (see the module docstring)."""
    options = options or ImportOptions()
    labels = label_table(options)
    separator = options.transcript_separator.strip() if options.transcript_separator else None
    block: list[tuple[int, str]] = []
    external_id = None
    for line_no, line in enumerate(as_stream(source), 1):
        text = line.rstrip("\n")
        stripped = text.strip()
        if separator is not None and stripped.startswith(separator):
            if (rec := _convert(block, labels, external_id)) is not None:
                yield rec
            block = []
            external_id = stripped[len(separator):].strip(" \t#:=-") or None
        elif separator is None and not stripped:
            if (rec := _convert(block, labels, external_id)) is not None:
                yield rec
            block = []
        else:
            block.append((line_no, text))
    if (rec := _convert(block, labels, external_id)) is not None:
        yield rec

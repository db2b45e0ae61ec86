"""open_import: a file -> a lazy stream of Conversation | Reject | ImportWarning. The IO layer of the importers.

Steps: check the options; read the first bytes and pick the encoding (decode.py); detect the format
(detect.py) or, when one is given, check that the first records are that format (a clear
ImportFileError if they all fail and the text looks like another format); then, while iterating:
decode -> parse (one module per format) -> validate (validate.py) -> redact personal data
(privacy.py, on unless RedactionSettings.off() is passed) -> drop in-file duplicates.
Each pass over the stream re-opens the file, so detection never eats what parsing needs.
Only ImportFileError ever escapes, and its message starts with the file's name.
Tested in tests/test_importers_robustness.py and tests/test_importers_formats.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterable, Iterator

from store.redaction import Finding, RedactionReport, RedactionSettings
from training.importers.alpaca import parse_alpaca
from training.importers.csv_ import parse_csv, read_plan
from training.importers.decode import DecodedFile, TextSource, read_head, sniff_encoding
from training.importers.detect import detect_format, guess_format
from training.importers.intercom import parse_intercom
from training.importers.mapped import parse_mapped
from training.importers.model import (FORMAT_TITLES, Conversation, ImportFileError, ImportOptions, ImportWarning,
                                      Record, Reject, messages_digest)
from training.importers.openai import parse_openai
from training.importers.privacy import redact_conversation_item, redact_notice
from training.importers.replies import parse_replies
from training.importers.sharegpt import parse_sharegpt
from training.importers.transcript import parse_transcript
from training.importers.validate import InvalidConversation, validate_messages
from training.importers.zendesk import parse_zendesk

Parser = Callable[[TextSource, ImportOptions], Iterator["Record | Reject"]]
PARSERS: dict[str, Parser] = {
    "openai": parse_openai, "sharegpt": parse_sharegpt, "alpaca": parse_alpaca, "csv": parse_csv,
    "transcript": parse_transcript, "zendesk": parse_zendesk, "intercom": parse_intercom,
    "replies": parse_replies, "mapped": parse_mapped,
}
# How many first records must all fail before a claimed format is called wrong.
PROBE_RECORDS = 20
# In-file repeats an ImportStream keeps with their place (all are counted): enough for a preview to name them.
REPEATS_KEPT = 100

Item = Conversation | Reject | ImportWarning


def accept(record: Record, options: ImportOptions) -> list[Item]:
    """Validate one parsed record: [Conversation, *its warnings] or [Reject]."""
    try:
        messages, warnings = validate_messages(record.messages, options)
    except InvalidConversation as exc:
        return [Reject(record.location, str(exc))]
    conv = Conversation(messages, record.location, record.external_id, record.meta)
    return [conv, *(ImportWarning(record.location, w) for w in warnings)]


def finish(records: Iterable[Record | Reject], options: ImportOptions,
           on_duplicate: Callable[[str, bytes], None] = lambda location, key: None, *,
           redaction: RedactionSettings | None = None,
           on_redacted: Callable[[list[Finding], str], None] = lambda findings, where: None) -> Iterator[Item]:
    """Parsed records -> validated, redacted items, dropping conversations whose messages were already seen.

    Redaction comes before the duplicate check, so the dedup keys (and stored hashes) are of redacted text.
    `on_duplicate` gets each dropped repeat's location and key (messages_digest of the first copy's messages)."""
    settings = redaction if redaction is not None else RedactionSettings()
    seen: set[bytes] = set()
    for rec in records:
        if isinstance(rec, Reject):
            yield redact_notice(rec, settings)
            continue
        items = [redact_notice(i, settings) if isinstance(i, (Reject, ImportWarning)) else i
                 for i in accept(rec, options)]
        if isinstance(items[0], Conversation):
            items[0], findings = redact_conversation_item(items[0], settings)
            on_redacted(findings, items[0].location)
            key = messages_digest(items[0].messages)  # 32 bytes a conversation: the set stays small
            if key in seen:
                on_duplicate(items[0].location, key)
                continue
            seen.add(key)
        yield from items


class ImportStream:
    """One import: what was detected, and the items, read lazily from the file when iterated."""

    def __init__(self, path: Path, options: ImportOptions, format: str, format_reason: str, encoding: str,
                 redaction: RedactionSettings | None = None):
        self.path = path
        self.options = options
        self.redaction = redaction if redaction is not None else RedactionSettings()
        # Counts per type with where they were (bounded), never the values; reset by each pass.
        self.redaction_report = RedactionReport(enabled=self.redaction.enabled)
        self.format = format
        self.format_reason = format_reason
        self.encoding = encoding
        self.duplicates = 0
        self.repeats: list[tuple[str, bytes]] = []
        """The first REPEATS_KEPT dropped repeats: (location, messages_digest of the copy kept); reset by each pass."""
        self.size = path.stat().st_size
        self.bytes_read = 0  # how far iteration has read the file (for progress bars)

    def _count_duplicate(self, location: str, key: bytes) -> None:
        self.duplicates += 1
        if len(self.repeats) < REPEATS_KEPT:
            self.repeats.append((location, key))

    def __iter__(self) -> Iterator[Item]:
        self.duplicates, self.repeats = 0, []
        self.redaction_report = RedactionReport(enabled=self.redaction.enabled)
        last = "the start of the file"
        with _named(self.path), DecodedFile(self.path, self.encoding) as f:
            records = PARSERS[self.format](f.stream, self.options)
            try:
                for item in finish(records, self.options, self._count_duplicate, redaction=self.redaction,
                                   on_redacted=self.redaction_report.add):
                    self.bytes_read, self.encoding, last = f.bytes_read, f.encoding, item.location
                    yield item
            except (ImportFileError, OSError):
                raise
            except Exception as exc:  # a bug of ours: still say where, and never crash the caller differently
                raise ImportFileError(f"internal error after {last} ({type(exc).__name__}: {exc}); "
                                      "please report it with the file") from exc
            self.bytes_read, self.encoding = f.bytes_read, f.encoding


class _named:
    """Prefix ImportFileError messages with the file name; turn OS errors into ImportFileError."""

    def __init__(self, path: Path):
        self.name = path.name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if isinstance(exc, ImportFileError) and not str(exc).startswith(f"{self.name}: "):
            raise type(exc)(f"{self.name}: {exc}", field=exc.field) from None  # keeps UnknownFormat
        if isinstance(exc, OSError):
            raise ImportFileError(f"{self.name}: cannot read the file ({exc.strerror or exc})") from None
        return False


def _probe(path: Path, encoding: str, fmt: str, options: ImportOptions) -> None:
    """Raise ImportFileError when the first records all fail as `fmt` and the text looks like another format."""
    problem = None
    try:
        with DecodedFile(path, encoding) as f:
            if fmt == "csv":
                read_plan(f.stream, options)
                return
            for rec in itertools.islice(PARSERS[fmt](f.stream, options), PROBE_RECORDS):
                item = accept(rec, options)[0] if isinstance(rec, Record) else rec
                if isinstance(item, Conversation):
                    return
                problem = problem or f"{item.location}: {item.reason}"
    except ImportFileError as exc:
        problem = str(exc)
    with DecodedFile(path, encoding) as f:
        guess = guess_format(f.stream, options)
    title = FORMAT_TITLES[fmt]
    if guess and guess[0] != fmt:
        other = guess[0]
        raise ImportFileError(f"this does not look like {title}: {problem or 'no records found'} "
                              f"(it looks like {FORMAT_TITLES[other]}: {guess[1]}; choose {other} or auto)", field="format")
    if problem is None:
        raise ImportFileError(f"no records found: the file holds nothing that reads as {title}")
    if fmt == "csv":
        raise ImportFileError(problem)


def open_import(path: Path, options: ImportOptions | None = None, *,
                redaction: RedactionSettings | None = None) -> ImportStream:
    """Open a conversation-log file for import; raises ImportFileError when it cannot be read at all.

    `redaction` None means the default (every type redacted); RedactionSettings.off() turns it off."""
    path = Path(path)
    options = options or ImportOptions()
    with _named(path):
        problems = options.problems()
        if problems:
            raise ImportFileError("; ".join(problems))
        head, whole = read_head(path)
        encoding = sniff_encoding(head, at_eof=whole)
        with DecodedFile(path, encoding) as f:
            start = f.stream.peek(4096)  # decodes the first chunk only
            if len(start) < 4096 and not start.strip():
                raise ImportFileError("the file holds only blank space: there is nothing to import")
        if options.format == "auto":
            with DecodedFile(path, encoding) as f:
                fmt, reason = detect_format(f.stream, options)
        else:
            fmt, reason = options.format, "given explicitly"
            _probe(path, encoding, fmt, options)
        return ImportStream(path, options, fmt, reason, encoding, redaction)

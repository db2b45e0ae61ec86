"""CSV/TSV conversation logs -> records. Pure apart from a private temporary SQLite database for grouping.

Two layouts, told apart by the header (or named with csv_columns):
  - long form, one row per message: conversation id, speaker, text and optionally an order column
    (a number or an ISO 8601 timestamp; naive timestamps count as UTC). Rows are grouped by
    conversation and sorted by order, ties and a missing order column keeping file order; rows
    without text (attachments, events) are skipped;
  - question/answer form, one single-turn conversation per row: question/answer, prompt/response,
    input/output ... with an optional system column.
Column names are matched case-insensitively, ignoring spaces and punctuation ("Ticket ID" ==
ticket_id); csv_columns names any column the detection cannot guess. The delimiter (comma,
semicolon, tab or pipe) is sniffed from the first lines with csv.Sniffer, checked against the header.
Locations are file line numbers, the header being line 1: "line 5", "lines 2-7", "lines 2-3, 9".

Grouping: a conversation's rows may be anywhere in the file, so long-form rows go into a temporary
SQLite table (store.scratch.ScratchSort: private, spilled to disk once it outgrows its cache, deleted
on close) and come back ordered by conversation (first appearance), order key, line. Memory stays
flat whatever the file size, except one id per conversation; the price is that the first long-form
conversation comes out only once the whole file is read. The question/answer form streams row by row.
Tested in tests/test_importers_csv.py.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from store.scratch import ScratchSort
from training.importers.decode import TextSource, TextStream, as_stream
from training.importers.model import ImportFileError, ImportOptions, Record, Reject
from training.importers.speakers import CSV_SPEAKERS, role_of, speaker_table, unknown_speaker

_CONVERSATION = ("conversation_id", "conversation", "conv_id", "ticket_id", "ticket", "thread_id", "thread",
                 "chat_id", "session_id", "dialog_id", "dialogue_id", "case_id")
CANDIDATES = {
    "conversation": _CONVERSATION,
    "order": ("turn", "turn_id", "turn_index", "turn_number", "order", "seq", "sequence", "position",
              "message_index", "index", "idx", "timestamp", "created_at", "created", "sent_at", "datetime",
              "time", "date", "ts"),
    "speaker": ("speaker", "role", "author", "author_type", "from", "sender", "speaker_role", "who", "party"),
    "text": ("text", "message", "content", "body", "utterance", "message_text", "comment", "value"),
    "question": ("question", "prompt", "input", "instruction", "query", "customer_message", "user_message"),
    "answer": ("answer", "response", "output", "completion", "reply", "agent_response", "assistant_response",
               "agent_message"),
    "system": ("system", "system_prompt"),
    "id": ("id", *_CONVERSATION),
}
_DELIMITERS = ",;\t|"
_BATCH = 2000
_MAX_RANGES = 6


@dataclass(frozen=True)
class Plan:
    """Which layout a CSV file has and which column index holds each field."""

    kind: str  # "long" or "qa"
    columns: dict[str, int]
    header: list[str]
    delimiter: str

    def name(self, key: str) -> str:
        return self.header[self.columns[key]]


def column_key(name: str) -> str:
    """'Ticket ID' -> 'ticket_id': how header names are compared."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def sniff_delimiter(sample: str) -> str:
    """The delimiter of CSV text from its first lines: csv.Sniffer's, if the header has it; else the
    candidate the header holds most of; else a comma."""
    lines = sample.split("\n", 21)
    # csv.Sniffer's regexes are quadratic on quote-heavy text: a few KB of the first lines suffice.
    head = "\n".join(lines[:20])[:4096]
    header = lines[0]
    try:
        found = csv.Sniffer().sniff(head, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        found = None
    if found and found in header:
        return found
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def plan_columns(header: list[str], delimiter: str, options: ImportOptions) -> Plan:
    """Find the columns for each field in the header; ImportFileError says what is missing and how to name it."""
    keys = [column_key(h) for h in header]
    shown = ", ".join(repr(h if len(h) <= 40 else h[:37] + "...") for h in header[:12])
    shown += ", ..." if len(header) > 12 else ""
    columns: dict[str, int] = {}
    for field, name in options.csv_columns.items():
        if column_key(name) not in keys:
            raise ImportFileError(f"CSV column {name!r} (given for {field!r}) is not in the header; "
                                  f"the columns are {shown}", field="csv_columns")
        columns[field] = keys.index(column_key(name))

    def find(field: str) -> int | None:
        if field in columns:
            return columns[field]
        used = set(columns.values())
        for candidate in CANDIDATES[field]:
            for i, key in enumerate(keys):
                if key == candidate and i not in used:
                    return i
        return None

    given = set(options.csv_columns)
    qa_given = bool(given & {"question", "answer"})
    long_given = bool(given & {"conversation", "order", "speaker", "text"})
    if qa_given and long_given:
        raise ImportFileError("CSV columns mix the long form (conversation/order/speaker/text) and the "
                              "question/answer form: name columns of one form only", field="csv_columns")
    long = {f: find(f) for f in ("speaker", "text", "conversation")}
    qa = {f: find(f) for f in ("question", "answer")}
    hint = "name the CSV columns: conversation, speaker and text, or question and answer"
    if not qa_given and (long_given or None not in long.values()):
        missing = [f for f, i in long.items() if i is None]
        if missing:
            raise ImportFileError(f"no {' or '.join(missing)} column found in the CSV header ({shown}); {hint}",
                                  field="csv_columns")
        columns.update(long)
        order = find("order")
        if order is not None:
            columns["order"] = order
        return Plan("long", columns, header, delimiter)
    if qa_given or None not in qa.values():
        missing = [f for f, i in qa.items() if i is None]
        if missing:
            raise ImportFileError(f"no {' or '.join(missing)} column found in the CSV header ({shown}); {hint}",
                                  field="csv_columns")
        columns.update(qa)
        for extra in ("system", "id"):
            if (i := find(extra)) is not None:
                columns[extra] = i
        return Plan("qa", columns, header, delimiter)
    if long["speaker"] is not None and long["text"] is not None:
        looked = ", ".join(CANDIDATES["conversation"][:6])
        raise ImportFileError(f"no conversation column found in the CSV header ({shown}): speaker and text columns "
                              f"are there, but not which conversation each row belongs to (looked for {looked}, "
                              f"...); {hint}", field="csv_columns")
    found = [f for f, i in {**long, **qa}.items() if i is not None]
    what = f" (found only {', '.join(found)})" if found else ""
    raise ImportFileError(f"could not find conversation columns in the CSV header ({shown}){what}: expected "
                          f"conversation id, speaker and text columns, or question and answer columns; {hint}",
                          field="csv_columns")


def read_plan(source: TextSource, options: ImportOptions) -> Plan:
    """Sniff the delimiter and plan the columns from the start of the text, without consuming it."""
    stream = as_stream(source)
    sample = stream.peek(65536)
    if not sample.strip():
        raise ImportFileError("the CSV file has no header row")
    delimiter = sniff_delimiter(sample.lstrip("\n"))
    try:
        header = next(csv.reader(io.StringIO(sample.lstrip("\n")), delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        raise ImportFileError(f"cannot read the CSV header: {exc}") from None
    return plan_columns(header, delimiter, options)


def order_key(value: str) -> tuple[float | None, str | None, str | None]:
    """An order cell -> (sort key, kind "number"/"timestamp", problem); a problem leaves key and kind None."""
    v = value.strip()
    if not v:
        return None, None, "is empty"
    try:
        number = float(v)
        if math.isfinite(number):
            return number, "number", None
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(v)
    except ValueError:
        return None, None, f"{v!r} is neither a number nor an ISO 8601 timestamp"
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp(), "timestamp", None


def line_ranges(spans: list[tuple[int, int]]) -> str:
    """[(2, 2), (3, 4), (9, 9)] -> 'lines 2-4, 9': where a group of rows lies in the file."""
    spans = sorted(spans)
    merged: list[list[int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    parts = [f"{a}-{b}" if b > a else f"{a}" for a, b in merged]
    if len(parts) == 1 and merged[0][0] == merged[0][1]:
        return f"line {parts[0]}"
    more = f", ... ({len(spans)} rows)" if len(parts) > _MAX_RANGES else ""
    return "lines " + ", ".join(parts[:_MAX_RANGES]) + more


def _rows(stream: TextStream, plan: Plan) -> Iterator[tuple[int, int, list[str]] | Reject]:
    """(first line, last line, cells) per data row after the header; blank rows skipped."""
    reader = csv.reader(stream, delimiter=plan.delimiter)
    last = 0
    header_seen = False
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            where = line_ranges([(last + 1, max(last + 1, reader.line_num))])
            hint = ": a field over 128 KB, or a quote that is never closed" if "field limit" in str(exc) else ""
            yield Reject(where, f"cannot read this CSV row ({exc}){hint}")
            last = reader.line_num
            continue
        first, last = last + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if not header_seen:
            header_seen = True
            continue
        yield first, last, row


def _cell(row: list[str], index: int | None) -> str:
    return row[index] if index is not None and index < len(row) else ""


def _qa(stream: TextStream, plan: Plan) -> Iterator[Record | Reject]:
    c = plan.columns
    for item in _rows(stream, plan):
        if isinstance(item, Reject):
            yield item
            continue
        first, last, row = item
        at = f"line {first}" if first == last else f"lines {first}-{last}"
        fields = [("system", "system"), ("user", "question"), ("assistant", "answer")]
        messages = [{"role": role, "content": _cell(row, c[key]), "_at": f"column {plan.name(key)!r}"}
                    for role, key in fields if key in c and (key != "system" or _cell(row, c[key]).strip())]
        yield Record(messages, at, _cell(row, c.get("id")).strip() or None, {})


def _long(stream: TextStream, plan: Plan, options: ImportOptions) -> Iterator[Record | Reject]:
    c = plan.columns
    speakers = speaker_table(CSV_SPEAKERS, options.role_map)
    ids: dict[str, int] = {}
    # Rows of one conversation can be anywhere in the file: sort them on disk, not in memory.
    with ScratchSort(8) as rows_by_conversation:
        batch = []
        for item in _rows(stream, plan):
            if isinstance(item, Reject):
                yield item
                continue
            first, last, row = item
            conv = _cell(row, c["conversation"]).strip()
            if not conv:
                yield Reject(f"line {first}", f"the conversation id (column {plan.name('conversation')!r}) is empty")
                continue
            if not _cell(row, c["text"]).strip():
                continue  # attachments and events without text are not turns
            rank = ids.setdefault(conv, len(ids))
            key, kind, problem = order_key(_cell(row, c["order"])) if "order" in c else (None, "file", None)
            batch.append((rank, key, kind, problem, first, last, _cell(row, c["speaker"]), _cell(row, c["text"])))
            if len(batch) >= _BATCH:
                rows_by_conversation.add(batch)
                batch.clear()
        rows_by_conversation.add(batch)
        names = {rank: conv for conv, rank in ids.items()}
        ids.clear()
        # (conversation, order key, line): conv, key, first
        for rank, rows in itertools.groupby(rows_by_conversation.ordered((0, 1, 4)), key=lambda r: r[0]):
            yield _group(names.pop(rank), list(rows), plan, speakers)


def _group(conv: str, rows: list[tuple], plan: Plan, speakers: dict[str, str]) -> Record | Reject:
    """One conversation's rows, sorted by order -> a Record or a Reject."""
    location = line_ranges([(r[4], r[5]) for r in rows])
    bad = next((r for r in rows if r[3]), None)
    if bad:
        return Reject(location, f"line {bad[4]}: the order value (column {plan.name('order')!r}) {bad[3]}")
    kinds = {r[2] for r in rows}
    if len(kinds) > 1:
        return Reject(location, f"the order column {plan.name('order')!r} mixes numbers and timestamps "
                                "within this conversation")
    messages = []
    for i, (_rank, _key, _kind, _problem, first, _last, speaker, body) in enumerate(rows, 1):
        role = role_of(speaker, speakers)
        if role is None:
            return Reject(location, unknown_speaker(i, speaker.strip(), f"line {first}"))
        messages.append({"role": role, "content": body, "_at": f"line {first}"})
    return Record(messages, location, conv, {})


def parse_csv(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from CSV text with a header row; ImportFileError when the header does not fit."""
    options = options or ImportOptions()
    stream = as_stream(source)
    plan = read_plan(stream, options)
    yield from (_qa(stream, plan) if plan.kind == "qa" else _long(stream, plan, options))

"""Which format a file is in, from its first record or lines, and why. Pure; reads only the start of the text.

JSON (the text starts with '{' or '['): the first record decides, by its keys: "messages" with
role/content -> openai (from/value or ShareGPT speaker names -> sharegpt); "conversations" with
from/value -> sharegpt; instruction+output -> alpaca; a ticket with "comments" (or a top-level
"tickets" list) -> zendesk; "conversation_parts"/"source" (or a top-level "conversations" list of
those) -> intercom. Otherwise: a header with conversation columns -> csv; a first line starting with
a speaker label -> transcript. Nothing fits -> ImportFileError listing what was tried.
Tested in tests/test_importers_detect.py.
"""

from __future__ import annotations

from training.importers.csv_ import read_plan
from training.importers.decode import TextSource, as_stream
from training.importers.jsonrecords import json_type, sample_json
from training.importers.model import FORMATS, ROLES, ImportFileError, ImportOptions, UnknownFormat
from training.importers.replies import csv_plan as reply_plan, plan_fields as reply_fields
from training.importers.speakers import SHAREGPT_SPEAKERS, normalize
from training.importers.transcript import label_table, split_label

Found = tuple[str, str]


def _first_dict(items: object) -> dict | None:
    if isinstance(items, list):
        return next((v for v in items if isinstance(v, dict)), None)
    return None


def classify_record(rec: dict) -> Found | None:
    """(format, reason) for one JSON record by its keys, or None."""
    messages = rec.get("messages")
    if isinstance(messages, list):
        first = _first_dict(messages)
        if first is not None and ("from" in first or "value" in first):
            return "sharegpt", "first record has 'messages' with 'from'/'value'"
        role = first.get("role") if first else None
        if isinstance(role, str) and role not in ROLES and normalize(role) in SHAREGPT_SPEAKERS:
            return "sharegpt", f"first record has 'messages' with the ShareGPT speaker {role!r}"
        return "openai", "first record has 'messages' with 'role'/'content'"
    turns = rec.get("conversations")
    first = _first_dict(turns)
    if first is not None and ("from" in first or "value" in first or "role" in first):
        return "sharegpt", "first record has 'conversations' with 'from'/'value'"
    if "instruction" in rec and "output" in rec:
        return "alpaca", "first record has 'instruction' and 'output'"
    if "comments" in rec and any(k in rec for k in ("requester_id", "subject", "via", "status", "ticket_id")):
        return "zendesk", "first record is a ticket with 'comments'"
    if "conversation_parts" in rec or (rec.get("type") == "conversation" and "source" in rec):
        return "intercom", "first record is a conversation with 'source'/'conversation_parts'"
    try:
        plan = reply_fields([str(k) for k in rec], ImportOptions(), what="key", require_side=False)
        return "replies", f"first record is one message with the id it replies to ({plan.describe()})"
    except ImportFileError:
        return None


def classify_json(value: object) -> Found | None:
    """(format, reason) for the first JSON value of a file (lists cut short), or None."""
    if isinstance(value, list):
        first = _first_dict(value)
        found = classify_record(first) if first is not None else None
        return (found[0], f"{found[1]} (in a JSON array)") if found else None
    if not isinstance(value, dict):
        return None
    for key, fmt in (("tickets", "zendesk"), ("results", "zendesk"), ("conversations", "intercom")):
        first = _first_dict(value.get(key))
        if first is not None:
            found = classify_record(first)
            if found and found[0] == fmt:
                return fmt, f"top-level '{key}' list: {found[1]}"
    if value.get("type") == "conversation.list" and isinstance(value.get("conversations"), list):
        return "intercom", "top-level 'conversations' list of an Intercom export"
    return classify_record(value)


def _describe_json(value: object) -> str:
    if isinstance(value, list):
        first = _first_dict(value)
        if first is None:
            return f"a JSON array of {json_type(value[0]) if value else 'nothing'}"
        value = first
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:10]) or "no keys"
        return f"the first record has {keys}"
    return "the text starts like JSON but is not readable JSON" if value is None else f"it is {json_type(value)}"


def _first_line(text: str, options: ImportOptions) -> tuple[int, str] | None:
    separator = options.transcript_separator.strip() if options.transcript_separator else None
    for n, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if stripped and not (separator and stripped.startswith(separator)):
            return n, line
    return None


def _detect(source: TextSource, options: ImportOptions) -> tuple[Found | None, list[str]]:
    stream = as_stream(source)
    sample = stream.peek(65536)
    start = sample.lstrip()[:1]
    json_formats = ", ".join(f for f in FORMATS if f not in ("csv", "transcript", "mapped"))
    if start in ("{", "[") and options.json_map.get("turns"):
        return ("mapped", "a JSON mapping is given"), []
    if start in ("{", "["):
        value = sample_json(stream)
        found = classify_json(value)
        if found:
            return found, []
        tried = [f"{json_formats}: {_describe_json(value)}",
                 "mapped: no JSON mapping is given (a mapping says where the turns, speakers and texts are)"]
    else:
        tried = [f"{json_formats}: the text does not start with '{{' or '[', so it is not JSON"]
    # Text formats too, even after '[': a transcript line may start "[09:58] Customer:".
    try:  # before csv: a header with a reply-to column is a reply chain even when it has a thread column
        plan, _ = reply_plan(sample, options)
        return ("replies", f"header has reply-linked columns ({plan.describe()})"), []
    except ImportFileError as exc:
        if exc.field == "agent_accounts":
            tried.append(f"replies: {exc}")
    try:
        plan = read_plan(sample, options)
        layout = "one message per row" if plan.kind == "long" else "question/answer rows"
        columns = ", ".join(f"{k}={plan.name(k)!r}" for k in plan.columns)
        delimiter = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}[plan.delimiter]
        return ("csv", f"header has conversation columns ({layout}: {columns}; {delimiter}-separated)"), []
    except ImportFileError as exc:
        tried.append(f"csv: {exc}")
    first = _first_line(sample, options)
    if first:
        n, line = first
        found = split_label(line, label_table(options))
        if found:
            return ("transcript", f"line {n} starts with the speaker label '{found[1]}:'"), []
        shown = line.strip()[:50]
        tried.append(f"transcript: line {n} does not start with a speaker label such as 'Customer:' ({shown!r})")
    return None, tried


def guess_format(source: TextSource, options: ImportOptions | None = None) -> Found | None:
    """(format, reason) when the start of the text looks like one format, else None."""
    return _detect(source, options or ImportOptions())[0]


def detect_format(source: TextSource, options: ImportOptions | None = None) -> Found:
    """(format, reason) from the start of the text; ImportFileError saying what was tried when nothing fits."""
    found, tried = _detect(source, options or ImportOptions())
    if found:
        return found
    raise UnknownFormat("could not tell which format this is. Tried " + "; ".join(tried)
                          + ". Choose the format, or name the CSV columns or transcript labels", field="format")

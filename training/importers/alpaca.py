"""Alpaca JSON or JSONL -> records: {"instruction", "input"?, "output", "system"?, "history"?}. Pure.

The user turn is the instruction, then a blank line and the input when there is one; the output is
the assistant turn; "system" becomes the system message; "history" (LLaMA-Factory's list of
[question, answer] pairs before this one) becomes earlier turns.
Tested in tests/test_importers_formats.py.
"""

from __future__ import annotations

from typing import Iterator

from training.importers.decode import TextSource
from training.importers.fields import convert_records, id_of, pick_meta, require_object
from training.importers.jsonrecords import iter_json_records, json_type
from training.importers.model import ImportOptions, Record, Reject

_META_KEYS = ("source", "category", "tags")


def convert(location: str, obj: object) -> Record | Reject:
    """One Alpaca record -> a Record (validated later) or a Reject."""
    bad = require_object(location, obj, "an instruction record")
    if bad:
        return bad
    for field in ("instruction", "output"):
        if field not in obj:
            return Reject(location, f"field {field!r} is missing (Alpaca records have 'instruction', "
                                    "optional 'input', and 'output')")
    instruction, extra = obj["instruction"], obj.get("input")
    if not isinstance(instruction, str):
        return Reject(location, f"field 'instruction' must be text, got {json_type(instruction)}")
    if extra is not None and not isinstance(extra, str):
        return Reject(location, f"field 'input' must be text, got {json_type(extra)}")
    messages = []
    system = obj.get("system")
    if system is not None and not (isinstance(system, str) and not system.strip()):
        messages.append({"role": "system", "content": system, "_at": "field 'system'"})
    history = obj.get("history") or []
    if not isinstance(history, list):
        return Reject(location, f"field 'history' must be a list of [question, answer] pairs, got {json_type(history)}")
    for k, pair in enumerate(history, 1):
        if not (isinstance(pair, list) and len(pair) == 2):
            return Reject(location, f"history item {k}: expected a [question, answer] pair")
        messages.append({"role": "user", "content": pair[0], "_at": f"history item {k}"})
        messages.append({"role": "assistant", "content": pair[1], "_at": f"history item {k}"})
    user = instruction.strip() + (f"\n\n{extra.strip()}" if extra and extra.strip() else "")
    messages.append({"role": "user", "content": user, "_at": "field 'instruction'"})
    messages.append({"role": "assistant", "content": obj["output"], "_at": "field 'output'"})
    return Record(messages, location, id_of(obj.get("id")), pick_meta(obj, _META_KEYS))


def parse_alpaca(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from Alpaca text: a JSON array ("record N") or JSONL ("line N")."""
    yield from convert_records(iter_json_records(source), convert)

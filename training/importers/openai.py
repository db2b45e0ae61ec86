"""OpenAI fine-tuning chat JSONL -> records: one {"messages": [...]} per line. Pure.

Per-message `weight` (0/1, assistant turns only) is kept; `tools`/`functions` definitions at the top
level are ignored; tool turns (role tool/function, assistant tool_calls) are rejected by validation
with a clear reason; content given as a list of text parts is joined; "developer" (OpenAI's newer
name for the system role) is read as system. A JSON array of such records is accepted too.
Tested in tests/test_importers_formats.py.
"""

from __future__ import annotations

from typing import Iterator

from training.importers.decode import TextSource
from training.importers.fields import convert_records, id_of, meta_value, require_object
from training.importers.jsonrecords import iter_json_records, json_type
from training.importers.model import ImportOptions, Record, Reject

_KEEP = ("role", "content", "weight", "tool_calls", "function_call")


def _content(i: int, content: object) -> object:
    """Content as text: a list of {"type": "text", "text": ...} parts is joined; other parts raise."""
    if not isinstance(content, list):
        return content
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else json_type(part)
        if kind != "text" or not isinstance(part.get("text"), str):
            raise _Unsupported(f"message {i}: content part of type {kind!r} is not supported (only text parts)")
        texts.append(part["text"])
    return "\n".join(texts)


class _Unsupported(Exception):
    pass


def convert(location: str, obj: object) -> Record | Reject:
    """One OpenAI chat record -> a Record (validated later) or a Reject."""
    bad = require_object(location, obj, "a chat record")
    if bad:
        return bad
    if "messages" not in obj:
        keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
        return Reject(location, f"field 'messages' is missing (keys: {keys}); OpenAI chat records look like "
                                '{"messages": [{"role": ..., "content": ...}]}')
    messages = obj["messages"]
    if not isinstance(messages, list):
        return Reject(location, f"field 'messages' must be a list, got {json_type(messages)}")
    out = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            out.append(m)  # validation names it
            continue
        kept = {k: m[k] for k in _KEEP if k in m}
        if kept.get("role") == "developer":
            kept["role"] = "system"
        try:
            if "content" in kept:
                kept["content"] = _content(i, kept["content"])
        except _Unsupported as exc:
            return Reject(location, str(exc))
        out.append(kept)
    meta = obj.get("metadata")
    meta = {k: v for k, v in meta.items() if meta_value(v) is not None} if isinstance(meta, dict) else {}
    return Record(out, location, id_of(obj.get("id")), meta)


def parse_openai(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from OpenAI chat JSONL text, one per line, located "line N"."""
    yield from convert_records(iter_json_records(source), convert)

"""Intercom conversation export -> records: {"conversations": [...]} (API pages), a JSON array, or
JSONL of conversations. Pure; streamed with ijson.

The opening message is "source"; the rest are "conversation_parts" (the API's
{"conversation_parts": [...]} object, or a plain list). Only parts of part_type "comment" are turns:
notes, assignments, open/close and snooze events are skipped. Author type user/lead/contact is the
user; admin/bot/team the assistant. Bodies are HTML, stripped to text with paragraph breaks kept;
parts without text (attachments only) are skipped. external_id is the conversation id; meta keeps
title, state, created_at, tags (names) and the channel (source.delivered_as or source.type).
Tested in tests/test_importers_formats.py.
"""

from __future__ import annotations

from typing import Iterator

from training.importers.decode import TextSource
from training.importers.fields import convert_records, id_of, pick_meta, require_object
from training.importers.html_text import html_to_text
from training.importers.jsonrecords import iter_json_records, json_type
from training.importers.model import ImportOptions, Record, Reject

WRAPPERS = ("conversations",)
_ROLES = {"user": "user", "lead": "user", "contact": "user", "admin": "assistant", "bot": "assistant",
          "team": "assistant"}
_META_KEYS = ("title", "state", "created_at", "priority")


def _turn(part: dict, where: str) -> dict | str | None:
    """A part -> a message, None when it has no text, or a reject reason for an unknown author."""
    body = part.get("body")
    text = html_to_text(body) if isinstance(body, str) else ""
    if not text:
        return None
    author = part.get("author")
    kind = author.get("type") if isinstance(author, dict) else None
    role = _ROLES.get(kind) if isinstance(kind, str) else None
    if role is None:
        return (f"{where}: author type {kind!r} is not one of user/lead/contact (the customer) or "
                "admin/bot/team (the assistant)")
    return {"role": role, "content": text, "_at": where}


def convert(location: str, conv: object) -> Record | Reject:
    """One Intercom conversation -> a Record (validated later) or a Reject."""
    bad = require_object(location, conv, "a conversation")
    if bad:
        return bad
    conv_id = id_of(conv.get("id"))
    parts = conv.get("conversation_parts")
    if isinstance(parts, dict):
        parts = parts.get("conversation_parts")
    if parts is None and "source" not in conv:
        return Reject(location, "neither 'source' nor 'conversation_parts' is present: this is not an "
                                "Intercom conversation")
    if not isinstance(parts or [], list):
        return Reject(location, f"field 'conversation_parts' must be a list, got {json_type(parts)}")
    messages = []
    source = conv.get("source")
    if isinstance(source, dict):
        turn = _turn(source, "source")
        if isinstance(turn, str):
            return Reject(location, turn)
        if turn:
            messages.append(turn)
    for i, part in enumerate(parts or [], 1):
        if not isinstance(part, dict):
            return Reject(location, f"conversation part {i}: expected an object, got {json_type(part)}")
        if part.get("part_type") != "comment":
            continue
        turn = _turn(part, f"conversation part {i}")
        if isinstance(turn, str):
            return Reject(location, turn)
        if turn:
            messages.append(turn)
    if not messages:
        return Reject(location, "the conversation has no message with text (only notes or events?)")
    meta = pick_meta(conv, _META_KEYS)
    tags = conv.get("tags")
    tags = tags.get("tags") if isinstance(tags, dict) else tags
    if isinstance(tags, list):
        names = [t.get("name") if isinstance(t, dict) else t for t in tags]
        if names := [n for n in names if isinstance(n, str)]:
            meta["tags"] = names
    if isinstance(source, dict):
        channel = source.get("delivered_as") or source.get("type")
        if isinstance(channel, str):
            meta["channel"] = channel
        if isinstance(source.get("subject"), str) and source["subject"].strip():
            meta["subject"] = html_to_text(source["subject"])
    return Record(messages, location, conv_id, meta)


def parse_intercom(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from an Intercom conversation export, one per conversation."""
    yield from convert_records(iter_json_records(source, WRAPPERS), convert)

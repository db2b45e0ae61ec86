"""Zendesk ticket export -> records: {"tickets": [...]} (API pages), a JSON array, or JSONL of tickets,
each ticket with its "comments" list. Pure; streamed with ijson.

Only public comments are kept (a comment without "public" counts as public); the requester
(ticket requester_id == comment author_id) is the user, every other author (agents) the assistant;
without a requester_id, the author of the first public comment is taken as the requester. The text is
plain_body, else body, else html_body stripped of HTML; comments with no text (attachments only)
are skipped. external_id is the ticket id; meta keeps subject, tags, status, priority, type,
created_at and the channel (via.channel).
Tested in tests/test_importers_formats.py.
"""

from __future__ import annotations

from typing import Iterator

from training.importers.decode import TextSource
from training.importers.fields import convert_records, id_of, pick_meta, require_object
from training.importers.html_text import html_to_text
from training.importers.jsonrecords import iter_json_records, json_type
from training.importers.model import ImportOptions, Record, Reject

WRAPPERS = ("tickets", "results")  # "results": the search API's export
_META_KEYS = ("subject", "tags", "status", "priority", "type", "created_at")


def comment_text(comment: dict) -> str:
    """The comment's text: plain_body, else body, else html_body as text."""
    for key in ("plain_body", "body"):
        value = comment.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    html_body = comment.get("html_body")
    return html_to_text(html_body) if isinstance(html_body, str) else ""


def convert(location: str, ticket: object) -> Record | Reject:
    """One ticket -> a Record (validated later) or a Reject."""
    bad = require_object(location, ticket, "a ticket")
    if bad:
        return bad
    ticket_id = id_of(ticket.get("id"))
    name = f"ticket {ticket_id}" if ticket_id else "ticket"
    comments = ticket.get("comments")
    if comments is None:
        return Reject(location, f"{name}: field 'comments' is missing; export the tickets together with "
                                "their comments (each ticket needs a 'comments' list)")
    if not isinstance(comments, list):
        return Reject(location, f"{name}: field 'comments' must be a list, got {json_type(comments)}")
    requester = id_of(ticket.get("requester_id"))
    messages = []
    for i, c in enumerate(comments, 1):
        if not isinstance(c, dict):
            return Reject(location, f"{name}, comment {i}: expected an object, got {json_type(c)}")
        if c.get("public", True) is not True:
            continue
        text = comment_text(c)
        if not text:
            continue
        author = id_of(c.get("author_id"))
        if requester is None:
            requester = author
        messages.append({"role": "user" if author == requester else "assistant", "content": text,
                         "_at": f"comment {i}"})
    if not messages:
        return Reject(location, f"{name} has no public comment with text")
    meta = pick_meta(ticket, _META_KEYS)
    via = ticket.get("via")
    if isinstance(via, dict) and isinstance(via.get("channel"), str):
        meta["channel"] = via["channel"]
    return Record(messages, location, ticket_id, meta)


def parse_zendesk(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from a Zendesk ticket export, one per ticket."""
    yield from convert_records(iter_json_records(source, WRAPPERS), convert)

"""From what the browser sent (a like on message 3, a click on "B is better") to what to store.

The chat tabs keep, per browser session, the database id of every message they show, aligned with
the chatbot's history; these pure functions turn an event plus that state into a `RatingRequest`
(which row to rate, with what), or a `RatingError` whose message tells the user what to do.
`store.ratings` then adds the conversation, models and settings from the database itself.

    .venv/bin/python -m pytest tests/test_web_rating_payloads.py -q
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERDICT_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
ANONYMOUS_PREFIX = "guest-"


class RatingError(ValueError):
    """The event cannot become a rating; the message is shown to the user as is."""


@dataclass(frozen=True)
class RatingRequest:
    kind: str  # thumb | clear_thumb | correction | verdict
    value: str
    message_id: int | None = None
    ab_turn_id: int | None = None


GUEST_SUFFIX = " (guest)"
MAX_DISPLAY_NAME = 40


def user_name(username: str | None, anonymous_id: str | None, display_name: str | None = None) -> str:
    """Who a rating is from: the login name; without logins, the name the rater gave ("Maria (guest)"),
    else this browser's anonymous id.

    Without logins every browser gets its own id (kept in the browser), so two people rating the
    same answer at once keep two ratings instead of overwriting one; a rater who gives a name keeps it
    in the browser, and their ratings from every browser show under that one name.
    """
    if username:
        return username
    try:
        name = clean_display_name(display_name)
    except RatingError:
        name = ""
    if name:
        return name + GUEST_SUFFIX
    anon = re.sub(r"[^a-zA-Z0-9-]", "", anonymous_id or "")[:36]
    return ANONYMOUS_PREFIX + (anon or "unknown")


def clean_display_name(text: str | None) -> str:
    """A rater's display name as stored: spaces collapsed, no control characters; "" for none.
    RatingError (worded for the rater) when it is too long."""
    name = " ".join("".join(ch for ch in (text or "") if ch.isprintable()).split())
    if len(name) > MAX_DISPLAY_NAME:
        raise RatingError(f"That name has {len(name)} characters; use at most {MAX_DISPLAY_NAME}.")
    return name


def thumb_request(index: int | tuple | list, liked: bool | str | None, message_ids: list[int | None]) -> RatingRequest:
    """A like/dislike on the chatbot message at history `index`.

    `liked` is True (thumb up), False (thumb down), or "" / None when the user clicked the same
    thumb again to take it back.
    """
    if isinstance(index, (tuple, list)):
        index = index[0]
    if not isinstance(index, int) or not 0 <= index < len(message_ids):
        raise RatingError("That message is no longer in this chat. Send a new message and rate its answer.")
    message_id = message_ids[index]
    if message_id is None:
        raise RatingError("This answer is still being written (or was not saved). Rate it once it is complete.")
    if liked is True:
        return RatingRequest("thumb", "up", message_id=message_id)
    if liked is False:
        return RatingRequest("thumb", "down", message_id=message_id)
    if liked in ("", None):
        return RatingRequest("clear_thumb", "", message_id=message_id)
    raise RatingError(f"Unknown feedback {liked!r}: use the thumbs up or down.")


def answer_choices(history: list[dict], message_ids: list[int | None], side: str = "") -> list[tuple[str, int]]:
    """(label, message id) for every saved assistant answer, latest first, for the correction picker."""
    out = []
    answer_no = 0
    for msg, mid in zip(history, message_ids):
        if msg.get("role") != "assistant":
            continue
        answer_no += 1
        if mid is None:
            continue
        text = _text(msg.get("content"))
        preview = (text[:48] + "…") if len(text) > 48 else text
        prefix = f"{side} " if side else ""
        out.append((f"{prefix}answer {answer_no}: {preview}", mid))
    return list(reversed(out))


def correction_request(message_id: int | None, text: str) -> RatingRequest:
    if message_id is None:
        raise RatingError("Pick the answer you are correcting first (chat with the model to get one).")
    text = (text or "").strip()
    if not text:
        raise RatingError("Type the answer the model should have given, then save the correction.")
    return RatingRequest("correction", text, message_id=message_id)


def verdict_request(choice: str, ab_turn_ids: list[int]) -> RatingRequest:
    """A verdict button on the latest A/B turn."""
    if choice not in VERDICT_LABELS:
        raise RatingError(f"Unknown verdict {choice!r}.")
    if not ab_turn_ids:
        raise RatingError("Ask both models something first, then say which answer is better.")
    return RatingRequest("verdict", choice, ab_turn_id=ab_turn_ids[-1])


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(c) for c in content)
    if isinstance(content, dict):
        return content.get("text") or ""
    return ""

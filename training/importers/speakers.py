"""Speaker names -> roles: each format's defaults, extended by the user's role map. Pure.

Tested in tests/test_importers_formats.py (role maps) and tests/test_importers_transcript.py (labels).
"""

from __future__ import annotations

from typing import Mapping

_USER = ("user", "customer", "client", "human", "requester", "end-user", "end user", "visitor", "contact", "lead")
_ASSISTANT = ("assistant", "agent", "support", "bot", "gpt", "model", "admin", "operator", "staff", "ai")

SHAREGPT_SPEAKERS = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "system": "system",
}
# Helpdesk CSV exports name speakers many ways; these are the common ones.
CSV_SPEAKERS = {**{n: "user" for n in _USER}, **{n: "assistant" for n in _ASSISTANT}, "system": "system"}
TRANSCRIPT_LABELS = {
    "customer": "user", "user": "user", "client": "user",
    "agent": "assistant", "support": "assistant", "assistant": "assistant", "bot": "assistant",
    "system": "system",
}


def normalize(name: str) -> str:
    """Case and spacing do not matter in speaker names: 'Support  Agent' == 'support agent'."""
    return " ".join(name.split()).casefold()


def speaker_table(defaults: Mapping[str, str], *overrides: Mapping[str, str]) -> dict[str, str]:
    """The defaults, then each override on top (later wins), keyed by normalized name."""
    table = {normalize(k): v for k, v in defaults.items()}
    for mapping in overrides:
        table.update({normalize(str(k)): v for k, v in mapping.items()})
    return table


def role_of(name: object, table: Mapping[str, str]) -> str | None:
    """The role for a speaker name: the table's entry, else the role all of its words agree on
    ('Support Agent' -> assistant when 'support' and 'agent' both are); None when unknown."""
    if not isinstance(name, str):
        return None
    key = normalize(name)
    if key in table:
        return table[key]
    roles = {table.get(word) for word in key.split(" ")}
    return roles.pop() if len(roles) == 1 and None not in roles else None


def unknown_speaker(index: int, name: object, where: str = "") -> str:
    """The reject reason for a speaker no table knows, with the fix."""
    at = f" ({where})" if where else ""
    shown = str(name)
    # Suggest the role the name most likely means, so the hint can be pasted as it is.
    guess = "user" if normalize(shown) in _USER else "assistant"
    return (f"message {index}{at}: speaker {shown!r} is not one of system/user/assistant "
            f"(add it to the role map, e.g. {shown}={guess})")

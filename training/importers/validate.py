"""The one validation every format goes through: raw role/content messages -> canonical messages. Pure.

Rules, in order (a failure raises InvalidConversation whose text names the message index and field):
  1. each message is an object with a known role and non-empty text content (stripped); `weight`, when
     present, is 0 or 1 and only on assistant turns; a system message only comes first;
  2. consecutive turns of the same role are merged, joined by a blank line. A merged assistant turn
     has weight 0 only if every part had weight 0 (an absent weight counts as 1): if any part was
     meant to be trained on, the merged turn is; the key is kept only if a part had one;
  3. at least one assistant turn must follow a user turn;
  4. a trailing user turn (after the last assistant turn) teaches nothing: it is dropped, with a warning;
  5. too many messages or characters, or nothing to train on (every assistant weight 0): a warning.
Message indexes are 1-based and count the messages as given, before merging.
Tested in tests/test_importers_validate.py.
"""

from __future__ import annotations

from training.importers.model import ROLES, ImportOptions

DEFAULT_OPTIONS = ImportOptions()

# Roles that other chat formats use for tool calling; we cannot train on them, and say so.
_TOOL_ROLES = ("tool", "function", "ipython")


class InvalidConversation(ValueError):
    """A conversation that cannot be imported; str() is the reason people see."""


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_message(i: int, m: object) -> dict:
    """One message -> {"role", "content"[, "weight"]}, or InvalidConversation naming index and field."""
    if not isinstance(m, dict):
        raise InvalidConversation(f"message {i}: expected an object with 'role' and 'content', got {_json_type(m)}")
    try:
        return _clean(m)
    except InvalidConversation as exc:  # name the message only on failure: the common path stays cheap
        at = f"message {i}" + (f" ({m['_at']})" if m.get("_at") else "")
        raise InvalidConversation(f"{at}: {exc}") from None


def _clean(m: dict) -> dict:
    role = m.get("role")
    if role is None:
        raise InvalidConversation("field 'role' is missing")
    if role in _TOOL_ROLES or (role == "assistant" and (m.get("tool_calls") or m.get("function_call"))):
        raise InvalidConversation(f"tool calls (role {role!r}) are not supported; remove the tool turns "
                                  "from this conversation to import it")
    if role not in ROLES:
        raise InvalidConversation(f"role {role!r} is not one of system/user/assistant")
    content = m.get("content")
    if content is None:
        raise InvalidConversation("field 'content' is missing")
    if not isinstance(content, str):
        raise InvalidConversation(f"field 'content' must be text, got {_json_type(content)}")
    content = content.strip()
    if not content:
        raise InvalidConversation("field 'content' is empty")
    if not content.isascii():
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates from a broken JSON escape: tokenizers choke on them
            raise InvalidConversation(f"field 'content' holds an invalid character "
                                      f"({content[exc.start]!r} at position {exc.start + 1})") from None
    out = {"role": role, "content": content}
    if "weight" in m:
        w = m["weight"]
        if role != "assistant":
            raise InvalidConversation(f"field 'weight' is only allowed on assistant turns (this is a {role} turn)")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w not in (0, 1):
            raise InvalidConversation(f"field 'weight' must be 0 or 1, got {w!r}")
        out["weight"] = int(w)
    return out


def _merge(messages: list[dict]) -> list[dict]:
    """Consecutive same-role turns -> one turn; see rule 2 in the module docstring for weights."""
    merged: list[dict] = []
    for m in messages:
        last = merged[-1] if merged else None
        if last is None or last["role"] != m["role"]:
            merged.append(dict(m))
            continue
        last["content"] += "\n\n" + m["content"]
        if "weight" in last or "weight" in m:
            last["weight"] = max(last.get("weight", 1), m.get("weight", 1))
    return merged


def validate_messages(messages: object, options: ImportOptions = DEFAULT_OPTIONS) -> tuple[list[dict], list[str]]:
    """Raw messages -> (canonical messages, warnings); raises InvalidConversation with the reason."""
    if not isinstance(messages, list):
        raise InvalidConversation(f"field 'messages' must be a list, got {_json_type(messages)}")
    if not messages:
        raise InvalidConversation("the conversation has no messages")
    checked = [_check_message(i, m) for i, m in enumerate(messages, 1)]
    for i, m in enumerate(checked, 1):
        if m["role"] == "system" and any(p["role"] != "system" for p in checked[: i - 1]):
            raise InvalidConversation(f"message {i}: a system message may only come first, before any "
                                      "user or assistant turn")
    merged = _merge(checked)
    roles = [m["role"] for m in merged]
    if "assistant" not in roles:
        raise InvalidConversation("the conversation has no assistant turn (nothing to train on)")
    if "user" not in roles:
        raise InvalidConversation("the conversation has no user turn: an assistant turn must answer a user turn")
    first_user = roles.index("user")
    if "assistant" not in roles[first_user:]:
        raise InvalidConversation("no assistant turn follows a user turn (the assistant only speaks first)")

    warnings = []
    if merged[-1]["role"] == "user":
        dropped = merged.pop()
        warnings.append(f"dropped the last user turn ({len(dropped['content'])} characters): "
                        "no assistant turn answers it")
    if all(m.get("weight", 1) == 0 for m in merged if m["role"] == "assistant"):
        warnings.append("every assistant turn has weight 0: this conversation trains nothing")
    if len(merged) > options.max_messages:
        warnings.append(f"conversation has {len(merged)} messages (more than the maximum {options.max_messages})")
    chars = sum(len(m["content"]) for m in merged)
    if chars > options.max_chars:
        warnings.append(f"conversation has {chars} characters (more than the maximum {options.max_chars})")
    return merged, warnings

"""Gradio 6 chat history -> OpenAI chat messages: one pure function, tested in tests/test_serving_history.py.

Gradio 6 hands a chat handler a list of messages `{"role", "content", "metadata"?, "options"?}` whose
content is a string or a list of blocks (`{"type": "text", "text": ...}`, files, components), or
`gr.ChatMessage` objects. vLLM wants `{"role", "content": str}`. Only text reaches the model: file
and component blocks are dropped, and messages Gradio shows as collapsible "thoughts" or tool logs
(those with a `metadata.title`) are not part of the conversation.
"""

from __future__ import annotations

from typing import Any, Iterable

ROLES = ("system", "user", "assistant")


def _get(message: Any, key: str, default: Any = None) -> Any:
    if isinstance(message, dict):
        return message.get(key, default)
    return getattr(message, key, default)


def content_text(content: Any) -> str:
    """The text of one message's content: a string, a text block, or a list of blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "\n".join(t for t in (content_text(block) for block in content) if t)
    block_type = _get(content, "type")
    text = _get(content, "text")
    if isinstance(text, str) and block_type in (None, "text"):
        return text
    return ""  # files, images, components: nothing the text model can read


def to_openai_messages(history: Iterable[Any], system_prompt: str | None = None,
                       new_message: Any = None) -> list[dict[str, str]]:
    """OpenAI messages for `history` (+ `new_message`, a user turn), led by `system_prompt` if given.

    A system prompt argument replaces any system message in the history (which otherwise moves to
    the front); empty messages and
    "thought" messages (metadata with a title) are dropped; consecutive messages of the same role
    are joined, which keeps templates that insist on alternation happy.
    """
    messages: list[dict[str, str]] = []
    system = (system_prompt or "").strip()
    if system:
        messages.append({"role": "system", "content": system})
    items = list(history or [])
    if new_message is not None:
        items.append(new_message if _get(new_message, "role") else {"role": "user", "content": new_message})
    for item in items:
        role = _get(item, "role")
        if role not in ROLES:
            raise ValueError(f"chat history message has role {role!r}; expected one of {', '.join(ROLES)}")
        metadata = _get(item, "metadata") or {}
        if _get(metadata, "title"):
            continue
        text = content_text(_get(item, "content")).strip()
        if not text or (role == "system" and system):
            continue
        if role == "system":  # templates want the system prompt first
            if messages and messages[0]["role"] == "system":
                messages[0]["content"] += "\n\n" + text
            else:
                messages.insert(0, {"role": "system", "content": text})
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": role, "content": text})
    return messages

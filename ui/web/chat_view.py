"""What the chat tabs show of an answer, apart from what the model wrote and what is stored.

The model's words are stored and sent back to it as they are; the chatbots show them with links as
plain text (a support team reviews answers, and a model invents URLs: none may be one click away),
a note when the answer was cut at the token limit, and the thumbs the user gave (Gradio forgets a
highlight whenever the chatbot's value changes, so every update carries them again).

    .venv/bin/python -m pytest tests/test_web_chat_view.py -q
"""

from __future__ import annotations

import re

from serving.history import content_text, to_openai_messages

# A markdown link [label](target), an autolink <https://...>, a bare URL or www. address, an e-mail address.
_MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)>")
_BARE = re.compile(r"(?<![\w`/@.])((?:(?:https?|ftp)://|www\.)[^\s<>`]*[^\s<>`.,;:!?)\]'\"]"
                   r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)")
_HTML_ANCHOR = re.compile(r"<(/?a\b)", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)


def cut_off_note(max_tokens: int | None) -> str:
    """The line shown under an answer the server stopped at the token limit."""
    limit = f"{max_tokens} tokens" if max_tokens else "the token limit"
    return f"*[cut off at {limit}: raise “Max answer length” to let it finish]*"


def plain_links(text: str) -> str:
    """Markdown in which nothing the model wrote renders as a link: [label](url) becomes "label (url)",
    and every address is shown as code (visible, copyable, not clickable). Code spans stay as they are."""
    parts = _CODE_SPAN.split(text or "")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        part = _MD_LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(1).strip() else m.group(2),
                            parts[i])
        part = _AUTOLINK.sub(lambda m: m.group(1), part)
        part = _HTML_ANCHOR.sub(lambda m: "&lt;" + m.group(1), part)
        parts[i] = _BARE.sub(lambda m: f"`{m.group(1)}`", part)
    return "".join(parts)


def shown_answer(text: str, *, cut_off: bool = False, max_tokens: int | None = None) -> str:
    """The chatbot's text for an answer: links as plain text, and the cut-off note when it was cut."""
    shown = plain_links(text)
    if cut_off:
        shown = (shown.rstrip() + "\n\n" if shown.strip() else "") + cut_off_note(max_tokens)
    return shown


def feedback_values(history: list, ids: list, thumbs: dict[int, str]) -> list[str | None]:
    """Gradio's `feedback_value` for `history`: "Like"/"Dislike" per assistant message, in order, from the
    user's stored thumbs ({message id: "up"/"down"}); `ids` are the stored ids lined up with `history`."""
    words = {"up": "Like", "down": "Dislike"}
    out = []
    for i, message in enumerate(history or []):
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if role == "assistant":
            mid = ids[i] if i < len(ids or []) else None
            out.append(words.get(thumbs.get(mid)) if mid is not None else None)
    return out


def prompt_messages(stored: list[dict] | None, history: list, system: str | None, message: str) -> list[dict]:
    """What the model is sent for the next `message`: the stored conversation (the model's own words, not
    the chatbot's rendering of them) when there is one, else the chatbot's history; the current system
    prompt first."""
    if stored:
        kept = [{"role": m["role"], "content": m["content"]} for m in stored if m["role"] != "system"]
        return to_openai_messages(kept, system, message)
    return to_openai_messages(history, system, message)


def message_text(message) -> str:
    content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
    return content_text(content)

"""Pure HTML helpers the tabs share: conversations rendered as chats, progress bars, sizes.

Everything user-supplied is escaped: imported logs are untrusted text.
"""

from __future__ import annotations

import html

ROLE_LABELS = {"system": "System", "user": "Customer", "assistant": "Agent"}


def conversation_html(messages: list[dict], title: str = "") -> str:
    """One conversation as chat bubbles (customer left, agent right, system prompt on top)."""
    parts = [f'<div class="tl-conv"><div class="tl-conv-title">{html.escape(title)}</div>' if title
             else '<div class="tl-conv">']
    for m in messages:
        role = m.get("role", "")
        text = m.get("content", "")
        if not isinstance(text, str):
            text = str(text)
        cls = role if role in ROLE_LABELS else "other"
        label = ROLE_LABELS.get(role, role or "?")
        muted = "" if m.get("weight", 1) else ' <span class="tl-muted">(not trained on)</span>'
        parts.append(
            f'<div class="tl-msg tl-{cls}"><div class="tl-role">{html.escape(label)}{muted}</div>'
            f'<div class="tl-text">{html.escape(text)}</div></div>'
        )
    parts.append("</div>")
    return "".join(parts)


def conversations_html(items: list[tuple[str, list[dict]]], empty: str = "Nothing to show.") -> str:
    """Several (title, messages) conversations one after another."""
    if not items:
        return f'<div class="tl-empty">{html.escape(empty)}</div>'
    return '<div class="tl-convs">' + "".join(conversation_html(m, t) for t, m in items) + "</div>"


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"






def progress_bar_html(fraction: float | None, label: str) -> str:
    """A labelled progress bar; `fraction` None draws an indeterminate (empty) bar."""
    pct = 0 if fraction is None else max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="tl-progress" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div class="tl-progress-fill" style="width:{pct:.1f}%"></div></div>'
            f'<div class="tl-progress-label">{html.escape(label)}</div>')


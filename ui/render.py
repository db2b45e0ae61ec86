"""Pure HTML and table helpers the tabs share: conversations rendered as chats, sizes, times.

Everything user-supplied is escaped: imported logs are untrusted text.

    .venv/bin/python -m pytest tests/test_ui_render.py -q
"""

from __future__ import annotations

import html
from datetime import datetime, timezone

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


def short_time(iso: str | None) -> str:
    """'2026-08-01T09:12:03.123+00:00' -> '2026-08-01 09:12' (UTC; column headers say so)."""
    if not iso:
        return ""
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    """3725 -> '1 h 2 min'; 95 -> '1 min 35 s'; None -> ''."""
    if seconds is None or seconds < 0:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s and m < 10 else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def progress_bar_html(fraction: float | None, label: str) -> str:
    """A labelled progress bar; `fraction` None draws an indeterminate (empty) bar."""
    pct = 0 if fraction is None else max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="tl-progress" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div class="tl-progress-fill" style="width:{pct:.1f}%"></div></div>'
            f'<div class="tl-progress-label">{html.escape(label)}</div>')


def loss_bits(metrics: dict) -> list[str]:
    """A finished run's losses as short phrases: "final loss 0.2090", "eval loss 3.39 -> 3.30"."""
    bits = []
    if metrics.get("final_loss") is not None:
        bits.append(f"final loss {metrics['final_loss']:.4f}")
    if metrics.get("eval_loss") is not None:
        start = metrics.get("eval_loss_start")
        bits.append(f"eval loss {start:.4f} -> {metrics['eval_loss']:.4f}" if start is not None
                    else f"eval loss {metrics['eval_loss']:.4f}")
    return bits

"""Reading a chat completion on its way to the client: our completion id in, the answer and usage out.

The API forwards vLLM's answer to the client and keeps what capture needs. Pure functions over
bytes, no IO, so they are tested without a server:

- `rewrite_completion(body, completion_id)`: a non-streamed answer with its `id` set to ours, plus
  the answer text, finish reason and usage;
- `StreamReader`: fed the server-sent events of a streamed answer chunk by chunk, it returns the
  bytes to forward (each event's `id` set to ours; the usage-only last event dropped when the API
  asked for it on the client's behalf) and assembles the answer exactly as the client reads it.

    .venv/bin/python -m pytest tests/test_completion_stream.py -q
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

_COMPACT = (",", ":")


def new_completion_id(at: float | None = None) -> str:
    """A completion id the client can rate later; ours, not the model server's (replicas may repeat those).

    It starts with the time in milliseconds (12 hex digits), so a rating for an id that retention
    deleted can be told from a mistyped id without keeping the deleted ids.
    """
    ms = int((time.time() if at is None else at) * 1000)
    return f"chatcmpl-tl{ms:012x}{uuid.uuid4().hex[:20]}"


@dataclass
class Outcome:
    """What capture keeps of an answer."""

    answer: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    first_token_at: float | None = None
    """time.monotonic() when the first answer text went out (streams)."""
    choices: dict[int, list[str]] = field(default_factory=dict)


def _choice_text(choice: dict) -> str:
    content = (choice.get("message") or {}).get("content")
    return content if isinstance(content, str) else ""


def rewrite_completion(body: bytes, completion_id: str) -> tuple[bytes, Outcome]:
    """A non-streamed chat completion with `id` replaced; body unchanged when it is not a JSON object."""
    try:
        data = json.loads(body)
    except ValueError:
        return body, Outcome()
    if not isinstance(data, dict):
        return body, Outcome()
    data["id"] = completion_id
    choices = data.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    outcome = Outcome(answer=_choice_text(first), finish_reason=first.get("finish_reason"),
                      usage=data.get("usage") if isinstance(data.get("usage"), dict) else None)
    return json.dumps(data, ensure_ascii=False, separators=_COMPACT).encode(), outcome


class StreamReader:
    """Server-sent events in, events to forward out; the answer (choice 0) assembled on the way."""

    def __init__(self, completion_id: str, *, forward_usage: bool = True):
        self.completion_id = completion_id
        self.forward_usage = forward_usage
        self.outcome = Outcome()
        self.done = False
        """True once the server's final `data: [DONE]` went through."""
        self._buffer = b""

    @property
    def answer(self) -> str:
        return "".join(self.outcome.choices.get(0, []))

    def feed(self, data: bytes) -> bytes:
        """Bytes from the server -> bytes to send the client now (whole events only)."""
        self._buffer += data
        out = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                break
            event, self._buffer = self._buffer[:end], self._buffer[end + 2:]
            forwarded = self._event(event)
            if forwarded is not None:
                out.append(forwarded + b"\n\n")
        return b"".join(out)

    def close(self) -> bytes:
        """What is left in the buffer (a last event without its blank line) and the final answer."""
        rest, self._buffer = self._buffer, b""
        if not rest.strip():
            return b""
        forwarded = self._event(rest.rstrip(b"\r\n"))
        return b"" if forwarded is None else forwarded + b"\n\n"

    def _event(self, event: bytes) -> bytes | None:
        lines = event.replace(b"\r\n", b"\n").split(b"\n")
        out = []
        for line in lines:
            if not line.startswith(b"data:"):
                out.append(line)
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                out.append(line)
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                out.append(line)
                continue
            if not isinstance(chunk, dict):
                out.append(line)
                continue
            keep = self._chunk(chunk)
            if keep:
                chunk["id"] = self.completion_id
                out.append(b"data: " + json.dumps(chunk, ensure_ascii=False, separators=_COMPACT).encode())
        if not any(out):
            return None
        return b"\n".join(out)

    def _chunk(self, chunk: dict) -> bool:
        """Take what capture needs from one chunk; False when the client must not see it."""
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.outcome.usage = usage
        choices = chunk.get("choices") or []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            text = (choice.get("delta") or {}).get("content")
            if isinstance(text, str) and text:
                self.outcome.choices.setdefault(index, []).append(text)
                if self.outcome.first_token_at is None:
                    self.outcome.first_token_at = time.monotonic()
            if index == 0 and choice.get("finish_reason"):
                self.outcome.finish_reason = choice["finish_reason"]
        # The usage-only last chunk (no choices) exists because we asked for it: hide it unless the client did.
        return self.forward_usage or bool(choices) or not isinstance(usage, dict)

    def result(self) -> Outcome:
        self.outcome.answer = self.answer
        return self.outcome

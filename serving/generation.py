"""Generation defaults of a served model (temperature, answer length, system prompt), and how a request
gets them when it does not say.

One rule for both doors: the chat tabs start from a model's defaults when it is picked, and the /v1 API
fills in whatever a client left out, so an adapter answers the same in the app and over the API (the API
used to fall back to vLLM's temperature 1.0 while the app used 0.7). Stored per model (or deployment) name by
store.generation_defaults; a deployment's fields go over its model's, and unset fields fall back to
`APP_DEFAULTS`.

    .venv/bin/python -m pytest tests/test_generation_defaults.py -q
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlite_utils import Database

from store.generation_defaults import FIELDS, get_defaults, set_defaults

MAX_TOKENS_LIMIT = 32_768
MAX_SYSTEM_PROMPT_CHARS = 8_000


class GenerationDefaultError(ValueError):
    """A default that cannot be stored; `field` names it (each door words it: a flag, a form label)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class GenerationDefaults:
    temperature: float = 0.7
    """Sampling temperature: 0 always picks the likeliest word; 0.7 is usual for support answers."""
    max_tokens: int = 256
    """Longest answer, in tokens."""
    system_prompt: str = ""
    """Instructions sent before the conversation when the client sends none."""


APP_DEFAULTS = GenerationDefaults()


def check(*, temperature: float | None = None, max_tokens: int | None = None,
          system_prompt: str | None = None) -> None:
    """Raise GenerationDefaultError for a value no request could use."""
    if temperature is not None and not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                                        and 0 <= temperature <= 2):
        raise GenerationDefaultError("temperature", f"must be between 0 and 2, got {temperature}")
    if max_tokens is not None and not (isinstance(max_tokens, int) and 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise GenerationDefaultError("max_tokens", f"must be a whole number from 1 to {MAX_TOKENS_LIMIT}, "
                                                   f"got {max_tokens}")
    if system_prompt is not None and len(system_prompt) > MAX_SYSTEM_PROMPT_CHARS:
        raise GenerationDefaultError("system_prompt", f"is {len(system_prompt):,} characters; at most "
                                                      f"{MAX_SYSTEM_PROMPT_CHARS:,}")


def defaults_for(db: Database, model: str | None, *, deployment: str | None = None) -> GenerationDefaults:
    """The model's stored defaults, the app's where a field is unset. A request made to a `deployment` takes the
    fields stored for the deployment's name over its model's (a deployment's bot may need its own system prompt,
    whichever adapter it points at, a canary's included)."""
    merged = dict.fromkeys(FIELDS)
    for name in (model, deployment):
        if name:
            merged.update({k: v for k, v in get_defaults(db, name).items() if v is not None})
    return GenerationDefaults(**{k: (v if v is not None else getattr(APP_DEFAULTS, k)) for k, v in merged.items()})


def store_defaults(db: Database, model: str, *, by: str = "", **values) -> GenerationDefaults:
    """Check and store defaults for `model` (only the fields given; None clears one); returns the result."""
    check(**values)
    if "system_prompt" in values and values["system_prompt"] is not None:
        values["system_prompt"] = values["system_prompt"].strip() or None
    set_defaults(db, model, by=by, **values)
    return defaults_for(db, model)


def fill_request(body: dict, defaults: GenerationDefaults) -> dict:
    """An OpenAI chat request with the defaults a client did not set: temperature, max_tokens (unless
    max_completion_tokens is given) and a system message (unless the messages have one). Pure."""
    out = dict(body)
    if out.get("temperature") is None:
        out["temperature"] = defaults.temperature
    if out.get("max_tokens") is None and out.get("max_completion_tokens") is None:
        out["max_tokens"] = defaults.max_tokens
    messages = out.get("messages")
    if defaults.system_prompt and isinstance(messages, list) and not any(
            isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
        out["messages"] = [{"role": "system", "content": defaults.system_prompt}, *messages]
    return out

"""The chat client: the official openai client against the vLLM server, streaming, with clear errors.

Every failure the user can meet (server down, still starting, unknown or unloaded model, prompt
too long) becomes a `ChatError` whose message says what happened and what to do. The web app
reaches it through serving.service.Serving (ui.web.context.ModelServer), so UI tests pass a fake server.

    tuneloop chat --model NAME "How do I reset my password?"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import openai

from serving.history import to_openai_messages


class ChatError(RuntimeError):
    """A chat request failed; the message is meant for the person chatting."""

    def __init__(self, message: str, *, kind: str = "error"):
        super().__init__(message)
        self.kind = kind  # down | starting | unknown_model | bad_request | error


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None
    extra: dict = field(default_factory=dict)
    """vLLM-specific parameters (top_k, min_tokens, ignore_eos, ...), sent as extra_body."""

    def __post_init__(self):
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")

    def request_kwargs(self) -> dict:
        kwargs = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.stop:
            kwargs["stop"] = list(self.stop)
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if self.extra:
            kwargs["extra_body"] = dict(self.extra)
        return kwargs


class StreamEnd(str):
    """The last item `ChatClient.stream` yields: no text (an empty string, so joining the pieces still gives
    the answer), and why the answer ended: `finish_reason` "stop" (the model finished), "length" (cut off
    at max_tokens, which `max_tokens` repeats) or None when the server did not say."""

    finish_reason: str | None
    max_tokens: int | None

    def __new__(cls, finish_reason: str | None, max_tokens: int | None = None):
        end = super().__new__(cls, "")
        end.finish_reason = finish_reason
        end.max_tokens = max_tokens
        return end

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == "length"


# What to do about a model server that does not answer, for one local server, an external one and a fleet alike
# (the other model-server clients, serving.adapters and serving.evaluation.runner, say the same).
DOWN_HINT = ("is it running? `tuneloop serve` starts the local one; `tuneloop replicas` checks a fleet's "
             "(TUNELOOP_REPLICA_URLS); TUNELOOP_VLLM_URL names another")


class ChatClient:
    """Chat with the base model or an adapter on a vLLM server (or the app's own OpenAI API).

    `server_state`, when given, says what the local supervisor knows ("starting", "restarting",
    "failed", ...) so a refused connection can be explained precisely.
    """

    def __init__(self, base_url: str, *, api_key: str = "EMPTY", timeout: float = 600.0,
                 server_state: Callable[[], str] | None = None):
        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.server_state = server_state
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY",
                                     timeout=openai.Timeout(timeout, connect=5.0), max_retries=0)

    def close(self) -> None:
        self._client.close()

    def models(self) -> list[str]:
        try:
            return [m.id for m in self._client.models.list()]
        except openai.OpenAIError as exc:
            raise self._explain(exc, None) from None

    def stream(self, model: str, messages: list[dict], params: SamplingParams = SamplingParams()) -> Iterator[str]:
        """Yield the answer's text pieces as they arrive, then a `StreamEnd` saying why it ended."""
        finish = None
        try:
            stream = self._client.chat.completions.create(model=model, messages=messages, stream=True,
                                                          **params.request_kwargs())
            with stream:
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
        except openai.OpenAIError as exc:
            raise self._explain(exc, model) from None
        yield StreamEnd(finish, params.max_tokens)

    def complete(self, model: str, messages: list[dict], params: SamplingParams = SamplingParams()) -> str:
        return "".join(self.stream(model, messages, params))

    def ask(self, model: str, message: str, *, system_prompt: str | None = None,
            params: SamplingParams = SamplingParams()) -> Iterator[str]:
        """One question, no history: what `tuneloop chat` does."""
        return self.stream(model, to_openai_messages([], system_prompt, message), params)

    def _explain(self, exc: openai.OpenAIError, model: str | None) -> ChatError:
        where = f"the model server at {self.base_url.removesuffix('/v1')}"
        state = self.server_state() if self.server_state else ""
        if isinstance(exc, openai.APITimeoutError):
            return ChatError(f"{where} did not answer in time; it may be overloaded, try again", kind="down")
        if isinstance(exc, openai.APIConnectionError):
            if state in ("starting", "restarting"):
                return ChatError(f"the model server is {state} (about a minute on CPU); try again shortly",
                                 kind="starting")
            if state == "failed":
                return ChatError("the model server failed and was not restarted; see the vLLM log "
                                 "(`tuneloop serve` prints where it is)", kind="down")
            return ChatError(f"{where} is not reachable: {DOWN_HINT}", kind="down")
        if isinstance(exc, openai.NotFoundError):
            if model:
                return ChatError(f"model {model!r} is not loaded on the server: pick another one, or load it with "
                                 f"`tuneloop adapters load {model}` (see `tuneloop adapters`)", kind="unknown_model")
            return ChatError(f"{where} has no such route: is it a vLLM server?", kind="error")
        if isinstance(exc, openai.AuthenticationError):
            return ChatError(f"{where} refused the API key (set TUNELOOP_API_KEY to the server's key)", kind="error")
        if isinstance(exc, openai.APIStatusError):
            message = _server_message(exc)
            if exc.status_code == 503:
                return ChatError(f"{where} is starting or overloaded: {message}", kind="starting")
            if exc.status_code == 400:
                return ChatError(f"the model server refused the request: {message}", kind="bad_request")
            return ChatError(f"{where} failed ({exc.status_code}): {message}")
        return ChatError(f"chat failed: {exc}")


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return body["message"]
    return str(exc.message)

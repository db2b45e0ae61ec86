"""The /v1 API's traffic side: named API keys, capture of every chat completion, the canary, POST /v1/feedback.

serving/api.py routes requests; this module holds what they need from the traffic rooms:

- `Traffic.check_key(request)`: the Bearer key must be an active key (store.api_keys; TUNELOOP_API_KEY
  is the key "default"); a revoked key is refused at once, every use is counted.
- `Traffic.route(asked, target)`: a deployment with a canary sends its share to the canary's model
  (serving.canary.choose_arm, sticky per `user`).
- `Traffic.forward(...)`: sends the completion upstream and answers the client with our completion id
  (also in the `X-Tuneloop-Completion-Id` header), capturing the answer as the client got it; a
  client that goes away mid-stream leaves a row marked partial.
- `feedback_routes(router, traffic)`: POST /v1/feedback, a thumb or score, a correction, a comment
  and the rater's name for a captured completion, stored as ratings like the browser's.

    .venv/bin/python -m pytest tests/test_traffic_api.py -q
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from serving.canary import choose_arm
from serving.capture import CaptureWriter
from serving.completion_stream import StreamReader, rewrite_completion
from store.api_keys import find_key, has_keys, sync_env_key
from store.canaries import traffic_configs
from store.db import connect, now, open_shared
from store.ratings import MAX_CORRECTION_CHARS, InvalidRating, rate_message, redact_correction
from store.redaction import RedactionSettings
from store.settings import Settings
from store.traffic import CompletionNotFound, as_chat_message, get_capture, record_feedback

log = logging.getLogger(__name__)

COMPLETION_HEADER = "X-Tuneloop-Completion-Id"
FEEDBACK_MAX_BYTES = 256_000  # a correction of MAX_CORRECTION_CHARS characters and a comment fit
# A chat request is its whole conversation: 4 MB holds a 128k-token context several times over, even as
# escaped JSON, and keeps a runaway client from making the API hold (and capture) gigabytes.
CHAT_MAX_BYTES = 4_000_000
ErrorFn = Callable[..., JSONResponse]


def _error(status: int, message: str, type_: str, *, param: str | None = None,
           headers: dict | None = None) -> JSONResponse:
    """OpenAI's error shape (serving.api.openai_error's twin, kept here so the modules need not import each other)."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}},
                        status_code=status, headers=headers)


async def read_body(request: Request, limit: int, what: str) -> tuple[bytes | None, JSONResponse | None]:
    """The request body, or a 413 when it is larger than `limit` bytes: refused from its declared length,
    else counted while it arrives (a chunked upload), so an oversized body is never held whole."""
    def too_large():
        return None, _error(413, f"the {what} is larger than {limit:,} bytes; send less (tuneloop's limit)",
                            "invalid_request_error")

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return too_large()
        chunks.append(chunk)
    return b"".join(chunks), None


def completion_time(completion_id: str) -> datetime | None:
    """When one of our completion ids was made (it starts with the time), None for other ids."""
    stamp = completion_id.removeprefix("chatcmpl-tl")
    if stamp == completion_id or len(stamp) < 12:
        return None
    try:
        return datetime.fromtimestamp(int(stamp[:12], 16) / 1000, timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None


def redactor(settings: Settings) -> Callable[[dict], dict] | None:
    """The hook through which captured text passes before it is stored (issue 12's redaction engine,
    store.redaction, with the same defaults as imports). None when `capture_redact` is off."""
    if not getattr(settings, "capture_redact", True):
        return None

    def redact(row: dict) -> dict:
        from store.redaction import Placeholders, redact_conversation, redact_value

        rules, names = RedactionSettings(), Placeholders()
        messages = list(row.get("messages") or [])
        redacted, _ = redact_conversation(messages + [{"role": "assistant", "content": row.get("answer") or ""}],
                                          rules, placeholders=names)
        # The caller's own fields (a `user` that is an e-mail address, a ticket's subject in `metadata`) are
        # stored too: same engine, same numbering as the conversation.
        extra, _ = redact_value({"user": row.get("user"), "metadata": row.get("metadata")}, rules, names)
        return {**row, "messages": redacted[:-1], "answer": redacted[-1]["content"], **extra}

    return redact


def _redaction(settings: Settings | None):
    """The settings stored feedback is redacted with: the imports' defaults, or none when `capture_redact` is off."""
    return RedactionSettings.off() if settings is not None and not settings.capture_redact else RedactionSettings()


def redact_feedback(settings: Settings, fb: dict) -> dict:
    """The feedback's comment through the same engine as captured traffic. The correction is redacted in
    `store_feedback`, as the last turn of its conversation (store.ratings.redact_correction), so that its numbers
    never reuse a placeholder the conversation holds."""
    if not getattr(settings, "capture_redact", True) or not fb.get("comment"):
        return fb
    from store.redaction import redact_text

    return {**fb, "comment": redact_text(fb["comment"], RedactionSettings())[0]}


class CapturedStream(StreamingResponse):
    """A streaming response that always closes its body iterator, so the relay's clean-up (capture, upstream
    close) runs when the client goes away, whichever way the server reports it."""

    on_close: Callable[[], Awaitable[None]] | None = None
    """Run after the body iterator is closed (for clean-up a never-started iterator cannot do)."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()
            if self.on_close is not None:
                await self.on_close()


class Traffic:
    """Keys, capture and canary for one API router."""

    def __init__(self, settings: Settings, *, writer: CaptureWriter | None = None):
        self.settings = settings
        self.writer = writer or CaptureWriter(settings.db_path, retention_days=settings.capture_retention_days,
                                              redact=redactor(settings))
        self._db = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ small reads on every request

    def read(self, fn, *args, **kwargs):
        """Run a store read on the router's shared connection (opened on first use). Every read is fresh (no
        cache, no open transaction), so a promotion or a revoked key reaches the next request; and it costs one
        query, where opening a connection (store.db.connect checks migrations and WAL) costs a dozen."""
        with self._lock:
            if self._db is None:
                self._db = open_shared(self.settings.db_path)
                sync_env_key(self._db, self.settings.api_key)
            return fn(self._db, *args, **kwargs)

    def close(self) -> None:
        """Flush the capture queue and close the shared connection (the app's shutdown)."""
        self.writer.close()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------ keys

    def check_key(self, request: Request) -> JSONResponse | None:
        """None when the request carries an active key (its name goes to request.state.api_key); else the 401."""
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        token = token.strip()
        key = self.read(find_key, token) if scheme.lower() == "bearer" and token else None
        if key is None:
            if not self.read(has_keys):
                return _error(401, "the tuneloop API is off because no API key is set: set TUNELOOP_API_KEY "
                                   "(e.g. in .env) and restart `tuneloop serve`, or create one with "
                                   "`tuneloop keys create NAME`", "authentication_error")
            return _error(401, "invalid or missing API key: send 'Authorization: Bearer <your key>'",
                          "authentication_error", headers={"WWW-Authenticate": "Bearer"})
        if key["revoked_at"] is not None:
            return _error(401, f"this API key ({key['name']}) was revoked; ask your tuneloop administrator for "
                               "a new one", "authentication_error", headers={"WWW-Authenticate": "Bearer"})
        request.state.api_key = key["name"]
        self.writer.count_use(key["name"])
        return None

    # ------------------------------------------------------------ canary and capture switches

    def config(self, deployment: str | None) -> dict | None:
        return self.read(traffic_configs).get(deployment) if deployment else None

    def route(self, deployment: str, target: str, body: dict, completion_id: str) -> tuple[str, str]:
        """(model to ask, arm) for a request to `deployment`, whose own target is `target`."""
        config = self.config(deployment) or {}
        share, canary = config.get("canary_share"), config.get("canary_target")
        if not canary or not share:
            return target, "main"
        user = body.get("user") if isinstance(body.get("user"), str) else None
        arm = choose_arm(deployment, share, user=user, request_id=completion_id)
        return (canary if arm == "canary" else target), arm

    def capturing(self, deployment: str | None) -> bool:
        if not self.settings.capture:
            return False
        config = self.config(deployment)
        return True if config is None else config["capture"]

    # ------------------------------------------------------------ forwarding with capture

    async def forward(self, request: Request, body: dict, *, asked: str, deployment: str | None, arm: str | None,
                      completion_id: str, send: Callable[..., Awaitable], unavailable: ErrorFn,
                      headers: dict) -> Response:
        """Send `body` upstream and answer the client, capturing what it got (when capture is on)."""
        started, created = time.monotonic(), now()
        capture = self.capturing(deployment)
        stream = bool(body.get("stream"))
        metadata = body.pop("metadata", None)  # ours to keep; the model server has no use for it
        forward_usage = True
        if stream:
            options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
            if not options.get("include_usage"):  # token counts come in the last chunk only when asked
                forward_usage = False
                body["stream_options"] = {**options, "include_usage": True}
        headers = {**headers, COMPLETION_HEADER: completion_id}

        def record(status: str, *, answer: str = "", finish=None, usage=None, first=None, http_status=200,
                   error: str | None = None) -> None:
            if not capture:
                return
            end = time.monotonic()
            usage = usage or {}
            params = {k: v for k, v in body.items() if k not in ("messages", "model", "user")}
            if not forward_usage:
                params.pop("stream_options", None)
            self.writer.submit({
                "id": completion_id, "created_at": created, "finished_at": now(), "model": asked,
                "deployment": deployment, "adapter": body.get("model"), "arm": arm,
                "messages": body.get("messages") if isinstance(body.get("messages"), list) else [],
                "params": params, "stream": int(stream), "answer": answer, "finish_reason": finish,
                "status": status, "error": error, "http_status": http_status,
                "ttft_ms": round(((first or end) - started) * 1000, 2), "latency_ms": round((end - started) * 1000, 2),
                "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
                "total_tokens": usage.get("total_tokens"), "api_key": getattr(request.state, "api_key", None),
                "user": body.get("user") if isinstance(body.get("user"), str) else None,
                "metadata": metadata if isinstance(metadata, dict) else ({} if metadata is None else
                                                                         {"value": metadata}),
            })

        try:
            client, upstream = await send("POST", "/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            record("error", http_status=503, error=exc.__class__.__name__)
            return unavailable(exc)
        content_type = upstream.headers.get("content-type", "application/json")

        if upstream.status_code == 200 and stream:
            reader = StreamReader(completion_id, forward_usage=forward_usage)
            started = False

            async def relay():
                nonlocal started
                started = True
                status = "partial"
                try:
                    async for data in upstream.aiter_bytes():
                        out = reader.feed(data)
                        if out:
                            yield out
                    tail = reader.close()
                    if tail:
                        yield tail
                    status = "complete" if reader.done else "partial"
                except httpx.HTTPError:
                    status = "partial"
                finally:
                    o = reader.result()
                    record(status, answer=o.answer, finish=o.finish_reason, usage=o.usage, first=o.first_token_at)
                    try:
                        await upstream.aclose()
                        await client.aclose()
                    except BaseException:  # noqa: BLE001 - cancelled while closing: the sockets go with the task
                        pass

            async def if_never_started() -> None:
                if not started:  # the client went away before the first byte: still recorded, still closed
                    record("partial")
                    await upstream.aclose()
                    await client.aclose()

            response = CapturedStream(relay(), media_type=content_type,
                                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
            response.on_close = if_never_started
            return response

        content = await upstream.aread()
        await upstream.aclose()
        await client.aclose()
        if upstream.status_code == 200:
            content, o = rewrite_completion(content, completion_id)
            record("complete", answer=o.answer, finish=o.finish_reason, usage=o.usage)
        else:
            record("error", http_status=upstream.status_code, error=content[:500].decode("utf-8", "replace"))
        return Response(content, status_code=upstream.status_code, media_type=content_type, headers=headers)


# ------------------------------------------------------------ POST /v1/feedback

def parse_feedback(body) -> tuple[dict | None, JSONResponse | None]:
    """The feedback request checked: ({completion_id, thumb, score, correction, comment, rater}, None) or (None, 400)."""
    def bad(message: str, param: str | None = None):
        return None, _error(400, message, "invalid_request_error", param=param)

    if not isinstance(body, dict):
        return bad("the feedback body must be a JSON object")
    cid = body.get("completion_id", body.get("id"))
    if not isinstance(cid, str) or not cid.strip():
        return bad("'completion_id' is required: the `id` of the chat completion you rate", "completion_id")
    thumb, score = body.get("thumb"), body.get("score")
    if thumb is not None and thumb not in ("up", "down"):
        return bad(f"'thumb' must be 'up' or 'down', not {thumb!r}", "thumb")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
            return bad("'score' must be a number from 0 (bad) to 1 (good)", "score")
        implied = "up" if score >= 0.5 else "down"
        if thumb is not None and thumb != implied:
            return bad(f"'thumb' {thumb!r} contradicts 'score' {score} (0.5 and above counts as up)", "score")
        thumb = implied
    correction = body.get("correction")
    if correction is not None and (not isinstance(correction, str) or not correction.strip()):
        return bad("'correction' must be the answer the model should have given (a non-empty text)", "correction")
    if isinstance(correction, str) and len(correction) > MAX_CORRECTION_CHARS:
        return bad(f"'correction' is longer than {MAX_CORRECTION_CHARS} characters", "correction")
    comment, rater = body.get("comment"), body.get("rater")
    for name, value in (("comment", comment), ("rater", rater)):
        if value is not None and not isinstance(value, str):
            return bad(f"'{name}' must be a text", name)
    if rater is not None and len(rater) > 200:
        return bad("'rater' is longer than 200 characters", "rater")
    if thumb is None and correction is None and not (comment or "").strip():
        return bad("say something: a 'thumb' ('up'/'down'), a 'score' (0-1), a 'correction' or a 'comment'")
    return {"completion_id": cid.strip(), "thumb": thumb, "score": score, "correction": correction,
            "comment": (comment or "").strip() or None, "rater": (rater or "").strip() or None}, None


def store_feedback(db_path, fb: dict, *, api_key: str, settings: Settings | None = None) -> dict:
    """Store checked feedback as ratings (and the feedback itself, with score and comment); raises
    CompletionNotFound, ValueError (a completion that cannot be rated). With `settings`, texts are redacted first."""
    if settings is not None:
        fb = redact_feedback(settings, fb)
    user = fb["rater"] or f"api:{api_key}"
    with connect(db_path) as db:
        get_capture(db, fb["completion_id"])
        message_id = as_chat_message(db, fb["completion_id"], user=user)
        ratings = []
        if fb["thumb"]:
            ratings.append({"id": rate_message(db, kind="thumb", message_id=message_id, value=fb["thumb"], user=user),
                            "kind": "thumb", "value": fb["thumb"]})
        correction = fb["correction"]
        if correction:
            # Redacted once, as the last turn of its conversation; the rating and the feedback row keep that text.
            correction = redact_correction(db, message_id, correction.strip(), _redaction(settings))
            rid = rate_message(db, kind="correction", message_id=message_id, value=correction, user=user,
                               redaction=RedactionSettings.off())
            ratings.append({"id": rid, "kind": "correction", "value": correction})
        feedback_id = record_feedback(db, fb["completion_id"], rater=user, api_key=api_key, thumb=fb["thumb"],
                                      score=fb["score"], correction=correction, comment=fb["comment"],
                                      rating_ids=[r["id"] for r in ratings])
    return {"object": "feedback", "id": feedback_id, "completion_id": fb["completion_id"], "rater": user,
            "ratings": ratings}


def feedback_routes(router: APIRouter, traffic: Traffic) -> None:
    """Add POST /feedback to `router` (mounted under /v1)."""

    @router.post("/feedback")
    async def feedback(request: Request):
        if (denied := traffic.check_key(request)) is not None:
            return denied
        raw, problem = await read_body(request, FEEDBACK_MAX_BYTES, "feedback")
        if problem is not None:
            return problem
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not valid JSON", "invalid_request_error")
        fb, problem = parse_feedback(body)
        if problem is not None:
            return problem
        for attempt in (1, 2):
            try:
                return await run_in_threadpool(store_feedback, traffic.settings.db_path, fb,
                                               api_key=request.state.api_key, settings=traffic.settings)
            except CompletionNotFound:
                if attempt == 1 and traffic.writer.pending:  # answered a moment ago, still in the queue
                    await run_in_threadpool(traffic.writer.flush, 10)
                    continue
                return not_found(traffic.settings, fb["completion_id"])
            except (InvalidRating, ValueError) as exc:
                return _error(400, str(exc), "invalid_request_error", param="completion_id")


def not_found(settings: Settings, completion_id: str) -> JSONResponse:
    """404 for a completion id we do not hold, saying why when we can tell (retention deleted it)."""
    made = completion_time(completion_id)
    days = settings.capture_retention_days
    if made is not None and days and made < datetime.now(timezone.utc) - timedelta(days=days):
        message = (f"completion {completion_id} was deleted: captured traffic is kept {days:g} days unless rated "
                   "(TUNELOOP_CAPTURE_RETENTION_DAYS)")
    else:
        message = (f"no captured completion {completion_id}: check the id (the `id` of the chat completion, or its "
                   f"{COMPLETION_HEADER} header); capture may be off for that deployment")
    return _error(404, message, "NotFoundError", param="completion_id")

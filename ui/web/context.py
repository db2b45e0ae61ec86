"""What the tabs are handed: settings, the model server and the trainer, behind small protocols.

`tuneloop serve` passes the real ones (serving.service.Serving and the training runner); tests pass
fakes. Handlers open one database connection per call (`ctx.db()`), because sqlite-utils
connections are bound to the thread that opened them and Gradio runs handlers in a thread pool.
"""

from __future__ import annotations

import functools
import html
import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import gradio as gr

from store.db import connect
from store.settings import Settings
from ui.web.rating_payloads import user_name

log = logging.getLogger("tuneloop.ui")


class ModelServer(Protocol):
    """What the app needs of serving (serving.service.Serving provides it)."""

    def models(self, *, include_archived: bool = True) -> list: ...  # serving.adapters.ModelStatus
    def stream(self, model: str, messages: list[dict], params=...) -> Iterator[str]: ...
    def load(self, name: str) -> None: ...
    def unload(self, name: str) -> bool: ...
    def archive(self, name: str) -> None: ...
    def restore(self, name: str) -> None: ...


class Trainer(Protocol):
    """What the app needs of training (ui.web.tabs.train.QueueTrainer provides it; tests pass fakes)."""

    def start(self, **options) -> int: ...  # training.queue.start_run's options; returns the run id
    def cancel(self, run_id: int) -> str: ...
    def reconcile(self) -> None: ...  # mark runs whose process died as failed
    def log_tail(self, run_dir: str | None, lines: int = 40) -> str: ...
    def estimate(self, *, measure: bool = False, **options): ...  # training.dryrun.RunPreview (measure: run a probe)
    def resume(self, run_id: int) -> int: ...  # the checkpoint step it resumes from


@dataclass
class AppContext:
    settings: Settings
    server: ModelServer
    trainer: Trainer | None = None

    @contextmanager
    def db(self):
        with connect(self.settings.db_path) as db:
            yield db

    @property
    def base_model(self) -> str:
        return self.settings.served_base_name


def current_user(request: gr.Request | None, anonymous_id: str | dict | None) -> str:
    """The logged-in user; without logins, the name this browser's rater gave, or the browser's anonymous id.

    `anonymous_id` is the app's browser identity (gr.BrowserState): {"id": ..., "name": ...}, or the bare
    id that browsers kept before names existed.
    """
    username = getattr(request, "username", None) if request is not None else None
    ident = browser_identity(anonymous_id, fresh=False)
    return user_name(username, ident["id"], ident["name"])


def is_admin(ctx: AppContext, request: gr.Request | None) -> bool:
    """Who may do the admin actions (API keys, erasing a customer's data): without logins (loopback only)
    whoever opens the app; with logins, the admins only."""
    if not ctx.settings.login_pairs():
        return True
    username = getattr(request, "username", None) if request is not None else None
    return bool(username) and username in ctx.settings.admin_names()


def browser_identity(value: str | dict | None, *, fresh: bool = True) -> dict:
    """The browser identity as {"id", "name"}; a new id when it has none yet (and `fresh`)."""
    ident = dict(value) if isinstance(value, dict) else {"id": value}
    return {"id": ident.get("id") or (new_anonymous_id() if fresh else ""), "name": ident.get("name") or ""}


def new_anonymous_id() -> str:
    return uuid.uuid4().hex[:12]


def fail(message: str) -> "gr.Error":
    """A gr.Error for the user: no stack trace, a message that says what to do."""
    return gr.Error(message, print_exception=False)


def keeps_form(n_outputs: int, *, title: str = "Not done") -> Callable:
    """Decorate a handler so that a refusal (a gr.Error it raises) is a toast and changes none of its outputs.

    Gradio marks every output of a failed event with a red "Error" badge that stays after the toast and
    covers the very field the message asks to fill; a refused action must leave the form usable.
    """
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)  # Gradio reads the signature through __wrapped__ (request, progress)
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error as exc:
                gr.Warning(exc.message, duration=exc.duration, title=title)
                skips = tuple(gr.skip() for _ in range(n_outputs))
                return skips[0] if n_outputs == 1 else skips
        return handler
    return wrap


def unexpected(action: str, exc: BaseException) -> "gr.Error":
    """For errors nobody foresaw: log the trace for the engineer, tell the user in plain words."""
    log.exception("%s failed", action)
    return gr.Error(f"{html.escape(action)} failed: {exc.__class__.__name__}: {html.escape(str(exc))}. "
                    "Nothing was changed. "
                    "If it happens again, ask your tuneloop administrator to look at the server log.",
                    print_exception=False)

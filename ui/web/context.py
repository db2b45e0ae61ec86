"""What the tabs are handed: settings, the model server and the trainer, behind small protocols.

`tuneloop serve` passes the real ones (serving.service.Serving and the training runner); tests pass
fakes. Handlers open one database connection per call (`ctx.db()`), because sqlite-utils
connections are bound to the thread that opened them and Gradio runs handlers in a thread pool.
"""

from __future__ import annotations

import html
import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Protocol

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


def current_user(request: gr.Request | None, anonymous_id: str | None) -> str:
    """The logged-in user, or this browser's anonymous id when the app runs without logins."""
    username = getattr(request, "username", None) if request is not None else None
    return user_name(username, anonymous_id)


def new_anonymous_id() -> str:
    return uuid.uuid4().hex[:12]


def fail(message: str) -> "gr.Error":
    """A gr.Error for the user: no stack trace, a message that says what to do."""
    return gr.Error(message, print_exception=False)


def unexpected(action: str, exc: BaseException) -> "gr.Error":
    """For errors nobody foresaw: log the trace for the engineer, tell the user in plain words."""
    log.exception("%s failed", action)
    return gr.Error(f"{html.escape(action)} failed: {exc.__class__.__name__}: {html.escape(str(exc))}. "
                    "Nothing was changed. "
                    "If it happens again, ask your tuneloop administrator to look at the server log.",
                    print_exception=False)

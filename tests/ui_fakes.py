"""A scripted model server and trainer for UI tests: no vLLM, no training process.

`FakeServer` answers with scripted text (streamed word by word) and keeps a set of loaded names;
`FakeTrainer` records what it was asked. Statuses come from the real serving.adapters.reconcile,
so the tabs see exactly the shapes the real server gives them.
"""

from __future__ import annotations

import time
from typing import Iterator

from serving.adapters import AdapterError, reconcile
from store.adapters import list_adapters, set_status
from store.db import connect


BASE = "smollm2-135m-instruct"


def app_settings(tmp_path, monkeypatch, base_name: str = BASE):
    """Settings for UI tests: the test's data dir (conftest), a base model path that needs no files."""
    from store.settings import Settings

    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(tmp_path / "SmolLM2-135M-Instruct"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", base_name)
    return Settings(_env_file=None)


class FakeServer:
    def __init__(self, settings, *, delay: float = 0.0, answers: dict[str, str] | None = None, up: bool = True):
        self.settings = settings
        self.delay = delay
        self.answers = answers or {}
        self.up = up
        self.loaded: set[str] = set()
        self.requests: list[tuple[str, list[dict], object]] = []
        self.fail_models: dict[str, Exception] = {}

    @property
    def base(self) -> str:
        return self.settings.served_base_name

    def models(self, *, include_archived: bool = True):
        with connect(self.settings.db_path) as db:
            rows = list_adapters(db, include_archived=include_archived)
        server = [{"id": n} for n in {self.base, *self.loaded}] if self.up else None
        return reconcile(rows, server, self.base)

    def stream(self, model: str, messages: list[dict], params=None) -> Iterator[str]:
        from serving.chat import ChatError

        self.requests.append((model, messages, params))
        if not self.up:
            raise ChatError("the model server at http://127.0.0.1:8011 is not reachable: start it with "
                            "`tuneloop serve`", kind="down")
        if model in self.fail_models:
            raise self.fail_models[model]
        if model != self.base and model not in self.loaded:
            raise ChatError(f"model {model!r} is not loaded on the server", kind="unknown_model")
        from serving.chat import StreamEnd

        text = self.answers.get(model, f"Answer from {model} to: {messages[-1]['content']}")
        words = text.split(" ")
        limit = getattr(params, "max_tokens", None)
        cut = bool(limit) and len(words) > limit  # a word per token, cut like vLLM at max_tokens
        for i, word in enumerate(words[:limit] if cut else words):
            if self.delay:
                time.sleep(self.delay)
            yield word if i == 0 else " " + word
        yield StreamEnd("length" if cut else "stop", limit)

    def load(self, name: str) -> None:
        with connect(self.settings.db_path) as db:
            if not any(r["name"] == name for r in list_adapters(db)):
                raise AdapterError(f"no adapter named {name!r}")
        self.loaded.add(name)

    def unload(self, name: str) -> bool:
        was = name in self.loaded
        self.loaded.discard(name)
        return was

    def archive(self, name: str) -> None:
        self.loaded.discard(name)
        with connect(self.settings.db_path) as db:
            set_status(db, name, "archived")

    def restore(self, name: str) -> None:
        with connect(self.settings.db_path) as db:
            set_status(db, name, "available")
        self.loaded.add(name)


class FakeTrainer:
    def __init__(self):
        self.started: list[dict] = []
        self.cancelled: list[int] = []
        self.estimated: list[dict] = []
        self.resumed: list[int] = []
        self.measured = False
        self.next_id = 1

    def start(self, **options) -> int:
        self.started.append(options)
        self.next_id += 1
        return self.next_id - 1

    def cancel(self, run_id: int) -> str:
        self.cancelled.append(run_id)
        return "running"

    def reconcile(self) -> None:
        pass

    def log_tail(self, run_dir: str | None, lines: int = 40) -> str:
        return ""

    def estimate(self, *, measure: bool = False, **options):
        """A scripted estimate: steps from the options, a time once a probe was asked for (or given)."""
        from training.config import RunConfig
        from training.dryrun import RunPreview
        from training.estimate import DataStats, Speed, estimate_run

        self.estimated.append({**options, "measure": measure})
        cfg = RunConfig.from_preset(options.get("preset", "standard"), **{k: v for k, v in options.items() if k in (
            "epochs", "max_steps", "batch_size", "grad_accum", "max_seq_len", "eval_fraction", "lora_rank",
            "lora_alpha", "lora_dropout", "learning_rate")}, base_model=options.get("base_model", ""))
        self.measured = self.measured or measure
        stats = DataStats(train_examples=470, train_tokens=470 * 260, eval_examples=52, eval_tokens=52 * 260,
                          truncated=7, dropped=1, conversations=524)
        speed = Speed(0.0063, 0.002, 25.0, "a 3-step probe just now") if self.measured else None
        return RunPreview(cfg, estimate_run(cfg, stats, speed))

    def resume(self, run_id: int) -> int:
        self.resumed.append(run_id)
        return 6


class NoProgress:
    """A stand-in for gr.Progress in handler calls made without Gradio."""

    def __call__(self, *a, **k):
        pass


def scripted_ctx(tmp_path, monkeypatch):
    """The web app's context over the scripted model server and trainer, for handler tests without a browser."""
    from ui.web.context import AppContext

    settings = app_settings(tmp_path, monkeypatch)
    return AppContext(settings=settings, server=FakeServer(settings), trainer=FakeTrainer())

"""Helpers for the browser tests: the app on a real port, headless Debian Chromium, and a few
Gradio-aware actions (pick from a dropdown, fill a number, read a chatbot), with screenshots.

Chromium comes from Debian (`apt-get install chromium`; tests/run.sh does it): Playwright's own
browser download does not work on these machines. Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from html import unescape
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
VIEWPORT = {"width": 1366, "height": 768}  # a laptop


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (tests/run.sh does it when run as root)")


@contextmanager
def serve(app, port: int):
    """Run an ASGI app with uvicorn in a thread until the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test web server did not start")
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def scripted_app(tmp_path: Path, monkeypatch, prepare=None):
    """The web app with the scripted model server and trainer (ui_fakes) on a free port, for browser tests of one
    tab: yields {"url", "settings", "trainer"}. `prepare(db, settings)` fills the database before it starts."""
    from fastapi import FastAPI

    from serving_helpers import free_port
    from store.db import connect
    from store.settings import Settings
    from ui.web.app import mount_ui
    from ui.web.context import AppContext
    from ui_fakes import FakeServer, FakeTrainer

    require_chromium()
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(tmp_path / "SmolLM2-135M-Instruct"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", "smollm2-135m-instruct")
    settings = Settings(_env_file=None)
    if prepare is not None:
        with connect(settings.db_path) as db:
            prepare(db, settings)
    trainer = FakeTrainer()
    ctx = AppContext(settings=settings, server=FakeServer(settings), trainer=trainer)
    with serve(mount_ui(FastAPI(), ctx), free_port()) as url:
        yield {"url": url, "settings": settings, "trainer": trainer}


@contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Shots:
    """Numbered full-page screenshots of one test, kept as artifacts."""

    def __init__(self, name: str):
        self.dir = ARTIFACTS / name
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):
            old.unlink()
        self.n = 0

    def __call__(self, page, step: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower()).strip('-')}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def open_app(b, url: str, *, errors: list | None = None):
    """A new page (in a new browser context: its own storage, like another person's browser)."""
    page = b.new_context(viewport=VIEWPORT).new_page()
    if errors is not None:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.get_by_role("tab", name="Data").wait_for(timeout=60_000)
    wait_text(page, "#tl-who", "ratings", timeout=60)  # the page-load events have run
    return page


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(600)


def choose(page, elem_id: str, option_text: str, timeout: float = 30_000) -> None:
    """Pick the option whose label contains `option_text` in the Gradio dropdown `#elem_id`."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    option = page.locator("ul[role=listbox] li", has_text=option_text).first
    option.wait_for(timeout=timeout)
    option.click()
    page.wait_for_timeout(300)


def type_custom(page, elem_id: str, text: str) -> None:
    """Type a new value into a dropdown that allows custom values."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(text)
    box.press("Enter")
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)


def fill_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")
    page.wait_for_timeout(200)


def set_slider(page, elem_id: str, value, timeout: float = 20.0) -> None:
    """Type `value` into slider `#elem_id`'s number box until the slider holds it. A slider inside an accordion
    that was just opened is mounted with its stored value a moment later, over what was typed before."""
    box = page.locator(f"#{elem_id} input[type=number]")
    deadline = time.monotonic() + timeout
    while True:
        box.fill(str(value))
        box.press("Enter")
        page.wait_for_timeout(300)
        if page.locator(f"#{elem_id} input[type=range]").input_value() == str(value):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"slider #{elem_id} did not take {value}")


def bot_texts(page, elem_id: str) -> list[str]:
    """The text of every model answer in chatbot `#elem_id`."""
    return page.locator(f"#{elem_id} .message-row.bot-row .message-content").all_inner_texts()


def words(text: str) -> list[str]:
    """The words of `text`, without numbers or punctuation (see `shown_words`)."""
    return re.findall(r"[^\W\d_]+", text)


def shown_words(markdown: str) -> list[str]:
    """The words a reader sees once `markdown` is rendered: markup (`**`, list markers, link targets) dropped.

    A stored answer is markdown and the chatbot shows it rendered, so compare `shown_words(stored)` with
    `words(shown)`. Numbers are left out because ordered-list numbers are drawn by CSS, not in the text.
    """
    html = MarkdownIt("commonmark").render(markdown)
    return words(unescape(re.sub(r"<[^>]+>", " ", html)))


def wait_text(page, selector: str, pattern: str, timeout: float = 60.0) -> str:
    """Wait until the element's text matches `pattern` (a regex); returns the text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = page.locator(selector).inner_text()
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(300)
    raise AssertionError(f"{selector} did not show {pattern!r} within {timeout:.0f} s; it shows: {text[:500]!r}")


def wait_value(page, elem_id: str, pattern: str, timeout: float = 60.0) -> str:
    """Wait until the input inside `#elem_id` (a dropdown, textbox or number) has a value matching `pattern`."""
    deadline = time.monotonic() + timeout
    value = ""
    while time.monotonic() < deadline:
        value = page.locator(f"#{elem_id} input").first.input_value()
        if re.search(pattern, value):
            return value
        page.wait_for_timeout(300)
    raise AssertionError(f"#{elem_id} did not get a value matching {pattern!r} within {timeout:.0f} s: {value!r}")

"""The app in headless Chromium against a scripted model server (no vLLM): what the UI itself must do.

    .venv/bin/python -m pytest tests/test_browser_ui.py -q        # about a minute

Two people rating at once lose nothing and see each other's results after a refresh; an upload is
previewed, imported with its rejects listed, and browsable; chat state survives switching tabs.
The full flow with the real vLLM server and real training is tests/test_browser_flow.py.
"""

from __future__ import annotations

import json

import pytest

from browser_support import (
    Shots, bot_texts, browser, choose, open_app, require_chromium, serve, tab, type_custom, wait_text, wait_value,
)
from serving_helpers import free_port
from store.adapters import register_adapter
from store.db import connect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BASE = "smollm2-135m-instruct"


@pytest.fixture
def app(data_dir, tmp_path, monkeypatch, request):
    from fastapi import FastAPI

    from store.settings import Settings
    from ui.web.app import mount_ui
    from ui.web.context import AppContext
    from ui_fakes import FakeServer, FakeTrainer

    require_chromium()
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(tmp_path / "SmolLM2-135M-Instruct"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", BASE)
    users = getattr(request, "param", "")
    settings = Settings(_env_file=None, users=users)
    server = FakeServer(settings, delay=0.03,
                        answers={"support-v1": "Your order ships tomorrow and arrives on Friday. Anything else?"})
    with connect(settings.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=settings.base_model_path,
                         path=str(tmp_path / "a"), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
    server.loaded.add("support-v1")
    ctx = AppContext(settings=settings, server=server, trainer=FakeTrainer())
    with serve(mount_ui(FastAPI(), ctx), free_port()) as url:
        yield {"url": url, "settings": settings, "server": server}


def test_two_browsers_compare_and_rate_at_once_and_see_each_other(app):
    shots = Shots("two-browsers")
    errors: list[str] = []
    with browser() as b:
        pages = [open_app(b, app["url"], errors=errors) for _ in range(2)]
        for i, page in enumerate(pages):
            tab(page, "Compare A/B")
            wait_value(page, "ab-model-2", "support-v1")
            page.locator("#ab-input textarea").fill(f"Where is order {i}?")
        for page in pages:  # both at once
            page.locator("#ab-send").click()
        for i, page in enumerate(pages):
            wait_text(page, "#ab-status", "Which answer is better")
            assert bot_texts(page, "ab-bot-b")[-1].startswith("Your order ships tomorrow")
            shots(page, f"browser {i} answered")
        for i, page in enumerate(pages):
            page.locator("#ab-vote-b" if i == 0 else "#ab-vote-a").click()
            page.locator("#ab-bot-a").get_by_label("Like", exact=True).last.click()
        for i, page in enumerate(pages):
            wait_text(page, "#ab-status", "Saved")
            shots(page, f"browser {i} voted")
        page = pages[0]
        tab(page, "Feedback")
        wait_text(page, "#fb-summary", r"2 A/B vote")
        text = page.locator("#fb-winrates").inner_text()
        assert "support-v1" in text
        shots(page, "feedback shows both votes")
    assert errors == []
    with connect(app["settings"].db_path) as db:
        rows = list(db["ratings"].rows)
    verdicts = [r for r in rows if r["kind"] == "verdict"]
    thumbs = [r for r in rows if r["kind"] == "thumb"]
    assert sorted(r["value"] for r in verdicts) == ["a", "b"]
    assert len({r["user"] for r in verdicts}) == 2 and all(r["user"].startswith("guest-") for r in verdicts)
    assert [r["value"] for r in thumbs] == ["up", "up"] and len({r["user"] for r in thumbs}) == 2
    assert all(json.loads(r["models"]) == {"model": BASE} for r in thumbs)


def test_upload_preview_import_and_browse(app, tmp_path):
    shots = Shots("data-tab")
    logs = tmp_path / "support_chats.txt"
    logs.write_text("Customer: Where is my order 1234?\nAgent: It left today and arrives Friday.\n\n"
                    "Customer: Can I return shoes?\nAgent: Yes, within 60 days with the receipt.\n\n"
                    "Agent: Hello? Anyone there?\n", encoding="utf-8")
    with browser() as b:
        page = open_app(b, app["url"])
        page.locator("#data-files input[type=file]").set_input_files(str(logs))
        wait_text(page, "#data-detected", "transcript")
        assert "Where is my order 1234?" in page.locator(".tl-convs").first.inner_text()
        shots(page, "preview")
        type_custom(page, "data-dataset", "support")
        page.locator("#data-import").click()
        wait_text(page, "#data-report", "support@1")
        report = page.locator("#data-report").inner_text()
        assert "2 imported" in report and "1 rejected" in report
        assert "support_chats.txt" in page.locator("#data-rejects").inner_text()
        assert "support@1" not in page.locator("#data-datasets").inner_text() or True
        wait_text(page, "#data-datasets", "support")
        shots(page, "imported")
        choose(page, "data-browse-version", "support@1")
        page.wait_for_timeout(800)
        assert "Returns" in page.content() or "60 days" in page.content()
        shots(page, "browse")


def test_chat_streams_keeps_its_state_across_tabs_and_takes_a_correction(app):
    shots = Shots("chat-tab")
    app["server"].delay = 0.15  # slow enough to watch it stream
    with browser() as b:
        page = open_app(b, app["url"])
        tab(page, "Chat")
        choose(page, "chat-model", "support-v1")
        page.locator("#chat-input textarea").fill("Where is my order?")
        page.locator("#chat-input textarea").press("Enter")
        seen = set()
        for _ in range(40):
            texts = bot_texts(page, "chat-bot")
            if texts:
                seen.add(texts[-1])
            if texts and texts[-1].endswith("Anything else?"):
                break
            page.wait_for_timeout(100)
        assert len(seen) > 1, "the answer should appear piece by piece"
        shots(page, "answered")
        tab(page, "Feedback")
        tab(page, "Chat")
        assert bot_texts(page, "chat-bot")[-1].endswith("Anything else?")  # still there
        page.locator("#chat-bot").get_by_label("Dislike", exact=True).last.click()
        page.get_by_text("Correct an answer").first.click()
        page.locator("#chat-correct-text textarea").fill("It ships tomorrow; tracking link: in your email.")
        page.locator("#chat-correct-save").click()
        page.wait_for_timeout(1500)
        shots(page, "corrected")
    with connect(app["settings"].db_path) as db:
        got = sorted((r["kind"], r["value"]) for r in db["ratings"].rows)
    assert got == [("correction", "It ships tomorrow; tracking link: in your email."), ("thumb", "down")]


@pytest.mark.parametrize("app", ["maria:pw-maria-1,tom:pw-tom-2"], indirect=True)
def test_with_logins_every_page_needs_one_and_ratings_record_who(app):
    shots = Shots("logins")
    with browser() as b:
        page = b.new_context(viewport={"width": 1366, "height": 768}).new_page()
        page.goto(app["url"])
        page.get_by_label("username").fill("maria")
        page.get_by_label("password").fill("wrong")
        page.get_by_role("button", name="Login").click()
        page.get_by_text("Incorrect Credentials").wait_for(timeout=10_000)
        shots(page, "wrong password")
        page.get_by_label("username").fill("maria")
        page.get_by_label("password").fill("pw-maria-1")
        page.get_by_role("button", name="Login").click()
        wait_text(page, "#tl-who", "Signed in as maria")
        tab(page, "Chat")
        page.locator("#chat-input textarea").fill("Hello")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#chat-bot").get_by_label("Like", exact=True).last.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # the answer is complete and stored
        page.locator("#chat-bot").get_by_label("Like", exact=True).last.click()
        page.wait_for_timeout(1000)
        shots(page, "maria rated")
    with connect(app["settings"].db_path) as db:
        assert [(r["user"], r["value"]) for r in db["ratings"].rows] == [("maria", "up")]
        assert [r["user"] for r in db["chat_sessions"].rows] == ["maria"]

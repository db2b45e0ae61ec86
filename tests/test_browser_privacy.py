"""Privacy in headless Chromium: a file with personal data is previewed with its redactions highlighted, a pattern
of the team's is added, the import stores placeholders, and an admin erases a customer's data everywhere.

    flock /tmp/tuneloop-heavy.lock nice .venv/bin/python -m pytest tests/test_browser_privacy.py -q

Served with fakes (no vLLM, no training) as tests/test_browser_data_shapes.py does.
"""

from __future__ import annotations

import json

import pytest

from browser_support import Shots, browser, choose, open_app, scripted_app, type_custom, wait_text
from store.datasets import iter_version_conversations
from store.db import connect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EMAIL, PHONE, ORDER = "jo.miller@example.com", "+44 20 7946 0958", "ORD-123456"
CHATS = [
    {"messages": [{"role": "user", "content": f"Hi, the Miller household here: {EMAIL}, call {PHONE} about {ORDER}."},
                  {"role": "assistant", "content": f"Done, a refund note went to {EMAIL}."}]},
    {"messages": [{"role": "user", "content": "Where is my parcel?"},
                  {"role": "assistant", "content": "It arrives tomorrow (order total $49.99)."}]},
]


@pytest.fixture
def app(data_dir, tmp_path, monkeypatch):
    with scripted_app(tmp_path, monkeypatch) as running:
        yield running


def test_preview_redactions_import_them_and_erase_a_customer(app, tmp_path):
    shots = Shots("privacy")
    export = tmp_path / "care.jsonl"
    export.write_text("\n".join(json.dumps(c) for c in CHATS) + "\n", encoding="utf-8")
    with browser() as b:
        page = open_app(b, app["url"])
        page.locator("#data-files input[type=file]").set_input_files(str(export))
        wait_text(page, "#data-detected", "personal data to replace on import: EMAIL 2, PHONE 1")
        marked = page.locator("#data-redact-preview").inner_text()
        assert EMAIL in marked and "EMAIL" in marked and "PHONE" in marked
        assert EMAIL not in page.locator(".tl-convs").first.inner_text()  # the chats show what will be stored
        shots(page, "redactions highlighted")

        page.get_by_role("button", name="Personal data").click()
        patterns = page.locator("#data-redact-patterns textarea")
        patterns.fill("ORDER=ORD-\\d{6}")
        patterns.blur()
        wait_text(page, "#data-detected", "ORDER 1")
        wait_text(page, "#data-redact-preview", "ORDER")
        shots(page, "own pattern added")

        type_custom(page, "data-dataset", "care")
        page.locator("#data-import").click()
        wait_text(page, "#data-report", "care@1")
        assert "personal data replaced: EMAIL 2, ORDER 1, PHONE 1" in page.locator("#data-report").inner_text()
        choose(page, "data-browse-version", "care@1")
        wait_text(page, "#data-browse", "<EMAIL_1>")
        browsed = page.locator("#data-browse").inner_text()
        assert "<ORDER_1>" in browsed and "<PHONE_1>" in browsed and EMAIL not in browsed
        shots(page, "imported and redacted")
        with connect(app["settings"].db_path) as db:
            stored = json.dumps([c["messages"] for c in iter_version_conversations(db, 1)])
        assert EMAIL not in stored and PHONE not in stored and ORDER not in stored

        page.get_by_role("button", name="Erase a customer's data (admins)").click()
        value = page.locator("#data-forget-value textarea, #data-forget-value input").first
        value.fill(EMAIL)
        page.locator("#data-forget-find").click()
        wait_text(page, "#data-forget-note", "Nothing stored holds it")  # it was redacted on import
        page.locator("#data-forget-kind").get_by_text("Any text").click()
        value.fill("Miller household")
        page.locator("#data-forget-find").click()
        wait_text(page, "#data-forget-note", r"1 conversation\(s\), from care@1")
        assert "Would erase" in page.locator("#data-forget-note").inner_text()
        shots(page, "erasure found")
        page.locator("#data-forget-erase").click()
        wait_text(page, "#data-forget-note", "tombstone #1")
        assert "Miller household" not in page.locator("#data-forget-note").inner_text()
        assert value.input_value() == ""
        shots(page, "erased")
    with connect(app["settings"].db_path) as db:
        assert [c["messages"][0]["content"] for c in iter_version_conversations(db, 1)] == ["Where is my parcel?"]

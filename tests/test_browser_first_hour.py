"""What a new user tripped on in the first hour (issue 14), in headless Chromium against a scripted model server.

    flock /tmp/tuneloop-heavy.lock .venv/bin/python -m pytest tests/test_browser_first_hour.py -q   # ~2 minutes

A refused import leaves the form usable; the comparison's status never says "B is ?"; thumbs stay lit
after the next message (Compare and Chat); model links are plain text; an answer cut at the token limit
says so; both chat tabs answer with the adapter's generation defaults; a half-finished comparison and
chat come back after a reload; a guest's name shows and rates.
Screenshots: test-artifacts/browser/first-hour-*/.
"""

from __future__ import annotations

import pytest

from browser_support import Shots, bot_texts, browser, choose, open_app, set_slider, tab, wait_text, wait_value
from serving.generation import store_defaults
from store.db import connect
from test_browser_ui import app  # noqa: F401 - the app fixture (scripted server, support-v1 loaded)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LINKY = "See [our help page](https://help.acme.example/returns) or https://evil.example/x, mail refunds@acme.example."


def error_badges(page, *selectors: str) -> int:
    return sum(page.locator(f"{sel} .error").count() for sel in selectors)


def test_a_refused_import_leaves_the_form_usable(app, tmp_path):
    shots = Shots("first-hour-refused-import")
    logs = tmp_path / "chats.txt"
    logs.write_text("Customer: Where is my order?\nAgent: It ships today.\n", encoding="utf-8")
    with browser() as b:
        page = open_app(b, app["url"])
        page.locator("#data-files input[type=file]").set_input_files(str(logs))
        wait_text(page, "#data-detected", "(?i)transcript")
        page.locator("#data-import").click()
        page.get_by_text("Choose the dataset to import into").first.wait_for(timeout=15_000)
        page.wait_for_timeout(1000)
        shots(page, "refused")
        assert error_badges(page, "#data-dataset", "#data-datasets", "#data-browse-version") == 0
        page.locator("#data-dataset input").fill("support")  # the field the message asks to fill is usable
        page.locator("#data-dataset input").press("Enter")
        page.locator("#data-import").click()
        wait_text(page, "#data-report", "support@1")
        shots(page, "imported after the refusal")


def test_compare_status_never_names_a_missing_side_and_thumbs_stay_lit(app):
    shots = Shots("first-hour-compare-thumbs")
    with browser() as b:
        page = open_app(b, app["url"])
        tab(page, "Compare A/B")
        wait_value(page, "ab-model-2", "support-v1")
        page.wait_for_timeout(1000)
        assert "?" not in page.locator("#ab-status").inner_text()
        for q in ("Where is my order?", "And the refund?"):
            page.locator("#ab-input textarea").fill(q)
            page.locator("#ab-send").click()
            wait_text(page, "#ab-status", "Which answer is better")
            if q.startswith("Where"):
                page.locator("#ab-bot-b").get_by_label("Like", exact=True).first.click()
                page.locator("#ab-bot-b").get_by_label("Liked", exact=True).first.wait_for(timeout=10_000)
        page.wait_for_timeout(800)
        shots(page, "after the second message")
        # The first answer's thumb is still shown as given (it used to vanish with the next message).
        assert page.locator("#ab-bot-b").get_by_label("Liked", exact=True).count() == 1


def test_links_are_plain_text_and_a_cut_answer_says_so(app):
    shots = Shots("first-hour-links-cutoff")
    app["server"].answers["support-v1"] = LINKY
    with browser() as b:
        page = open_app(b, app["url"])
        tab(page, "Chat")
        choose(page, "chat-model", "support-v1")
        page.locator("#chat-input textarea").fill("How do I return shoes?")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#chat-bot").get_by_label("Like", exact=True).last.wait_for(timeout=30_000)
        page.wait_for_timeout(800)
        page.locator("#chat-bot").get_by_label("Like", exact=True).last.click()
        page.locator("#chat-bot").get_by_label("Liked", exact=True).first.wait_for(timeout=10_000)
        answer = page.locator("#chat-bot .message-row.bot-row .message-content").last
        assert answer.locator("a").count() == 0
        text = answer.inner_text()
        assert "https://help.acme.example/returns" in text and "https://evil.example/x" in text
        shots(page, "links as text")
        page.get_by_text("System prompt and sampling").first.click()
        set_slider(page, "chat-max-tokens", 16)
        app["server"].answers["support-v1"] = " ".join(f"word{i}" for i in range(40))
        page.locator("#chat-input textarea").fill("Tell me everything")
        page.locator("#chat-input textarea").press("Enter")
        wait_text(page, "#chat-bot", "cut off at 16 tokens", timeout=30)
        page.wait_for_timeout(800)
        shots(page, "cut off")
        # The first answer's thumb is still shown as given after the next answer (as in Compare).
        assert page.locator("#chat-bot").get_by_label("Liked", exact=True).count() == 1
    with connect(app["settings"].db_path) as db:  # the stored answer is the model's own words, note and all left out
        stored = [r["content"] for r in db["chat_messages"].rows if r["role"] == "assistant"]
    assert stored[0] == LINKY and "cut off" not in stored[1]


def test_a_reload_brings_back_the_comparison_and_the_chat_and_a_guest_name_rates(app):
    shots = Shots("first-hour-reload")
    with browser() as b:
        context = b.new_context(viewport={"width": 1366, "height": 768})
        page = context.new_page()
        page.goto(app["url"])
        wait_text(page, "#tl-who", "ratings")
        page.locator("#tl-name input, #tl-name textarea").first.fill("Maria")
        page.locator("#tl-name-save").click()
        wait_text(page, "#tl-who", "Maria")
        tab(page, "Compare A/B")
        wait_value(page, "ab-model-2", "support-v1")
        page.locator("#ab-input textarea").fill("Where is my order?")
        page.locator("#ab-send").click()
        wait_text(page, "#ab-status", "Which answer is better")
        tab(page, "Chat")
        choose(page, "chat-model", "support-v1")
        page.locator("#chat-input textarea").fill("Can I pay by card?")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#chat-bot").get_by_label("Like", exact=True).last.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.locator("#chat-bot").get_by_label("Like", exact=True).last.click()
        page.wait_for_timeout(800)
        page.reload()
        wait_text(page, "#tl-who", "Maria")
        tab(page, "Compare A/B")
        wait_text(page, "#ab-status", "back as you left it")
        assert bot_texts(page, "ab-bot-b")[-1].startswith("Your order ships tomorrow")
        shots(page, "comparison after reload")
        page.locator("#ab-vote-b").click()  # the half-finished comparison can be finished
        wait_text(page, "#ab-status", "Saved")
        tab(page, "Chat")
        assert bot_texts(page, "chat-bot")[-1].startswith("Your order ships tomorrow")
        assert page.locator("#chat-bot").get_by_label("Liked", exact=True).count() == 1
        wait_value(page, "chat-model", "support-v1")
        shots(page, "chat after reload")
    with connect(app["settings"].db_path) as db:
        users = {(r["kind"], r["user"]) for r in db["ratings"].rows}
    assert users == {("thumb", "Maria (guest)"), ("verdict", "Maria (guest)")}


def test_both_chat_tabs_answer_with_the_adapters_generation_defaults(app):
    # Issue 14, bug 12: the API used vLLM's temperature 1.0 where the app used 0.7; now an adapter's own
    # defaults are what the chat tabs start from (and what the API fills in, tests/test_generation_defaults.py).
    shots = Shots("first-hour-generation-defaults")
    with connect(app["settings"].db_path) as db:
        store_defaults(db, "support-v1", temperature=0.3, max_tokens=128, system_prompt="You are ACME support.")
    server = app["server"]
    with browser() as b:
        page = open_app(b, app["url"])
        tab(page, "Chat")
        choose(page, "chat-model", "support-v1")
        page.get_by_text("System prompt and sampling").first.click()
        wait_value(page, "chat-max-tokens", "^128$")
        assert page.locator("#chat-system textarea").input_value() == "You are ACME support."
        shots(page, "chat with the adapter's defaults")
        page.locator("#chat-input textarea").fill("Where is my order?")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#chat-bot").get_by_label("Like", exact=True).last.wait_for(timeout=30_000)
        model, messages, params = server.requests[-1]
        assert (model, params.temperature, params.max_tokens) == ("support-v1", 0.3, 128)
        assert messages[0] == {"role": "system", "content": "You are ACME support."}

        tab(page, "Compare A/B")
        wait_value(page, "ab-model-2", "support-v1")  # the adapter is Model 2 on a fresh load
        page.locator("#ab-input textarea").fill("And the refund?")
        page.locator("#ab-send").click()
        wait_text(page, "#ab-status", "Which answer is better")
        shots(page, "compare with the adapter's defaults")
    sent = server.requests[-2:]
    assert sorted(m for m, _, _ in sent) == ["smollm2-135m-instruct", "support-v1"]
    assert all((p.temperature, p.max_tokens) == (0.3, 128) for _, _, p in sent)  # both sides, Model 2's defaults


def test_the_feedback_preview_speaks_plainly_and_the_latest_ratings_show_the_question(app):
    # Issue 14's "Messages to reword": no internal codes, "Preview" not "Nothing was built", the closest method
    # with what each needs, how DPO pairs are counted, and the question beside each rated answer.
    from store import chats, ratings

    shots = Shots("first-hour-feedback-preview")
    with connect(app["settings"].db_path) as db:
        for i in range(3):
            ex = chats.record_exchange(db, session_id=None, user="maria", parent_id=None, question=f"Question {i}?",
                                       answer=f"Answer {i}.", model="support-v1", settings={})
            ratings.rate_message(db, kind="thumb", message_id=ex.answer_id, value="up" if i < 2 else "down",
                                 user="maria")
    with browser() as b:
        page = open_app(b, app["url"])
        tab(page, "Feedback")
        wait_text(page, "#fb-recent", "Question 2?")
        wait_value(page, "round-from", "support-v1")
        page.locator("#round-preview").click()
        text = wait_text(page, "#round-report", "Preview: not enough ratings yet")
        page.wait_for_timeout(800)
        shots(page, "preview")
        assert "Nothing was built" not in text and "closest: " in text
        assert "SFT needs" in text and "KTO needs" in text and "DPO needs" in text
        assert "each A/B vote with a winner gives one pair" in text
        page.get_by_text("Ratings left out, and why").click()  # a closed accordion's table is drawn when opened
        left_out = wait_text(page, "#round-left-out", "Why it was left out")
        assert "not_used_by_method" not in left_out

"""The whole loop in headless Chromium against the real app: real vLLM (CPU), real training, real SQLite.

    .venv/bin/python -m pytest tests/test_browser_flow.py -q      # about 6 minutes on 2 cores

One vLLM server for the module (started before the browser, like `tuneloop serve`), the app mounted
on its API on a free port, the real training runner. The tests run in file order:
1. upload a transcript and import it; start a short training run and watch its progress and loss
   chart update; once it finished (and serving hot-loaded the new adapter), A/B chat the base model
   against it and see both answers stream; vote and thumb; then find those ratings in the database
   with the right models and text;
2. start another run, reload the page while it trains and find it still there; cancel it.
Screenshots of every step: test-artifacts/browser/flow-*/.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from browser_support import (
    Shots, bot_texts, browser, choose, fill_number, open_app, require_chromium, serve, shown_words, tab,
    type_custom, wait_text, wait_value, words,
)
from serving_helpers import free_port
from store.db import connect
from store.runs import get_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BASE = "smollm2-135m-instruct"
TRAIN_TIMEOUT_S = 420

# Twelve short support conversations: enough for a held-out share, tiny enough to train in seconds.
TRANSCRIPT = "\n".join(
    f"Customer: {q}\nAgent: {a}\n"
    for q, a in [
        ("Where is my order 1001?", "Order 1001 left our warehouse today and arrives on Friday."),
        ("Can I return shoes after a month?", "Yes: returns are free within 60 days with the receipt."),
        ("How do I reset my password?", "Click 'Forgot password' on the login page; the link is valid 30 minutes."),
        ("Do you ship to Canada?", "Yes, we ship to Canada in 5 to 7 business days."),
        ("My parcel arrived damaged.", "Sorry about that! Send us a photo and we ship a replacement today."),
        ("Can I change my delivery address?", "Yes, until the order ships: go to Orders and pick Edit address."),
        ("When will my refund arrive?", "Refunds reach your card 5 to 7 business days after approval."),
        ("Is there a student discount?", "Yes: 15% off with a valid student email address."),
        ("How do I cancel my subscription?", "Go to Account, Subscription, then Cancel; it ends this month."),
        ("Do you have gift cards?", "Yes, from 10 to 200 euros, sent by email within minutes."),
        ("What are your opening hours?", "Our support team answers every day from 8am to 8pm."),
        ("Can I pay with PayPal?", "Yes, we accept PayPal, cards and bank transfer."),
    ]
) + "\nAgent: Hello? Is anyone there?\n"


@pytest.fixture(scope="module")
def stack(default_model_dir, tmp_path_factory):
    """vLLM through serving.service.Serving, and the web app as `tuneloop serve` builds it."""
    from serving.service import Serving
    from store.settings import Settings
    from ui.web.app import mount_ui
    from ui.web.context import AppContext
    from ui.web.tabs.train import QueueTrainer

    require_chromium()
    data = tmp_path_factory.mktemp("browser-flow")
    s = Settings(_env_file=None, data_dir=data, base_model=str(default_model_dir), base_model_name=BASE,
                 vllm_port=free_port(), port=free_port())
    serving = Serving(s, poll_s=1.0)
    serving.start()  # waits until the base model answers (about a minute on CPU)
    try:
        ctx = AppContext(settings=s, server=serving, trainer=QueueTrainer(s))
        with serve(mount_ui(serving.create_api(), ctx), s.port) as url:
            yield {"settings": s, "serving": serving, "url": url, "tmp": data}
    finally:
        serving.stop()


def chart_lines(page) -> str:
    """The loss chart's drawn lines (vega's SVG paths), as one string: it changes when the chart does."""
    return "|".join(p.get_attribute("d") or "" for p in page.locator("#train-loss-plot g.mark-line path").all())


def wait_run_finished(page, shots, timeout: float = TRAIN_TIMEOUT_S) -> tuple[list[str], list[str]]:
    """Follow the Train tab until the run ends; returns the progress labels and chart states seen."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    charts: list[str] = []
    while time.monotonic() < deadline:
        label = page.locator("#train-progress .tl-progress-label").inner_text()
        chart = chart_lines(page)
        if chart and (not charts or charts[-1] != chart):
            charts.append(chart)
        if not seen or seen[-1] != label:
            seen.append(label)
            if "Step" in label:
                shots(page, f"training {label.split('(')[0]}")
        summary = page.locator("#train-summary").inner_text()
        if "finished" in summary or "failed" in summary or "cancelled" in summary:
            page.wait_for_timeout(2500)  # one more timer tick draws the last points
            charts.append(chart_lines(page))
            return seen, charts
        page.wait_for_timeout(1000)
    raise AssertionError(f"the run did not finish within {timeout} s; progress seen: {seen}")


def test_upload_train_compare_rate(stack, tmp_path):
    shots = Shots("flow-upload-train-compare")
    logs = tmp_path / "support_transcripts.txt"
    logs.write_text(TRANSCRIPT, encoding="utf-8")
    errors: list[str] = []
    with browser() as b:
        page = open_app(b, stack["url"], errors=errors)
        shots(page, "opened")

        # 1. Upload and import.
        page.locator("#data-files input[type=file]").set_input_files(str(logs))
        wait_text(page, "#data-detected", "transcript")
        shots(page, "upload previewed")
        type_custom(page, "data-dataset", "support")
        page.locator("#data-import").click()
        wait_text(page, "#data-report", r"support@1", timeout=120)
        report = page.locator("#data-report").inner_text()
        assert "12 imported" in report and "1 rejected" in report
        shots(page, "imported")

        # 2. A short training run, watched live.
        tab(page, "Train")
        wait_value(page, "train-dataset", "support@1")
        page.locator("#train-preset").get_by_text("quick", exact=True).click()
        page.get_by_text("Settings", exact=True).click()
        wait_value(page, "train-seq-len", "^512$")  # the quick preset's values are in
        fill_number(page, "train-steps", 4)
        fill_number(page, "train-seq-len", 128)
        shots(page, "train form")
        page.locator("#train-start").click()
        wait_text(page, "#train-summary", r"Run \d+", timeout=60)
        seen, charts = wait_run_finished(page, shots)
        summary = page.locator("#train-summary").inner_text()
        shots(page, "training finished")
        assert "finished" in summary, f"{summary}\nlog:\n{page.locator('#train-log').inner_text()}"
        steps = [s for s in seen if s.startswith("Step")]
        assert len(steps) >= 2, f"progress should move while training: {seen}"
        stats = page.locator("#train-stats").inner_text()
        assert "last-step loss" in stats and "held-out loss" in stats and "tokens/s" in stats
        # The chart drew both curves and changed while the run went on.
        lines = chart_lines(page).split("|")
        assert len(lines) == 2 and all("L" in d for d in lines), f"both loss curves should be drawn: {lines}"
        assert len(set(charts)) >= 2, "the loss chart should update while training"
        plot_text = page.locator("#train-loss-plot").inner_text()
        assert "optimizer step" in plot_text and "nats per token" in plot_text
        adapter = summary.split("Made adapter ")[1].split(":")[0].strip()

        # 3. A/B: base vs the new adapter (the default once serving has loaded it), both streaming.
        tab(page, "Compare A/B")
        deadline = time.monotonic() + 120
        while adapter not in page.locator("#ab-model-2 input").input_value():
            assert time.monotonic() < deadline, "the new adapter was not offered for comparison"
            tab(page, "Chat")
            tab(page, "Compare A/B")
        assert BASE in page.locator("#ab-model-1 input").input_value()
        page.locator("#ab-input textarea").fill("Where is my order 1001?")
        page.locator("#ab-send").click()
        both_streaming = False
        grew = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            a, b_ = bot_texts(page, "ab-bot-a"), bot_texts(page, "ab-bot-b")
            status = page.locator("#ab-status").inner_text()
            if a and b_ and a[-1].strip() and b_[-1].strip() and "answering" in status:
                if not both_streaming:
                    shots(page, "both answers streaming")
                both_streaming = True
                grew.add((len(a[-1]), len(b_[-1])))
            if "Which answer is better" in status:
                break
            page.wait_for_timeout(150)
        shots(page, "both answered")
        assert both_streaming, "both answers should be visible while they are still being written"
        assert len(grew) > 1
        answer_a, answer_b = bot_texts(page, "ab-bot-a")[-1], bot_texts(page, "ab-bot-b")[-1]

        # 4. Vote and thumbs.
        page.locator("#ab-vote-b").click()
        wait_text(page, "#ab-status", "Saved: B is better")
        page.locator("#ab-bot-b").get_by_label("Like", exact=True).last.click()
        page.locator("#ab-bot-a").get_by_label("Dislike", exact=True).last.click()
        page.wait_for_timeout(1500)
        shots(page, "voted and thumbed")
        tab(page, "Feedback")
        wait_text(page, "#fb-winrates", adapter)
        shots(page, "feedback")
        tab(page, "Adapters")
        wait_text(page, "#ad-table", adapter)
        shots(page, "adapters")
    assert errors == []

    # 5. The database has it all, with the right models and text.
    with connect(stack["settings"].db_path) as db:
        rows = {r["kind"] + ":" + r["value"]: r for r in db["ratings"].rows}
        assert set(rows) == {"verdict:b", "thumb:up", "thumb:down"}
        verdict = rows["verdict:b"]
        assert json.loads(verdict["models"]) == {"a": BASE, "b": adapter, "blind": False}
        assert json.loads(verdict["context"])[-1] == {"role": "user", "content": "Where is my order 1001?"}
        up, down = rows["thumb:up"], rows["thumb:down"]
        assert json.loads(up["models"]) == {"model": adapter} and json.loads(down["models"]) == {"model": BASE}
        up_msg, down_msg = db["chat_messages"].get(up["message_id"]), db["chat_messages"].get(down["message_id"])
        assert up_msg["model"] == adapter and down_msg["model"] == BASE
        assert shown_words(up_msg["content"]) == words(answer_b)
        assert shown_words(down_msg["content"]) == words(answer_a)
        assert all(r["user"].startswith("guest-") for r in rows.values())


def test_next_round_is_built_and_started_from_the_feedback_tab(stack):
    """Too few ratings are refused on the page; once teammates rated more, preview, build, train, lineage."""
    from store import chats, ratings

    shots = Shots("flow-next-round")
    s = stack["settings"]
    with connect(s.db_path) as db:
        adapter = db.execute("select name from adapters order by id desc limit 1").fetchone()[0]
    with browser() as b:
        page = open_app(b, stack["url"])
        tab(page, "Feedback")
        choose(page, "round-method", "DPO")
        page.locator("#round-build").click()
        text = wait_text(page, "#round-report", "Not built")
        assert "8" in text, text  # says how many pairs DPO needs
        shots(page, "refused")

        with connect(s.db_path) as db:  # teammates rate eight more answers of the adapter
            for i in range(8):
                ex = chats.record_exchange(db, session_id=None, user="maria", parent_id=None,
                                           question=f"Question {i}?", answer=f"Answer {i}.", model=adapter,
                                           settings={})
                ratings.rate_message(db, kind="thumb", message_id=ex.answer_id, value="up" if i < 4 else "down",
                                     user="maria")
        choose(page, "round-method", "Automatic")
        wait_value(page, "round-from", adapter)
        page.locator("#round-preview").click()
        text = wait_text(page, "#round-report", "Preview")
        assert "SFT+KTO" in text and "nothing written" in text
        page.locator("#round-build").click()
        text = wait_text(page, "#round-report", r"Built feedback@1")
        assert f"continuing from {adapter}" in text
        shots(page, "built")
        page.locator("#round-train").click()
        wait_text(page, "#round-started", r"Run \d+ is training on feedback@1")
        shots(page, "round started")

        tab(page, "Train")
        summary = wait_text(page, "#train-summary", r"dataset feedback@1 · from " + adapter, timeout=60)
        run = re.search(r"Run \d+", summary).group(0)  # not split(): Gradio's status text may come first
        page.locator("#train-cancel").click()  # the round itself trains in test_feedback_loop.py
        wait_text(page, "#train-summary", rf"{run}: cancelled", timeout=240)

        tab(page, "Adapters")
        choose(page, "ad-pick", adapter)
        page.locator("#ad-lineage-box").get_by_text("Lineage", exact=False).first.click()
        lineage = wait_text(page, "#ad-lineage", r"Round 1")
        assert "support@1" in lineage and "support_transcripts.txt" in lineage
        shots(page, "lineage")


def test_reloading_during_training_shows_the_run_where_it_is(stack, tmp_path):
    shots = Shots("flow-reload-during-training")
    with browser() as b:
        page = open_app(b, stack["url"])
        tab(page, "Train")
        wait_value(page, "train-dataset", "@")
        choose(page, "train-dataset", "support@1")  # the feedback version made above is offered too
        wait_value(page, "train-method", "SFT: learn")
        page.locator("#train-preset").get_by_text("quick", exact=True).click()
        page.get_by_text("Settings", exact=True).click()
        wait_value(page, "train-seq-len", "^512$")
        fill_number(page, "train-steps", 60)
        fill_number(page, "train-seq-len", 128)
        wait_value(page, "train-steps", "^60$")
        page.locator("#train-start").click()
        text = wait_text(page, "#train-summary", r"Run \d+: training", timeout=60)
        # The text may carry Gradio's "processing | 0.3s" status before the summary: read the id by pattern.
        run_id = int(re.search(r"Run (\d+): training", text).group(1))
        run = f"Run {run_id}"
        with connect(stack["settings"].db_path) as db:
            config = get_run(db, run_id)["config"]
        assert (config["max_steps"], config["max_seq_len"]) == (60, 128), config
        wait_text(page, "#train-progress", r"Step [1-9]\d* of 60", timeout=TRAIN_TIMEOUT_S)
        before = page.locator("#train-progress .tl-progress-label").inner_text()
        shots(page, "training before reload")

        page.reload()
        page.get_by_role("tab", name="Train").wait_for(timeout=60_000)
        tab(page, "Train")
        wait_text(page, "#train-summary", rf"{run}: training", timeout=30)
        after = wait_text(page, "#train-progress .tl-progress-label", r"Step \d+ of 60")
        shots(page, "training after reload")
        assert int(after.split()[1]) >= int(before.split()[1])

        page.locator("#train-cancel").click()
        wait_text(page, "#train-summary", rf"{run}: (cancelling|cancelled)", timeout=30)
        wait_text(page, "#train-summary", rf"{run}: cancelled", timeout=180)
        shots(page, "cancelled")

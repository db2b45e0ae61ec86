"""The Train tab in headless Chromium, with a scripted trainer: what a run will cost before Start, the base
model picker, and the LoRA settings (alpha follows the rank, dropout, target modules); the empty loss chart's
step axis and the adapter name the run will get.

    flock /tmp/tuneloop-heavy.lock .venv/bin/python -m pytest tests/test_browser_train_plan.py -q
"""

from __future__ import annotations

import pytest

from browser_support import (Shots, browser, choose, fill_number, open_app, scripted_app, tab, wait_text,
                             wait_value)
from store.base_models import add_base_model
from training_support import add_dataset, support_conversations

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def app(data_dir, tmp_path, monkeypatch):
    def prepare(db, settings):
        add_dataset(db, "support", support_conversations(12))
        add_base_model(db, name="qwen-small", path=str(tmp_path / "Qwen2.5-0.5B-Instruct"),
                       architecture="Qwen2ForCausalLM", max_len=32768, check={})

    with scripted_app(tmp_path, monkeypatch, prepare) as running:
        yield running


def x_axis(page) -> dict:
    """The loss chart's x axis as vega draws it: its ARIA description ("... values from 0 to 20") and tick labels."""
    return page.evaluate("""() => {
        const axis = document.querySelector('#train-loss-plot [aria-label^="X-axis"]');
        return {label: axis ? axis.getAttribute('aria-label') : '',
                ticks: axis ? [...axis.querySelectorAll('.role-axis-label text')].map(t => t.textContent) : []};
    }""")


def test_estimate_before_start_and_the_base_model_picker(app):
    shots = Shots("train-plan")
    errors: list[str] = []
    with browser() as b:
        page = open_app(b, app["url"], errors=errors)
        tab(page, "Train")
        wait_value(page, "train-dataset", "support@1")
        # The empty loss chart's step axis runs from 0 up, in whole steps (it used to draw 0 to -1).
        axis = x_axis(page)
        assert axis["label"].endswith("values from 0 to 20"), axis
        assert axis["ticks"] and all(t.isdigit() for t in axis["ticks"]), axis
        # The standard preset: 3 epochs of 470 conversations at 8 per step (the scripted trainer's data).
        text = wait_text(page, "#train-estimate", r"177 optimizer steps")
        assert "7 conversations cut at the length limit" in text and "Measure this machine" in text
        assert "Base model:" not in text
        shots(page, "estimate without a speed")

        page.locator("#train-preset").get_by_text("quick", exact=True).click()
        wait_text(page, "#train-estimate", r"118 optimizer steps")  # one epoch at 4 per step
        page.locator("#train-measure").click()
        text = wait_text(page, "#train-estimate", r"time on this machine: about")
        assert "s per step" in text and "3-step probe" in text
        shots(page, "estimate after the probe")

        page.locator("#train-settings").get_by_text("Settings").first.click()
        wait_value(page, "train-alpha", "^16$")  # the quick preset: rank 8, alpha 16
        # The name field shows the name the run's adapter will get (it said "support-v3" with no adapters).
        assert page.locator("#train-name input, #train-name textarea").first.get_attribute("placeholder") == \
            "support-v1"
        assert page.locator("#train-dropout input").input_value() == "0.05"
        assert page.locator("#train-targets textarea, #train-targets input").first.input_value() == "all-linear"
        fill_number(page, "train-steps", 30)
        wait_text(page, "#train-estimate", r"30 optimizer steps")
        fill_number(page, "train-dropout", 0.1)
        page.locator("#train-targets textarea, #train-targets input").first.fill("q_proj, v_proj")

        choose(page, "train-base", "qwen-small")
        text = wait_text(page, "#train-estimate", r"Base model: this server's vLLM serves smollm2-135m-instruct only")
        assert "cannot be loaded for chat here" in text
        page.locator("#train-estimate").scroll_into_view_if_needed()
        shots(page, "another base model picked")

        page.locator("#train-start").click()
        wait_text(page, "#train-summary", r"Run|No runs", timeout=30)
        page.wait_for_timeout(1000)
        shots(page, "started")
    assert errors == []
    started = app["trainer"].started[-1]
    assert started["base_model"] == "qwen-small" and started["max_steps"] == 30
    assert (started["lora_alpha"], started["lora_dropout"], started["target_modules"]) == \
        (16.0, 0.1, ["q_proj", "v_proj"])
    assert any(e["measure"] for e in app["trainer"].estimated)

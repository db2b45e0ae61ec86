"""The Review tab in headless Chromium: answers the bot gave through /v1 are filtered, rated by key, corrected
and added to an eval set; the canary and API key panels work.

    flock /tmp/tuneloop-heavy.lock .venv/bin/python -m pytest tests/test_browser_review.py -q
"""

from __future__ import annotations

import httpx
import pytest

from browser_support import Shots, browser, choose, open_app, require_chromium, serve, tab, type_custom, wait_text
from fake_vllm import FakeVllm
from serving_helpers import fake_adapter, fake_base_model, free_port, make_settings
from store.adapters import register_adapter
from store.db import connect
from store.deployments import change_target

pytestmark = [pytest.mark.browser, pytest.mark.slow]
KEY = "review-key"


@pytest.fixture
def app(tmp_path):
    from serving.api import create_api
    from ui.web.app import mount_ui
    from ui.web.context import AppContext
    from ui_fakes import FakeServer, FakeTrainer

    require_chromium()
    with FakeVllm(free_port()) as upstream:
        s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "models"), api_key=KEY, capture_redact=False)
        with connect(s.db_path) as db:
            for name in ("support-v1", "support-v2"):
                path = fake_adapter(tmp_path / name, s.base_model_path)
                register_adapter(db, name=name, family="support", version=1, base_model=s.base_model_path,
                                 path=str(path), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
                upstream.adapters[name] = str(path)
            change_target(db, "support", "support-v1", action="promote", by="lead")
        api = create_api(s, upstream_url=upstream.url)
        ctx = AppContext(settings=s, server=FakeServer(s), trainer=FakeTrainer())
        with serve(mount_ui(api, ctx), free_port()) as url:
            with httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {KEY}"}) as c:
                for q in ("Where is my parcel?", "Can I get a refund after 40 days?", "Do you ship to Norway?"):
                    r = c.post("/v1/chat/completions", json={"model": "support", "user": "cust-1",
                                                             "messages": [{"role": "system", "content": "Be brief."},
                                                                          {"role": "user", "content": q}]})
                    assert r.status_code == 200
            api.state.traffic.writer.flush()
            yield {"url": url, "settings": s}


def test_review_queue_filter_rate_by_key_correct_and_add_to_eval_set(app):
    shots = Shots("review-tab")
    errors: list[str] = []
    with browser() as b:
        page = open_app(b, app["url"], errors=errors)
        tab(page, "Review")
        wait_text(page, "#rv-counts", r"3 answers waiting")
        shots(page, "queue")
        page.locator("#rv-search textarea, #rv-search input").first.fill("refund")
        page.locator("#rv-filter").click()
        wait_text(page, "#rv-detail", r"1 of 1")
        assert "refund after 40 days" in page.locator("#rv-detail").inner_text()
        assert "Be brief." in page.locator("#rv-detail").inner_text()  # read in context: the system prompt too
        page.locator("#rv-detail").click()  # focus the page, not a field
        page.keyboard.press("d")  # thumbs down by key
        wait_text(page, "#rv-status", "Rated")
        page.locator("#rv-correction textarea").fill("Refunds are possible within 30 days of delivery.")
        page.locator("#rv-correct").click()
        wait_text(page, "#rv-status", "Correction saved")
        type_custom(page, "rv-evalset", "refunds")
        page.locator("#rv-add-eval").click()
        wait_text(page, "#rv-status", r"refunds@1")
        shots(page, "rated-corrected-added")
        # what is waiting now: two; the rated one shows under "Thumbs down"
        page.locator("#rv-search textarea, #rv-search input").first.fill("")
        page.get_by_label("Thumbs down").check()
        page.locator("#rv-filter").click()
        wait_text(page, "#rv-detail", r"1 of 1")
        wait_text(page, "#rv-counts", r"2 answers waiting")
        # the canary panel: start one at 50%
        page.get_by_text("Canary: try a second adapter").click()
        choose(page, "cn-deployment", "support")
        choose(page, "cn-adapter", "support-v2")
        page.locator("#cn-start").click()
        wait_text(page, "#cn-state", r"50%|10%")
        # API keys: create one, shown once
        page.get_by_text("API keys for /v1").click()
        page.locator("#ak-name textarea, #ak-name input").first.fill("widget")
        page.locator("#ak-create").click()
        page.wait_for_function("document.querySelector('#ak-key textarea, #ak-key input').value.startsWith('tlk_')")
        shots(page, "canary-and-keys")
    assert not errors, errors
    from store.evaluations import iter_eval_items, resolve_set
    from store.feedback import rating_rows

    with connect(app["settings"].db_path) as db:
        got = sorted((r["kind"], r["value"]) for r in rating_rows(db))
        assert got == [("correction", "Refunds are possible within 30 days of delivery."), ("thumb", "down")]
        items = list(iter_eval_items(db, resolve_set(db, "refunds").id))
        assert items[0]["reference"] == "Refunds are possible within 30 days of delivery."
        assert items[0]["meta"]["completion_id"].startswith("chatcmpl-tl")
        assert db.execute("select canary_target from deployments").fetchone()[0] == "support-v2"
        assert db.execute("select count(*) from api_keys where name = 'widget'").fetchone()[0] == 1

"""The Review tab's pure parts (ui/web/tabs/review.py): the filter form, the detail view, who manages keys."""

from __future__ import annotations

import pytest

from ui.web.tabs.review import counts_text, detail_html, is_admin, review_filter


def test_filter_form_becomes_a_store_filter():
    f = review_filter("support", "(all)", "2026-03-01", "", "Thumbs down", "0.4", " refund ")
    assert (f.deployment, f.adapter, f.since, f.until, f.rated, f.thumbs_down, f.judge_below, f.text) == \
        ("support", None, "2026-03-01", None, None, True, 0.4, "refund")
    assert review_filter(None, None, "", "", "Waiting (unrated)", "", "").rated is False
    with pytest.raises(ValueError, match="From"):
        review_filter(None, None, "March", "", "All", "", "")
    with pytest.raises(ValueError, match="Judge score"):
        review_filter(None, None, "", "", "All", "low", "")


def test_detail_shows_the_conversation_and_what_is_known():
    capture = {"id": "chatcmpl-tl1", "created_at": "2026-03-01T10:00:00.000+00:00", "model": "support",
               "deployment": "support", "adapter": "v1", "arm": "canary", "api_key": "widget", "user": "c-1",
               "metadata": {"ticket": "T-9"}, "latency_ms": 120.0, "completion_tokens": 12, "status": "partial",
               "judge_score": 0.25,
               "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<b>hi</b>"}],
               "answer": "Hello", "ratings": [{"kind": "thumb", "value": "down", "user": "ana"}]}
    page = detail_html(capture, "2 of 5")
    assert "Be brief." in page and "&lt;b&gt;hi&lt;/b&gt;" in page and "Hello" in page
    assert "canary arm" in page and "T-9" in page and "cut off" in page and "thumbs down by ana" in page
    assert "judge score 0.25" in page
    assert "Nothing to review" in detail_html(None)
    assert "4 answers waiting" in counts_text({"unrated": 4, "per_deployment": {"support": 4}, "thumbs_down": 0,
                                                 "corrected": 0, "partial": 0, "total": 9})


def test_only_admins_manage_keys_when_logins_are_on(tmp_path):
    from store.settings import Settings
    from ui.web.context import AppContext

    class Req:
        def __init__(self, username):
            self.username = username

    open_ctx = AppContext(settings=Settings(_env_file=None, data_dir=tmp_path), server=None)
    assert is_admin(open_ctx, Req(None))
    ctx = AppContext(settings=Settings(_env_file=None, data_dir=tmp_path, users="ana:x,bo:y"), server=None)
    assert is_admin(ctx, Req("ana")) and not is_admin(ctx, Req("bo"))
    ctx = AppContext(settings=Settings(_env_file=None, data_dir=tmp_path, users="ana:x,bo:y", admins="bo"), server=None)
    assert is_admin(ctx, Req("bo")) and not is_admin(ctx, Req("ana")) and not is_admin(ctx, None)

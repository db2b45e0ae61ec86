"""Privacy in the browser's doors, on a real store: the Data tab's redaction controls (same rule as the CLI),
its highlighted preview and import report; corrections typed in the app are redacted before they are stored;
the admin-only erase action.

Run: .venv/bin/python -m pytest tests/test_web_privacy.py -q
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pytest

from store import chats, ratings
from store.datasets import iter_version_conversations
from store.db import connect
from store.redaction import TYPES, RedactionSettings
from ui.web.context import AppContext, is_admin
from ui.web.tabs import data as tab_data
from ui_fakes import NoProgress, scripted_ctx

EMAIL, PHONE, ORDER = "jo.miller@example.com", "+44 20 7946 0958", "ORD-123456"
CHATS = [
    {"messages": [{"role": "user", "content": f"I'm {EMAIL}, call {PHONE} about {ORDER}."},
                  {"role": "assistant", "content": f"Done, a note went to {EMAIL}."}]},
    {"messages": [{"role": "user", "content": "Where is my parcel?"},
                  {"role": "assistant", "content": "It arrives tomorrow (order total $49.99)."}]},
]
NO_OPTS = ["auto", "", "", "", ""]


@pytest.fixture
def ctx(data_dir, tmp_path, monkeypatch):
    return scripted_ctx(tmp_path, monkeypatch)


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "upload" / "care.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(c) for c in CHATS) + "\n", encoding="utf-8")
    return str(path)


def test_the_controls_build_the_clis_settings():
    assert tab_data.redaction_settings(True, list(TYPES), "") == RedactionSettings()
    assert tab_data.redaction_settings(True, [t for t in TYPES if t != "PHONE"], "ORDER=ORD-\\d{6}\n\n") == \
        RedactionSettings.from_options(off=["PHONE"], patterns=["ORDER=ORD-\\d{6}"])
    assert not tab_data.redaction_settings(False, list(TYPES), "").enabled


@pytest.mark.parametrize("pattern", ["ORDER", "ORDER=ORD-(\\d", "order number=x", "EMAIL=x+"])
def test_a_bad_pattern_is_refused_naming_the_field(pattern):
    with pytest.raises(gr.Error, match="Your own patterns"):
        tab_data.redaction_settings(True, list(TYPES), pattern)


def test_preview_shows_the_stored_text_and_highlights_what_is_replaced_by_type(ctx, export):
    settings = tab_data.redaction_settings(True, list(TYPES), "ORDER=ORD-\\d{6}")
    summary, html = tab_data.preview(ctx, [export], *NO_OPTS, redaction=settings)
    assert "personal data to replace on import: EMAIL 2, ORDER 1, PHONE 1 (in 1 conversation(s))" in summary
    assert "&lt;EMAIL_1&gt;" in html and EMAIL not in html
    marked = tab_data.redaction_highlights(ctx, [export], *NO_OPTS, redaction=settings)
    found = [(text, kind) for text, kind in marked if kind]
    assert found == [(EMAIL, "EMAIL"), (PHONE, "PHONE"), (ORDER, "ORDER"), (EMAIL, "EMAIL")]
    assert "".join(t for t, _ in marked).count("Where is my parcel?") == 1  # the whole conversation is shown

    no_phone = tab_data.redaction_settings(True, [t for t in TYPES if t != "PHONE"], "")
    kinds = {k for _, k in tab_data.redaction_highlights(ctx, [export], *NO_OPTS, redaction=no_phone)}
    assert kinds == {None, "EMAIL"}
    off = tab_data.redaction_settings(False, list(TYPES), "")
    assert tab_data.redaction_highlights(ctx, [export], *NO_OPTS, redaction=off) == []
    assert "not** redacted" in tab_data.preview(ctx, [export], *NO_OPTS, redaction=off)[0]


def test_import_uses_the_chosen_settings_and_reports_counts_per_type(ctx, export):
    settings = tab_data.redaction_settings(True, [t for t in TYPES if t != "PHONE"], "ORDER=ORD-\\d{6}")
    report = tab_data.run_import(ctx, [export], "care", *NO_OPTS, progress=NoProgress(), redaction=settings)[0]
    assert "personal data replaced: EMAIL 2, ORDER 1 (in 1 conversation(s))" in report
    assert EMAIL not in report
    with connect(ctx.settings.db_path) as db:
        stored = json.dumps([c["messages"] for c in iter_version_conversations(db, 1)])
    assert EMAIL not in stored and ORDER not in stored and PHONE in stored and "<ORDER_1>" in stored


def test_a_correction_typed_in_the_app_is_stored_redacted_with_its_conversations_numbering(ctx):
    with connect(ctx.settings.db_path) as db:
        ex = chats.record_exchange(db, session_id=None, user="maria", parent_id=None,
                                   question=f"I'm {EMAIL}; also cc <EMAIL_1>", answer="We will write.",
                                   model="m", settings={})
        ratings.rate_message(db, kind="correction", message_id=ex.answer_id, user="maria",
                             value=f"We wrote to {EMAIL} and will call {PHONE}.")
        stored = db.execute("select value from ratings where kind = 'correction'").fetchone()[0]
    # The address is the conversation's second one (<EMAIL_1> was already taken there), so it is <EMAIL_2>.
    assert stored == "We wrote to <EMAIL_2> and will call <PHONE_1>."


def test_the_chat_tabs_correction_box_stores_it_redacted(ctx):
    from ui.web.tabs.chat import save_correction

    with connect(ctx.settings.db_path) as db:
        ex = chats.record_exchange(db, session_id=None, user="maria", parent_id=None, question="hello",
                                   answer="Hi.", model="m", settings={})
    save_correction(ctx, ex.answer_id, f"Write to {EMAIL}.", "anon-1", None)
    with connect(ctx.settings.db_path) as db:
        assert db.execute("select value from ratings").fetchone()[0] == "Write to <EMAIL_1>."


def req(username):
    return SimpleNamespace(username=username)


def test_erasing_a_customer_is_for_admins_and_says_what_went_without_the_value(ctx, export, monkeypatch):
    tab_data.run_import(ctx, [export], "care", *NO_OPTS, progress=NoProgress(), redaction=RedactionSettings.off())
    monkeypatch.setenv("TUNELOOP_USERS", "ana:pw1,bo:pw2")
    from store.settings import Settings

    locked = AppContext(settings=Settings(_env_file=None), server=ctx.server, trainer=ctx.trainer)
    assert is_admin(locked, req("ana")) and not is_admin(locked, req("bo"))
    with pytest.raises(gr.Error, match="Only the administrators"):
        tab_data.forget_customer(ctx, "email", EMAIL, True, admin=False)
    with pytest.raises(gr.Error, match="E-mail address: that is not an e-mail address"):
        tab_data.forget_customer(ctx, "email", "jo.miller", False, admin=True)

    dry = tab_data.forget_customer(ctx, "email", EMAIL, False, admin=True)
    assert "Would erase" in dry and "1 conversation(s), from care@1" in dry and EMAIL not in dry
    with connect(ctx.settings.db_path) as db:
        assert db["conversations"].count == 2  # the dry run changed nothing
    done = tab_data.forget_customer(ctx, "email", EMAIL, True, user="ana", admin=True)
    assert done.startswith("**Erased** (tombstone #1") and EMAIL not in done
    with connect(ctx.settings.db_path) as db:
        left = [c["messages"][0]["content"] for c in iter_version_conversations(db, 1)]
        assert left == ["Where is my parcel?"]
        assert db.execute("select by, kind from erasures").fetchall() == [("ana", "email")]
    assert tab_data.forget_customer(ctx, "email", EMAIL, False, admin=True) == "Nothing stored holds it."

"""Data tab handlers for reply-linked exports, JSON mappings saved as profiles, and search/filter/remove in the
browser of versions, on a real store (no browser; tests/test_browser_data_shapes.py drives the page).

Run: .venv/bin/python -m pytest tests/test_web_data_shapes.py -q
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
import pytest


from ui.web.tabs import data as tab_data
from ui_fakes import NoProgress, scripted_ctx

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
MAPPING = "turns=dialogContent\nspeaker=keys(@)[0]\ntext=values(@)[0]\nappend_assistant=lastAgentTurn"
# format, role map, CSV columns, transcript labels, separator, reply columns, agent accounts, orphans, JSON mapping
NO_OPTS = ["auto", "", "", "", "", "", "", False, ""]


def opts(**given) -> list:
    names = ["fmt", "role_map", "csv_columns", "labels", "separator", "reply_columns", "agents", "orphans", "json_map"]
    return [given.get(n, v) for n, v in zip(names, NO_OPTS)]


@pytest.fixture
def ctx(data_dir, tmp_path, monkeypatch):
    return scripted_ctx(tmp_path, monkeypatch)


def copy(tmp_path, name) -> str:
    return str(shutil.copy(FIXTURES / name, tmp_path / name))


def test_reply_linked_export_previews_with_its_branches(ctx, tmp_path):
    summary, html = tab_data.preview(ctx, [copy(tmp_path, "twitter_care.csv")], *NO_OPTS)
    assert "replies" in summary and "in_response_to_tweet_id" in summary
    assert html.count("my order #4471 arrived") == 2  # two branches share the first tweet


def test_agent_accounts_field_is_named_when_the_side_is_unknown(ctx, tmp_path):
    path = copy(tmp_path, "email_threads.jsonl")
    summary, _ = tab_data.preview(ctx, [path], *NO_OPTS)
    assert "“Agent accounts”" in summary
    summary, html = tab_data.preview(ctx, [path], *opts(agents="support@northwind.example\nbilling@northwind.example"))
    assert "cannot be read" not in summary and "Only on this browser" in html


def test_json_mapping_previews_then_saves_and_loads_as_a_profile(ctx, tmp_path):
    path = copy(tmp_path, "dialogs_mapped.json")
    summary, html = tab_data.preview(ctx, [path], *opts(json_map=MAPPING))
    assert "mapped" in summary and "bridge bundle" in html
    with pytest.raises(gr.Error, match="profile name"):
        tab_data.save_profile(ctx, " / ", *opts(json_map=MAPPING))
    picker = tab_data.save_profile(ctx, "dialog export", *opts(json_map=MAPPING, role_map="Kunde=user"))
    assert picker["value"] == "dialog export" and picker["choices"] == ["dialog export"]
    loaded = tab_data.load_profile(ctx, "dialog export")
    assert loaded == ("auto", "Kunde=user", "", "", "", "", "", False, MAPPING)
    assert tab_data.preview(ctx, [path], *loaded)[1] == html


def test_bad_mapping_is_refused_naming_the_field(ctx, tmp_path):
    with pytest.raises(gr.Error, match="JSON mapping"):
        tab_data.preview(ctx, [copy(tmp_path, "dialogs_mapped.json")], *opts(json_map="turns dialogContent"))
    with pytest.raises(gr.Error, match="not a JMESPath expression"):
        tab_data.preview(ctx, [copy(tmp_path, "dialogs_mapped.json")], *opts(json_map="turns=a[["))


def test_search_filter_and_remove_a_conversation(ctx, tmp_path):
    tab_data.run_import(ctx, [copy(tmp_path, "twitter_care.csv")], "care", *NO_OPTS, progress=NoProgress())
    tab_data.run_import(ctx, [copy(tmp_path, "dialogs_mapped.json")], "care", *opts(json_map=MAPPING),
                        progress=NoProgress())
    sources = tab_data.source_choices(ctx, "care@2")["choices"]
    assert sources == [("All files", ""), ("twitter_care.csv (7)", "twitter_care.csv"),
                       ("dialogs_mapped.json (3)", "dialogs_mapped.json")]
    info, html, _ = tab_data.browse(ctx, "care@2", 1, "DM", "twitter_care.csv")
    assert "1–3 of 3 containing “DM” and from twitter_care.csv" in info
    info, html, _ = tab_data.browse(ctx, "care@2", 1, "", "dialogs_mapped.json")
    assert "1–3 of 3" in info and "PUK" in html
    assert "no conversation containing “zebra”" in tab_data.browse(ctx, "care@2", 1, "zebra")[0]

    with pytest.raises(gr.Error, match="Say why"):
        tab_data.remove_conversation(ctx, "care@2", 3, "")
    conv_id = int(html.split("id ", 1)[1].split(" ", 1)[0])
    note, table, version = tab_data.remove_conversation(ctx, "care@1", conv_id, "test record", "lead")
    assert "care@3" in note and version["value"] == "care@3"
    row = table.iloc[0]
    assert (row["Version"], row["Conversations"], row["Made by"]) == (3, 9, "edit")
    assert row["Made from"] == f"removed id {conv_id} from care@2: test record"
    with pytest.raises(gr.Error, match="not in care@3"):
        tab_data.remove_conversation(ctx, "care@3", conv_id, "again")

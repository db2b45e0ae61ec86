"""CLI tests for reply-linked imports, JSON mappings saved as profiles, and removing a conversation from a dataset:
run the command, then open the database to check what it wrote.

Run: .venv/bin/python -m pytest tests/test_cli_import_shapes.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from store.dataset_edits import search_version
from store.datasets import list_datasets, resolve_version
from store.db import open_db
from store.import_profiles import get_profile
from store.settings import Settings
from ui.cli import app

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
MAP = ["--map", "turns=dialogContent", "--map", "speaker=keys(@)[0]", "--map", "text=values(@)[0]",
       "--map", "append_assistant=lastAgentTurn"]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def db():
    return open_db(Settings().db_path)


def test_twitter_export_imports_its_reply_chains():
    result = invoke("import", FIXTURES / "twitter_care.csv", "-d", "tweets", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["format"], report["imported"], report["rejected"]) == ("replies", 7, 0)
    with db() as d:
        convs = search_version(d, resolve_version(d, "tweets").id)[0]
    assert sum(c["meta"]["thread_start"] == "1001" for c in convs) == 2


def test_email_threads_need_the_agent_accounts_and_say_so():
    result = invoke("import", FIXTURES / "email_threads.jsonl", "-d", "mail")
    assert result.exit_code == 1 and "(option: --agent ACCOUNT)" in result.output
    result = invoke("import", FIXTURES / "email_threads.jsonl", "-d", "mail", "--agent", "support@northwind.example",
                    "--agent", "billing@northwind.example", "--json")
    assert json.loads(result.output)["imported"] == 3


def test_mapping_preview_save_profile_and_reuse(tmp_path):
    result = invoke("import", FIXTURES / "dialogs_mapped.json", *MAP, "--preview")
    assert result.exit_code == 0, result.output
    assert "assistant: Thank you. The top-up went through" in result.output and "nothing imported" in result.output
    with db() as d:
        assert list_datasets(d) == []  # a preview writes nothing

    result = invoke("import", FIXTURES / "dialogs_mapped.json", "-d", "telco", *MAP, "--save-profile", "dialogs")
    assert result.exit_code == 0, result.output
    assert "saved import profile 'dialogs'" in result.output
    with db() as d:
        assert get_profile(d, "dialogs") == {"json_map": {"turns": "dialogContent", "speaker": "keys(@)[0]",
                                                          "text": "values(@)[0]", "append_assistant": "lastAgentTurn"}}

    # Next month's export, same shape: the profile alone reads it.
    nxt = tmp_path / "dialogs_december.json"
    records = json.loads((FIXTURES / "dialogs_mapped.json").read_text())
    records[0]["lastAgentTurn"] = "A different final answer for December."
    nxt.write_text(json.dumps(records))
    result = invoke("import", nxt, "-d", "telco", "--profile", "dialogs", "--json")
    assert json.loads(result.output)["imported"] == 1  # the other two are already in the dataset
    assert "dialogs" in invoke("profiles").output
    assert [p["name"] for p in json.loads(invoke("profiles", "--json").output)] == ["dialogs"]


def test_unknown_profile_lists_the_saved_ones():
    result = invoke("import", FIXTURES / "dialogs_mapped.json", "--profile", "nope")
    assert result.exit_code == 2 and "no profile is saved yet" in result.output


def test_delete_a_conversation_makes_a_new_version_with_the_reason(tmp_path):
    shutil.copy(FIXTURES / "twitter_care.csv", tmp_path / "care.csv")
    invoke("import", tmp_path / "care.csv", "-d", "care")
    shown = json.loads(invoke("datasets", "show", "care", "--search", "porting code", "--json").output)
    assert shown["matches"] == 0
    shown = json.loads(invoke("datasets", "show", "care", "--search", "replacement ships", "--json").output)
    (conv,) = shown["conversations"]
    result = invoke("datasets", "delete", "care", conv["id"], "--reason", "customer asked to be left out")
    assert result.exit_code == 0, result.output
    assert "made care@2" in result.output
    with db() as d:
        v2 = list_datasets(d)[0]["versions"][0]
        assert (v2["ref"], v2["conversations"], v2["note"]) == ("care@2", 6, "customer asked to be left out")
        assert search_version(d, resolve_version(d, "care@1").id)[1] == 7
    assert "(customer asked to be left out)" in invoke("datasets").output
    again = invoke("datasets", "delete", "care", conv["id"], "--reason", "twice")
    assert again.exit_code == 1 and "is not in care@2" in again.output

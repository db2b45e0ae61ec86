"""CLI tests for `tuneloop import` and `tuneloop datasets`: run the command, then read the database.

Run: .venv/bin/python -m pytest tests/test_cli_data.py -q
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from store.db import open_db
from ui.cli import app

runner = CliRunner()

OPENAI_JSONL = "\n".join(json.dumps(r) for r in [
    {"messages": [
        {"role": "system", "content": "You are Acme's support agent."},
        {"role": "user", "content": "I was charged twice for order 1042."},
        {"role": "assistant", "content": "Sorry about that! I've refunded the duplicate charge; it shows in 3-5 days."},
    ]},
    {"messages": [
        {"role": "user", "content": "How do I reset my password?"},
        {"role": "assistant", "content": "Old draft", "weight": 0},
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": "Click 'Forgot password' on the login page and follow the email.", "weight": 1},
    ]},
    {"messages": [{"role": "user", "content": "only a question, no answer"}]},
    {"messages": [
        {"role": "user", "content": "I was charged twice for order 1042."},
    ]},
]) + "\n{\"messages\": [{\"role\": \"user\", \"content\": \"cut off"

TRANSCRIPT = """Customer: My parcel is three days late.
Agent: I'm sorry! Carrier shows a delay at the depot; it arrives tomorrow.
Customer: Thanks.
Agent: You're welcome.

Customer: Hola, ¿puedo cambiar la dirección de envío?
Agent: ¡Claro! Ya la he actualizado.
"""


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_import_reports_counts_and_every_reject_with_its_line(tmp_path, data_dir):
    f = tmp_path / "export.jsonl"
    f.write_text(OPENAI_JSONL)
    result = invoke("import", str(f), "--dataset", "support", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["format"] == "openai"
    assert report["imported"] == 2
    assert report["version"] == "support@1"
    locations = [r["location"] for r in report["rejects"]]
    assert "line 3" in locations and "line 4" in locations and "line 5" in locations
    assert report["rejected"] == len(report["rejects"]) == 3
    assert all(r["reason"] for r in report["rejects"])

    db = open_db(data_dir / "tuneloop.db")
    version = db.execute("select id, conversation_count, kind from dataset_versions").fetchall()
    assert version == [(report["version_id"], 2, "import")]
    stored = [json.loads(r["messages"]) for r in db.query("select messages from conversations order by id")]
    assert stored[0][1]["content"] == "I was charged twice for order 1042."
    # The per-message weight survives: the first draft answer is not trained on.
    weights = [m.get("weight") for m in stored[1] if m["role"] == "assistant"]
    assert weights == [0, 1]
    assert db["imports"].count == 1


def test_second_import_creates_a_new_version_with_lineage(tmp_path, data_dir):
    a, b = tmp_path / "a.jsonl", tmp_path / "calls.txt"
    a.write_text(OPENAI_JSONL)
    b.write_text(TRANSCRIPT, encoding="utf-8")
    assert invoke("import", str(a), "-d", "support").exit_code == 0
    result = invoke("import", str(b), "-d", "support")
    assert result.exit_code == 0, result.output
    assert "transcript" in result.output and "support@2" in result.output
    listing = json.loads(invoke("datasets", "--json").output)
    [ds] = listing
    v2, v1 = ds["versions"]
    assert (v2["conversations"], v1["conversations"]) == (4, 2)
    assert v2["parent"] == "support@1"
    assert v2["sources"][0]["file"] == "calls.txt" and len(v2["sources"][0]["sha256"]) == 64
    shown = invoke("datasets", "show", "support@2", "--limit", "10", "--json")
    contents = [c["messages"][0]["content"] for c in json.loads(shown.output)["conversations"]]
    assert "Hola, ¿puedo cambiar la dirección de envío?" in contents


def test_reimporting_the_same_file_writes_nothing_and_says_why(tmp_path, data_dir):
    f = tmp_path / "a.jsonl"
    f.write_text(OPENAI_JSONL)
    invoke("import", str(f), "-d", "support")
    result = invoke("import", str(f), "-d", "support")
    assert result.exit_code == 1
    assert "already in dataset" in result.output
    db = open_db(data_dir / "tuneloop.db")
    assert db["dataset_versions"].count == 1


def test_unreadable_file_fails_cleanly_and_keeps_existing_data(tmp_path, data_dir):
    good, bad = tmp_path / "a.jsonl", tmp_path / "blob.bin"
    good.write_text(OPENAI_JSONL)
    bad.write_bytes(bytes(range(256)) * 50)
    invoke("import", str(good), "-d", "support")
    result = invoke("import", str(bad), "-d", "support", "--json")
    assert result.exit_code == 1
    assert "error" in json.loads(result.output)
    db = open_db(data_dir / "tuneloop.db")
    assert db["dataset_versions"].count == 1 and db["conversations"].count == 2


def test_format_claimed_wrongly_is_a_clear_error(tmp_path):
    f = tmp_path / "calls.txt"
    f.write_text(TRANSCRIPT)
    result = invoke("import", str(f), "--format", "openai")
    assert result.exit_code == 1
    assert "openai" in result.output.lower()


def test_bad_arguments_are_refused(tmp_path):
    assert invoke("import", str(tmp_path / "missing.jsonl")).exit_code == 2
    f = tmp_path / "a.jsonl"
    f.write_text(OPENAI_JSONL)
    assert invoke("import", str(f), "--format", "xml").exit_code == 2
    assert invoke("import", str(f), "--dataset", "a@b").exit_code == 2
    assert invoke("import", str(f), "--role-map", "nonsense").exit_code == 2


def test_datasets_lists_nothing_helpfully():
    result = invoke("datasets")
    assert result.exit_code == 0 and "no datasets yet" in result.output


def test_a_file_of_no_known_format_names_the_flag_that_fixes_it(tmp_path):
    """The importer names the field (format); the CLI words it as its flag."""
    path = tmp_path / "notes.txt"
    path.write_text("Dear team,\nplease find attached the logs.\n")
    result = runner.invoke(app, ["import", str(path)])
    assert result.exit_code == 1 and "(option: --format)" in result.output

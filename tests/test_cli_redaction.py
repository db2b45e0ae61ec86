"""`tuneloop import` redaction flags: on by default, --no-redact recorded, --redact-off and --redact-pattern
built through RedactionSettings.from_options; a bad type or regex exits 2 naming its flag, and nothing is written.

Run: .venv/bin/python -m pytest tests/test_cli_redaction.py -q
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from store.datasets import iter_version_conversations, version_redaction
from store.db import open_db
from ui.cli import app

runner = CliRunner()
EMAIL, PHONE, ORDER = "jo.miller@example.com", "+44 20 7946 0958", "ORD-123456"
CHATS = [
    {"messages": [{"role": "user", "content": f"I'm {EMAIL}, call {PHONE} about {ORDER}."},
                  {"role": "assistant", "content": f"Done, a note went to {EMAIL}."}]},
    {"messages": [{"role": "user", "content": "Where is my parcel?"},
                  {"role": "assistant", "content": "It arrives tomorrow."}]},
]


@pytest.fixture
def export(tmp_path, data_dir):
    path = tmp_path / "care.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in CHATS) + "\n", encoding="utf-8")
    return path


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def stored(data_dir, version_id: int) -> str:
    db = open_db(data_dir / "tuneloop.db")
    return json.dumps([c["messages"] for c in iter_version_conversations(db, version_id)])


def test_import_redacts_by_default_and_reports_types_with_lines_without_values(export, data_dir):
    result = invoke("import", str(export), "-d", "care")
    assert result.exit_code == 0, result.output
    assert "redacted 3 values in 1 conversations: EMAIL 2, PHONE 1" in result.output
    assert "EMAIL at line 1, message 1; line 1, message 2" in result.output
    assert EMAIL not in result.output and PHONE not in result.output
    text = stored(data_dir, 1)
    assert "<EMAIL_1>" in text and EMAIL not in text and PHONE not in text
    assert ORDER in text  # not a built-in type


def test_redact_off_and_pattern_flags_shape_the_redaction_and_are_recorded(export, data_dir):
    result = invoke("import", str(export), "-d", "care", "--redact-off", "phone", "--redact-pattern",
                    r"ORDER=ORD-\d{6}", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["redaction"]["counts"] == {"EMAIL": 2, "ORDER": 1}
    text = stored(data_dir, report["version_id"])
    assert PHONE in text and ORDER not in text and "<ORDER_1>" in text
    record = version_redaction(open_db(data_dir / "tuneloop.db"), report["version_id"])
    assert record["off"] == ["PHONE"] and record["patterns"] == [r"ORDER=ORD-\d{6}"]


def test_no_redact_imports_as_is_and_the_version_says_so(export, data_dir):
    result = invoke("import", str(export), "-d", "care", "--no-redact")
    assert result.exit_code == 0, result.output
    assert "redaction was turned off" in result.output
    assert EMAIL in stored(data_dir, 1)
    assert version_redaction(open_db(data_dir / "tuneloop.db"), 1)["enabled"] is False


def test_preview_shows_what_the_import_would_store(export):
    result = invoke("import", str(export), "--preview", "--redact-pattern", r"ORDER=ORD-\d{6}")
    assert result.exit_code == 0, result.output
    assert "<EMAIL_1>" in result.output and "<ORDER_1>" in result.output and EMAIL not in result.output


@pytest.mark.parametrize("args, flag", [
    (["--redact-off", "SSN"], "--redact-off"),
    (["--redact-pattern", "ORDER"], "--redact-pattern"),
    (["--redact-pattern", "ORDER=ORD-(\\d"], "--redact-pattern"),
    (["--redact-pattern", "ORDER=x*"], "--redact-pattern"),
    (["--redact-pattern", "EMAIL=foo"], "--redact-pattern"),
])
def test_a_bad_type_or_pattern_exits_2_naming_the_flag_and_writes_nothing(export, data_dir, args, flag):
    result = runner.invoke(app, ["import", str(export), "-d", "care", *args])
    assert result.exit_code == 2
    assert f"error: {flag}:" in result.output
    assert not (data_dir / "tuneloop.db").exists() or open_db(data_dir / "tuneloop.db")["conversations"].count == 0

"""Redaction on import: on by default, before anything is written; the report counts per type with locations
and no values; turning it off is recorded on the dataset version; nothing stored holds a redacted value.

Run: .venv/bin/python -m pytest tests/test_redaction_import.py -q   (about 15 s)
"""

from __future__ import annotations

import json

import pytest

from store.datasets import iter_version_conversations, list_datasets, version_redaction
from store.redaction import RedactionSettings
from training.importers import Conversation, ImportOptions, open_import
from training.ingest import import_file

SECRETS = ["anna.schmidt@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00",
           "Anna Schmidt", "@anna_92", "ORD-123456", "bob@example.org"]
CHATS = [
    {"id": "T-1", "metadata": {"subject": "Refund for anna.schmidt@example.com"}, "messages": [
        {"role": "user", "content": "Hi, my name is Anna Schmidt. Refund card 4111 1111 1111 1111 to "
                                    "DE89 3704 0044 0532 0130 00 please; order ORD-123456."},
        {"role": "assistant", "content": "Done! A confirmation went to anna.schmidt@example.com."},
    ]},
    {"id": "T-2", "messages": [
        {"role": "user", "content": "Call me on +44 20 7946 0958 or DM @anna_92."},
        {"role": "assistant", "content": "Will call +44 20 7946 0958 within the hour (order total $49.99)."},
    ]},
    {"messages": [{"role": "bob@example.org", "content": "hello"}, {"role": "assistant", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "Where is parcel JJD000390012345678?"},
                  {"role": "assistant", "content": "It arrives on 2024-03-15, see https://help.example.com/track."}]},
]


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in CHATS) + "\n", encoding="utf-8")
    return path


def stored_text(db) -> str:
    """Every text value of every table, as one string (what a search of the database would see)."""
    out = []
    for table in db.table_names():
        for row in db[table].rows:
            out += [str(v) for v in row.values() if isinstance(v, str)]
    return "\n".join(out)


def test_import_redacts_by_default_and_stores_no_redacted_value(db, export):
    report = import_file(db, export, "support")
    convs = list(iter_version_conversations(db, report.version_id))
    assert convs[0]["messages"][0]["content"] == (
        "Hi, my name is <PERSON_1>. Refund card <CARD_1> to <IBAN_1> please; order ORD-123456.")
    assert convs[0]["messages"][1]["content"] == "Done! A confirmation went to <EMAIL_1>."
    assert convs[0]["meta"]["subject"] == "Refund for <EMAIL_1>"  # metadata shares the numbering
    assert convs[1]["messages"][1]["content"] == "Will call <PHONE_1> within the hour (order total $49.99)."
    assert convs[2]["messages"][1]["content"] == "It arrives on 2024-03-15, see https://help.example.com/track."
    text = stored_text(db)
    for secret in SECRETS:
        if secret != "ORD-123456":  # not a built-in type: only a custom pattern redacts it
            assert secret not in text, f"a redacted value is stored ({SECRETS.index(secret)})"
    assert version_redaction(db, report.version_id)["enabled"] is True


def test_the_report_counts_per_type_with_locations_and_no_values(db, export):
    report = import_file(db, export, "support")
    r = report.to_json()["redaction"]
    assert r["enabled"] is True
    assert r["counts"] == {"CARD": 1, "EMAIL": 2, "HANDLE": 1, "IBAN": 1, "PERSON": 1, "PHONE": 2}
    assert r["locations"]["PHONE"] == ["line 2, message 1", "line 2, message 2"]
    assert r["locations"]["EMAIL"] == ["line 1, message 2", "line 1"]  # the second is the subject line
    blob = json.dumps(report.to_json()) + json.dumps([json.loads(x) for x, in db.execute("select report from imports")])
    for secret in SECRETS[:-1]:
        assert secret not in blob
    # The reject quoting a role is redacted too (a speaker's address used as a role name).
    assert "bob@example.org" not in blob and any("<EMAIL_1>" in x["reason"] for x in report.rejects)


def test_custom_patterns_and_types_off_apply_and_are_recorded(db, export):
    settings = RedactionSettings.from_options(off=["PHONE"], patterns=["ORDER=ORD-\\d{6}"])
    report = import_file(db, export, "support", redaction=settings)
    convs = list(iter_version_conversations(db, report.version_id))
    assert "order <ORDER_1>." in convs[0]["messages"][0]["content"]
    assert "+44 20 7946 0958" in convs[1]["messages"][0]["content"]
    recorded = version_redaction(db, report.version_id)
    assert recorded["off"] == ["PHONE"] and recorded["patterns"] == ["ORDER=ORD-\\d{6}"]


def test_turning_it_off_is_explicit_and_recorded_on_the_version(db, export):
    report = import_file(db, export, "support", redaction=RedactionSettings.off())
    assert report.redaction["enabled"] is False and report.redaction["counts"] == {}
    convs = list(iter_version_conversations(db, report.version_id))
    assert "anna.schmidt@example.com" in convs[0]["messages"][1]["content"]
    (version,) = list_datasets(db)[0]["versions"]
    assert version["redaction"]["enabled"] is False and version["redaction"]["off"][0] == "EMAIL"


def test_the_stream_redacts_too_for_previews_and_eval_sets(export):
    stream = open_import(export, ImportOptions())
    convs = [i for i in stream if isinstance(i, Conversation)]
    assert all("anna.schmidt@example.com" not in json.dumps(c.messages) for c in convs)
    assert stream.redaction_report.counts["EMAIL"] == 2


def test_redacted_duplicates_collapse(tmp_path, db):
    # Two chats that differ only in the address are one conversation once redacted.
    chats = [{"messages": [{"role": "user", "content": f"I'm {who}, is my parcel late?"},
                           {"role": "assistant", "content": "No, it arrives tomorrow."}]} for who in ("@ann", "@bob")]
    path = tmp_path / "two.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in chats), encoding="utf-8")
    report = import_file(db, path, "support")
    assert (report.imported, report.duplicates) == (1, 1)

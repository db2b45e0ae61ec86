"""Searching a dataset version and removing a conversation as a new version (store/dataset_edits.py).

Run: .venv/bin/python -m pytest tests/test_dataset_edits.py -q
"""

from __future__ import annotations

import pytest

from store.dataset_edits import NotInVersion, remove_conversations, search_version, version_sources
from store.datasets import NewConversation, create_version, list_datasets, resolve_version
from training.importers.model import messages_hash


def conv(q: str, a: str, source: str) -> NewConversation:
    messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return NewConversation(messages_hash(messages), messages, source=source, source_format="openai")


@pytest.fixture
def support(db):
    create_version(db, "support", [conv("Refund for order 12?", "Approved: 3-5 days.", "a.jsonl"),
                                   conv("Reset my password", "Use 'Forgot password' (50% of users miss it).", "a.jsonl")])
    create_version(db, "support", [conv("Where is my REFUND", "It left today.", "b.csv")])
    return resolve_version(db, "support")


def test_search_by_text_is_case_insensitive_and_reads_message_content(db, support):
    rows, total = search_version(db, support.id, text="refund")
    assert total == 2 and [r["messages"][0]["content"] for r in rows] == ["Refund for order 12?", "Where is my REFUND"]
    assert search_version(db, support.id, text="role")[1] == 0  # the JSON keys are not searched
    assert search_version(db, support.id, text="50%")[1] == 1  # LIKE wildcards are taken literally
    assert search_version(db, support.id, text="5_%")[1] == 0


def test_filter_by_source_file_and_page(db, support):
    assert version_sources(db, support.id) == [("a.jsonl", 2), ("b.csv", 1)]
    rows, total = search_version(db, support.id, source="a.jsonl", limit=1, offset=1)
    assert total == 2 and rows[0]["messages"][0]["content"] == "Reset my password"
    assert search_version(db, support.id, text="refund", source="b.csv")[1] == 1


def test_remove_makes_a_new_version_that_says_why(db, support):
    rows, _ = search_version(db, support.id, text="password")
    gone = rows[0]["id"]
    version = remove_conversations(db, "support", [gone], "contains a customer's account e-mail", by="lead")
    assert str(version) == "support@3"
    assert gone not in [r["id"] for r in search_version(db, version.id)[0]]
    assert search_version(db, support.id)[1] == 3  # the version it came from keeps it
    v3 = list_datasets(db)[0]["versions"][0]
    assert (v3["kind"], v3["parent"], v3["conversations"], v3["note"]) == (
        "edit", "support@2", 2, "contains a customer's account e-mail")
    assert v3["sources"] == [{"kind": "removed", "conversations": [gone], "from": "support@2",
                              "reason": "contains a customer's account e-mail", "by": "lead"}]


def test_remove_refuses_unknown_ids_and_blank_reasons(db, support):
    with pytest.raises(NotInVersion, match="#99999 is not in support@2"):
        remove_conversations(db, "support", [99999], "typo")
    with pytest.raises(ValueError, match="say why"):
        remove_conversations(db, "support", [1], "  ")
    assert resolve_version(db, "support").version == 2  # nothing was written

"""Format auto-detection (training/importers/detect.py): each format is picked, with a reason, and a
file that fits none is refused with the list of what was tried.

Run: .venv/bin/python -m pytest tests/test_importers_detect.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.importers import ImportFileError, ImportOptions, detect_format, open_import

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


@pytest.mark.parametrize("name, fmt, reason", [
    ("openai.jsonl", "openai", "first record has 'messages' with 'role'/'content'"),
    ("sharegpt.json", "sharegpt", "first record has 'conversations' with 'from'/'value' (in a JSON array)"),
    ("sharegpt.jsonl", "sharegpt", "first record has 'messages' with the ShareGPT speaker 'human'"),
    ("alpaca.json", "alpaca", "first record has 'instruction' and 'output' (in a JSON array)"),
    ("support_long.csv", "csv", "header has conversation columns (one message per row"),
    ("helpdesk_unsorted.csv", "csv", "semicolon-separated"),
    ("faq.tsv", "csv", "question/answer rows"),
    ("transcripts.txt", "transcript", "line 1 starts with the speaker label 'Customer:'"),
    ("zendesk.json", "zendesk", "top-level 'tickets' list: first record is a ticket with 'comments'"),
    ("intercom.json", "intercom", "top-level 'conversations' list"),
])
def test_auto_detection_picks_each_fixture_format_and_says_why(name, fmt, reason):
    stream = open_import(FIXTURES / name, ImportOptions())
    assert stream.format == fmt
    assert reason in stream.format_reason


def test_marker_separated_transcript_with_custom_labels_is_detected_with_those_options():
    options = ImportOptions(transcript_separator="=== Ticket", transcript_labels={"Kunde": "user"})
    stream = open_import(FIXTURES / "tickets_de.txt", options)
    assert (stream.format, stream.format_reason) == ("transcript", "line 2 starts with the speaker label 'Kunde:'")


@pytest.mark.parametrize("text, fmt", [
    ('{"messages": [{"role": "user", "content": "q"}]}', "openai"),
    ('{"messages": [{"from": "human", "value": "q"}]}', "sharegpt"),
    ('{"conversations": [{"from": "human", "value": "q"}]}', "sharegpt"),
    ('[{"instruction": "i", "input": "", "output": "o"}]', "alpaca"),
    ('{"id": 1, "subject": "s", "comments": []}', "zendesk"),
    ('{"results": [{"id": 1, "requester_id": 3, "comments": []}]}', "zendesk"),
    ('{"type": "conversation", "source": {}, "conversation_parts": []}', "intercom"),
    ('{"type": "conversation.list", "conversations": []}', "intercom"),
    ("question;answer\nq;a\n", "csv"),
    ("[09:12] Agent: Hello, how can I help?\n[09:13] Customer: Hi\n", "transcript"),
])
def test_detect_from_the_first_record(text, fmt):
    assert detect_format(text)[0] == fmt


def test_a_pretty_printed_export_larger_than_the_sample_is_detected_from_its_first_record():
    tickets = [{"id": i, "requester_id": 1, "subject": "s" * 2000,
                "comments": [{"author_id": 1, "public": True, "plain_body": "x" * 5000}] * 20} for i in range(30)]
    assert detect_format(json.dumps({"tickets": tickets}, indent=2))[0] == "zendesk"


def test_nothing_fits_lists_every_format_tried():
    with pytest.raises(ImportFileError) as exc:
        detect_format("Dear team,\nplease find attached the logs.\n")
    message = str(exc.value)
    for fmt in ("openai", "sharegpt", "alpaca", "zendesk", "intercom", "csv", "transcript"):
        assert fmt in message
    assert "line 1 does not start with a speaker label" in message and exc.value.field == "format"
    assert "--" not in message  # no door's flags in a lower layer's words


def test_json_of_an_unknown_shape_names_its_keys():
    with pytest.raises(ImportFileError, match="the first record has 'name', 'email'"):
        detect_format('[{"name": "Jo", "email": "jo@example.com"}]')

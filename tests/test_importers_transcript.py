"""Plain-text transcripts (training/importers/transcript.py): labels, continuation lines, the blank-line
rule, marker separators, and rejects for conversations that do not start with a label.

Run: .venv/bin/python -m pytest tests/test_importers_transcript.py -q
"""

from __future__ import annotations

import pytest

from training.importers import Conversation, ImportOptions, Reject, parse_transcript
from training.importers.pipeline import finish
from training.importers.transcript import label_table, split_label


def run(text: str, **options) -> list:
    opts = ImportOptions(**options)
    return list(finish(parse_transcript(text, opts), opts))


def turns(conv: Conversation) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in conv.messages]


def test_default_labels_any_case():
    [c] = run("SYSTEM: Be brief.\nclient: Hi\nSupport: Hello\nUser: Refund?\nBOT: Done.\n"
              "customer: ok\nAssistant: Bye\n")
    assert [r for r, _ in turns(c)] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]


def test_continuation_lines_belong_to_the_previous_turn():
    [c] = run("Customer: My order\nnever arrived.\nAgent: Sorry!\n  It ships today.\n")
    assert turns(c) == [("user", "My order\nnever arrived."), ("assistant", "Sorry!\n  It ships today.")]
    assert c.location == "lines 1-4"


def test_an_unknown_name_with_a_colon_is_text_not_a_new_turn():
    [c] = run("Customer: I got this error:\nError: card declined\nAgent: Please try another card.\n")
    assert turns(c)[0] == ("user", "I got this error:\nError: card declined")


def test_label_alone_on_its_line_and_no_space_after_the_colon():
    [c] = run("Customer:\nWhere is my parcel?\nAgent:It left the depot today.\n")
    assert turns(c) == [("user", "Where is my parcel?"), ("assistant", "It left the depot today.")]


@pytest.mark.parametrize("line, label", [
    ("[10:02] Agent: hi", "Agent"), ("10:02 Agent: hi", "Agent"), ("(2024-03-01 10:02) Customer: hi", "Customer"),
    ("Agent (Maria): hi", "Agent"), ("  Customer : hi", "Customer"), ("10:02:33 PM - Agent: hi", "Agent"),
])
def test_labels_after_timestamps_and_with_names(line, label):
    role, found, rest = split_label(line, label_table(ImportOptions()))
    assert (found, rest) == (label, "hi")


def test_custom_labels_and_role_map_add_to_the_defaults():
    text = "Kunde: Mein Paket ist nicht da.\nMitarbeiterin: Das tut mir leid!\nCustomer: Thanks\nAgent: Bitte\n"
    [c] = run(text, transcript_labels={"Kunde": "user"}, role_map={"mitarbeiterin": "assistant"})
    assert [r for r, _ in turns(c)] == ["user", "assistant", "user", "assistant"]


def test_without_a_separator_blank_lines_separate_conversations():
    text = "Customer: one\nAgent: answer one\n\n\n\nCustomer: two\nAgent: answer two\n"
    a, b = run(text)
    assert (a.location, b.location) == ("lines 1-2", "lines 6-7")
    assert turns(b) == [("user", "two"), ("assistant", "answer two")]


def test_without_a_separator_a_paragraph_after_a_blank_line_starts_a_conversation_and_is_rejected():
    # The documented rule: without a marker, a turn cannot hold a blank line.
    out = run("Customer: Hi.\n\nI have a second paragraph.\nAgent: Hello\n")
    assert isinstance(out[0], Reject) and "no assistant turn" in out[0].reason
    assert out[1] == Reject("lines 3-4", "line 3: a conversation must start with a speaker label such as "
                                         "'Customer:' or 'Agent:', got 'I have a second paragraph.'")


def test_with_a_separator_blank_lines_are_paragraphs_inside_turns():
    text = ("---\nCustomer: First paragraph.\n\nSecond paragraph.\nAgent: Answer.\n\n\n"
            "---\nCustomer: Next chat\nAgent: Next answer\n---\n")
    a, b = run(text, transcript_separator="---")
    assert turns(a) == [("user", "First paragraph.\n\nSecond paragraph."), ("assistant", "Answer.")]
    assert (a.location, b.location) == ("lines 2-5", "lines 9-10")


def test_separator_line_remainder_is_the_external_id():
    text = "=== ticket #4521\nCustomer: hi\nAgent: hello\n=== ticket 4522 ===\nCustomer: yo\nAgent: hey\n"
    a, b = run(text, transcript_separator="=== ticket")
    assert (a.external_id, b.external_id) == ("4521", "4522")


def test_text_before_the_first_marker_is_a_conversation_too():
    a, b = run("Customer: q\nAgent: a\n###\nCustomer: q2\nAgent: a2\n", transcript_separator="###")
    assert a.external_id is None and turns(b)[0] == ("user", "q2")


def test_a_conversation_not_starting_with_a_label_is_rejected_with_its_line_and_a_hint():
    out = run("Customer: hi\nAgent: hello\n\nMaria: Hola\nAgent: Hi Maria\n")
    assert isinstance(out[0], Conversation)
    assert out[1].location == "lines 4-5"
    assert out[1].reason.startswith("line 4: a conversation must start with a speaker label")
    assert "'Maria' is not a known label: add it as a transcript label, e.g. Maria=user" in out[1].reason


def test_windows_line_endings():
    [c] = run("Customer: hi\r\nAgent: hello\r\n\r\n")
    assert turns(c) == [("user", "hi"), ("assistant", "hello")]

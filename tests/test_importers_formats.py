"""Every format parses its fixture to the expected canonical conversations, plus each format's own rules.

Fixtures: tests/fixtures/imports/ (realistic support conversations; expected.json holds what each
file must import as). Run: .venv/bin/python -m pytest tests/test_importers_formats.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store.redaction import RedactionSettings
from training.importers import (Conversation, ImportOptions, Record, Reject, html_to_text, open_import,
                                parse_alpaca, parse_intercom, parse_openai, parse_sharegpt, parse_zendesk)
from training.importers.pipeline import finish

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
# Files whose format needs options to read: their speaker names are not the defaults.
OPTIONS = {
    "sharegpt.jsonl": ImportOptions(role_map={"customer": "user", "helpdesk_bot": "assistant"}),
    "tickets_de.txt": ImportOptions(transcript_separator="=== Ticket",
                                    transcript_labels={"Kunde": "user", "Mitarbeiter": "assistant"}),
    "email_threads.jsonl": ImportOptions(agent_accounts=("support@northwind.example", "billing@northwind.example")),
    "dialogs_mapped.json": ImportOptions(json_map={"turns": "dialogContent", "speaker": "keys(@)[0]",
                                                   "text": "values(@)[0]", "append_assistant": "lastAgentTurn",
                                                   "id": "dialogId"}),
}
FORMAT_OF = {
    "openai.jsonl": "openai", "sharegpt.json": "sharegpt", "sharegpt.jsonl": "sharegpt", "alpaca.json": "alpaca",
    "support_long.csv": "csv", "helpdesk_unsorted.csv": "csv", "faq.tsv": "csv", "transcripts.txt": "transcript",
    "tickets_de.txt": "transcript", "zendesk.json": "zendesk", "intercom.json": "intercom",
    "twitter_care.csv": "replies", "email_threads.jsonl": "replies", "dialogs_mapped.json": "mapped",
}


def imported(path: Path, options: ImportOptions) -> tuple[list, list]:
    # These check parsing fidelity against expected.json; redaction on import is tests/test_redaction_import.py.
    stream = open_import(path, options, redaction=RedactionSettings.off())
    items = list(stream)
    return [i for i in items if isinstance(i, Conversation)], [i for i in items if not isinstance(i, Conversation)]


def test_every_fixture_has_an_expectation():
    assert sorted(EXPECTED) == sorted(FORMAT_OF)
    assert {p.name for p in FIXTURES.iterdir()} == set(FORMAT_OF) | {"expected.json"}


@pytest.mark.parametrize("name", sorted(FORMAT_OF))
@pytest.mark.parametrize("how", ["auto", "given"])
def test_fixture_imports_as_expected(name, how):
    base = OPTIONS.get(name, ImportOptions())
    options = base if how == "auto" else ImportOptions(**{**base.__dict__, "format": FORMAT_OF[name]})
    convs, others = imported(FIXTURES / name, options)
    assert others == []
    want = EXPECTED[name]
    assert [c.messages for c in convs] == [w["messages"] for w in want]
    assert [(c.location, c.external_id) for c in convs] == [(w["location"], w["external_id"]) for w in want]
    for c, w in zip(convs, want):
        if "meta" in w:
            assert c.meta == w["meta"]
        json.dumps(c.meta)  # the store keeps meta as JSON


def items(records, options=ImportOptions()):
    return list(finish(records, options))


# --- openai -----------------------------------------------------------------------------------------

def test_openai_keeps_weights_and_ignores_tool_definitions():
    line = {"messages": [{"role": "user", "content": "Where is my order?"},
                         {"role": "assistant", "content": "Checking...", "weight": 0},
                         {"role": "user", "content": "Any news?"},
                         {"role": "assistant", "content": "It ships today.", "weight": 1}],
            "tools": [{"type": "function", "function": {"name": "lookup_order"}}], "parallel_tool_calls": False}
    [conv] = items(parse_openai(json.dumps(line) + "\n"))
    assert [m.get("weight") for m in conv.messages] == [None, 0, None, 1]


def test_openai_bad_weight_is_rejected_naming_message_and_field():
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x", "weight": 2}]}
    [rej] = items(parse_openai(json.dumps(line)))
    assert rej == Reject("line 1", "message 2: field 'weight' must be 0 or 1, got 2")


def test_openai_tool_turns_are_rejected_clearly():
    line = {"messages": [{"role": "user", "content": "Track order 5"},
                         {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"shipped\"}"},
                         {"role": "assistant", "content": "It has shipped."}]}
    [rej] = items(parse_openai(json.dumps(line)))
    assert "message 2: tool calls" in rej.reason and "not supported" in rej.reason


def test_openai_text_parts_are_joined_and_other_parts_rejected():
    text_parts = [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]
    parts = {"messages": [{"role": "user", "content": text_parts}, {"role": "assistant", "content": "Hello!"}]}
    [conv] = items(parse_openai(json.dumps(parts)))
    assert conv.messages[0]["content"] == "Hi\nthere"
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                          {"role": "assistant", "content": "Nice photo"}]}
    [rej] = items(parse_openai(json.dumps(image)))
    assert rej.reason == "message 1: content part of type 'image_url' is not supported (only text parts)"


def test_openai_record_without_messages_names_the_keys_it_has():
    [rej] = items(parse_openai('{"prompt": "q", "completion": "a"}'))
    assert rej.location == "line 1" and "field 'messages' is missing (keys: completion, prompt)" in rej.reason


def test_openai_id_and_metadata_are_kept():
    line = {"id": 77, "metadata": {"channel": "chat", "nested": {"x": 1}},
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    [conv] = items(parse_openai(json.dumps(line)))
    assert conv.external_id == "77" and conv.meta == {"channel": "chat"}


# --- sharegpt ---------------------------------------------------------------------------------------

def sharegpt(*turns, **extra):
    return json.dumps({"conversations": [{"from": f, "value": v} for f, v in turns], **extra})


def test_sharegpt_default_speakers():
    text = sharegpt(("system", "Be kind."), ("human", "Refund?"), ("gpt", "Done."), ("user", "Thanks"),
                    ("model", "Welcome"))
    [conv] = items(parse_sharegpt(text))
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_sharegpt_unknown_speaker_is_rejected_with_the_role_map_hint():
    [rej] = items(parse_sharegpt(sharegpt(("human", "hi"), ("agentx", "hello"))))
    assert rej.reason == ("message 2 (turn 2): speaker 'agentx' is not one of system/user/assistant "
                          "(add it to the role map, e.g. agentx=assistant)")


def test_sharegpt_role_map_extends_and_overrides():
    text = sharegpt(("Kunde", "Hallo?"), ("bot", "Guten Tag!"), ("human", "Danke"), ("gpt", "Gern"))
    options = ImportOptions(role_map={"kunde": "user", "BOT": "assistant", "gpt": "assistant"})
    [conv] = items(parse_sharegpt(text, options), options)
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "user", "assistant"]
    # Overriding a default: 'human' read as the assistant gives two assistant turns in a row, merged.
    options = ImportOptions(role_map={"human": "assistant", "gpt": "user"})
    [conv] = items(parse_sharegpt(sharegpt(("gpt", "q"), ("human", "a")), options), options)
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]


def test_sharegpt_role_content_variant_and_top_level_system():
    text = json.dumps({"system": "You are Acme support.",
                       "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
    [conv] = items(parse_sharegpt(text))
    assert conv.messages[0] == {"role": "system", "content": "You are Acme support."}


def test_sharegpt_json_array_and_jsonl_give_the_same_records():
    recs = [json.loads(sharegpt(("human", f"q{i}"), ("gpt", f"a{i}"))) for i in range(3)]
    from_array = items(parse_sharegpt(json.dumps(recs, indent=2)))
    from_lines = items(parse_sharegpt("\n".join(json.dumps(r) for r in recs)))
    assert [c.messages for c in from_array] == [c.messages for c in from_lines]
    assert [c.location for c in from_array] == ["record 1", "record 2", "record 3"]
    assert [c.location for c in from_lines] == ["line 1", "line 2", "line 3"]


def test_sharegpt_turn_that_is_not_an_object_is_rejected():
    [rej] = items(parse_sharegpt('{"conversations": [{"from": "human", "value": "q"}, "oops"]}'))
    assert rej.reason == "turn 2 of 'conversations': expected an object with 'from' and 'value', got a string"


# --- alpaca -----------------------------------------------------------------------------------------

def test_alpaca_instruction_and_input_make_the_user_turn():
    rec = {"instruction": "Translate the customer's message.", "input": "Wo ist mein Paket?",
           "output": "Where is my parcel?", "system": "You translate support tickets."}
    [conv] = items(parse_alpaca(json.dumps([rec])))
    assert conv.messages == [
        {"role": "system", "content": "You translate support tickets."},
        {"role": "user", "content": "Translate the customer's message.\n\nWo ist mein Paket?"},
        {"role": "assistant", "content": "Where is my parcel?"},
    ]


def test_alpaca_history_becomes_earlier_turns():
    rec = {"instruction": "And the shipping cost?", "output": "Shipping is free over $50.",
           "history": [["Do you ship to Canada?", "Yes, in 5-7 days."]]}
    [conv] = items(parse_alpaca(json.dumps(rec)))
    assert [m["content"] for m in conv.messages] == ["Do you ship to Canada?", "Yes, in 5-7 days.",
                                                     "And the shipping cost?", "Shipping is free over $50."]


def test_alpaca_missing_or_empty_output_is_rejected_naming_the_field():
    [rej] = items(parse_alpaca('{"instruction": "Say hi"}'))
    assert "field 'output' is missing" in rej.reason
    [rej] = items(parse_alpaca('{"instruction": "Say hi", "output": "  "}'))
    assert rej.reason == "message 2 (field 'output'): field 'content' is empty"


# --- zendesk ----------------------------------------------------------------------------------------

def ticket(comments, **extra):
    return {"id": 9, "requester_id": 1, "subject": "Help", "comments": comments, **extra}


def comment(author, text, public=True, **extra):
    return {"author_id": author, "public": public, "plain_body": text, **extra}


def test_zendesk_private_comments_are_skipped():
    t = ticket([comment(1, "My card was charged twice."), comment(2, "internal: refund via Stripe", public=False),
                comment(2, "I've refunded the duplicate charge.")])
    [conv] = items(parse_zendesk(json.dumps({"tickets": [t]})))
    assert conv.messages == [{"role": "user", "content": "My card was charged twice."},
                             {"role": "assistant", "content": "I've refunded the duplicate charge."}]
    assert conv.external_id == "9" and conv.meta["subject"] == "Help"


def test_zendesk_html_only_comment_is_stripped_to_text():
    t = ticket([comment(1, "Hi"), {"author_id": 2, "public": True,
                                   "html_body": "<p>Hello &amp; welcome!</p><p>Reset it <a href='x'>here</a>.</p>"}])
    [conv] = items(parse_zendesk(json.dumps(t)))
    assert conv.messages[1]["content"] == "Hello & welcome!\n\nReset it here."


def test_zendesk_without_requester_takes_the_first_author_as_the_customer():
    t = {"id": 3, "comments": [comment(50, "Question"), comment(60, "Answer")]}
    [conv] = items(parse_zendesk(json.dumps(t)))
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]


def test_zendesk_ticket_without_comments_is_rejected():
    [rej] = items(parse_zendesk(json.dumps({"tickets": [{"id": 12, "subject": "x"}]}, indent=2)))
    assert rej.location == "record 1" and rej.reason.startswith("ticket 12: field 'comments' is missing")


def test_zendesk_one_line_page_is_located_by_line_and_record():
    page = {"tickets": [ticket([comment(1, f"q{i}"), comment(2, f"a{i}")], id=i) for i in (7, 8)], "count": 2}
    convs = items(parse_zendesk(json.dumps(page)))
    assert [(c.location, c.external_id) for c in convs] == [("line 1, record 1", "7"), ("line 1, record 2", "8")]


def test_zendesk_jsonl_of_tickets():
    lines = "\n".join(json.dumps(ticket([comment(1, f"q{i}"), comment(2, f"a{i}")], id=i)) for i in range(3))
    convs = items(parse_zendesk(lines))
    assert [(c.location, c.external_id) for c in convs] == [("line 1", "0"), ("line 2", "1"), ("line 3", "2")]


# --- intercom ---------------------------------------------------------------------------------------

def part(kind, author, body):
    return {"part_type": kind, "author": {"type": author}, "body": body}


def test_intercom_notes_and_events_are_skipped_and_html_stripped():
    conv = {"id": 5, "source": {"body": "<p>Where is my order?</p>", "author": {"type": "contact"}},
            "conversation_parts": [part("note", "admin", "<p>VIP customer</p>"), part("assignment", "bot", None),
                                   part("comment", "admin", "<p>It ships <b>today</b>.<br>Tracking: 1Z999</p>"),
                                   part("close", "admin", None)]}
    [c] = items(parse_intercom(json.dumps(conv)))
    assert c.messages == [{"role": "user", "content": "Where is my order?"},
                          {"role": "assistant", "content": "It ships today.\nTracking: 1Z999"}]
    assert c.external_id == "5"


def test_intercom_unknown_author_type_is_rejected():
    conv = {"source": {"body": "hi", "author": {"type": "user"}},
            "conversation_parts": [part("comment", "robot", "hello")]}
    [rej] = items(parse_intercom(json.dumps({"conversations": [conv]})))
    assert rej.reason.startswith("conversation part 1: author type 'robot' is not one of")


def test_intercom_conversation_with_only_notes_is_rejected():
    conv = {"source": {"body": None, "author": {"type": "admin"}}, "conversation_parts": [part("note", "admin", "x")]}
    [rej] = items(parse_intercom(json.dumps(conv)))
    assert "no message with text" in rej.reason


# --- html -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("html, text", [
    ("<p>One</p><p>Two</p>", "One\n\nTwo"),
    ("Line<br>break<br/>s", "Line\nbreak\ns"),
    ("<ul><li>a</li><li>b</li></ul><p>after</p>", "- a\n- b\n\nafter"),
    ("<p>caf&eacute; &lt;3 &#128512;</p>", "café <3 \U0001F600"),
    ("<style>p {color: red}</style><p>shown</p><script>alert(1)</script>", "shown"),
    ("<p>  lots   of\n   space  </p>", "lots of space"),
    ("plain text\nwith its own lines &amp; an entity", "plain text\nwith its own lines & an entity"),
    ("<div><p>unclosed", "unclosed"),
])
def test_html_to_text(html, text):
    assert html_to_text(html) == text


def test_parsers_yield_records_that_validation_has_not_touched():
    [rec] = parse_openai('{"messages": [{"role": "user", "content": " q "}]}')
    assert isinstance(rec, Record) and rec.messages == [{"role": "user", "content": " q "}]

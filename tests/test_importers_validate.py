"""The shared validation rules, one test each (training/importers/validate.py).

Run: .venv/bin/python -m pytest tests/test_importers_validate.py -q
"""

from __future__ import annotations

import pytest

from training.importers import Conversation, ImportOptions, InvalidConversation, validate_messages
from training.importers.model import messages_hash


def u(text):
    return {"role": "user", "content": text}


def a(text, **kw):
    return {"role": "assistant", "content": text, **kw}


def s(text):
    return {"role": "system", "content": text}


def reason(messages, options=ImportOptions()) -> str:
    with pytest.raises(InvalidConversation) as exc:
        validate_messages(messages, options)
    return str(exc.value)


def test_a_valid_conversation_comes_back_canonical_and_without_warnings():
    msgs = [s("You are Acme support."), u("  My order is late.  "), a("Sorry! It ships today.\n")]
    out, warnings = validate_messages(msgs)
    assert out == [s("You are Acme support."), u("My order is late."), a("Sorry! It ships today.")]
    assert warnings == []


def test_unknown_role_is_rejected_naming_the_message():
    assert reason([u("hi"), {"role": "agentx", "content": "hello"}]) == \
        "message 2: role 'agentx' is not one of system/user/assistant"


def test_missing_role_and_missing_content_name_the_field():
    assert reason([u("hi"), {"content": "x"}]) == "message 2: field 'role' is missing"
    assert reason([u("hi"), {"role": "assistant"}]) == "message 2: field 'content' is missing"


def test_non_string_content_is_rejected():
    assert reason([u("hi"), a(["hello"])]) == "message 2: field 'content' must be text, got a list"
    assert reason([u("hi"), a(42)]) == "message 2: field 'content' must be text, got a number"


def test_empty_or_blank_content_is_rejected():
    assert reason([u("hi"), a("   \n ")]) == "message 2: field 'content' is empty"


def test_a_message_that_is_not_an_object_is_rejected():
    assert reason([u("hi"), "hello"]) == "message 2: expected an object with 'role' and 'content', got str"


def test_where_a_message_came_from_is_named_when_the_parser_said():
    msgs = [u("hi"), {"role": "assistant", "content": "", "_at": "line 14"}]
    assert reason(msgs) == "message 2 (line 14): field 'content' is empty"


def test_a_system_message_is_only_allowed_first():
    assert reason([u("hi"), a("hello"), s("be nice")]) == \
        "message 3: a system message may only come first, before any user or assistant turn"


def test_consecutive_system_messages_at_the_start_are_merged():
    out, _ = validate_messages([s("Be kind."), s("Be brief."), u("hi"), a("hello")])
    assert out[0] == s("Be kind.\n\nBe brief.")


def test_consecutive_same_role_turns_are_merged_with_a_blank_line():
    out, _ = validate_messages([u("Hi."), u("My parcel is late."), a("Sorry!"), a("It arrives tomorrow.")])
    assert out == [u("Hi.\n\nMy parcel is late."), a("Sorry!\n\nIt arrives tomorrow.")]


@pytest.mark.parametrize("weights, merged", [
    ((0, 0), 0),        # every part untrained -> untrained
    ((0, 1), 1),        # any part trained -> trained
    ((1, 0), 1),
    ((0, None), 1),     # an absent weight counts as 1
    ((None, None), None),  # no weight anywhere -> no key
])
def test_merged_assistant_weight_is_1_if_any_part_was_trained(weights, merged):
    parts = [a(f"part {i}", **({} if w is None else {"weight": w})) for i, w in enumerate(weights)]
    out, _ = validate_messages([u("q"), *parts])
    assert out[1].get("weight") == merged


def test_weight_must_be_0_or_1():
    assert reason([u("q"), a("x", weight=0.5)]) == "message 2: field 'weight' must be 0 or 1, got 0.5"
    assert reason([u("q"), a("x", weight=True)]) == "message 2: field 'weight' must be 0 or 1, got True"
    assert reason([u("q"), a("x", weight="1")]) == "message 2: field 'weight' must be 0 or 1, got '1'"


def test_weight_is_only_allowed_on_assistant_turns():
    assert reason([{**u("q"), "weight": 0}, a("x")]) == \
        "message 1: field 'weight' is only allowed on assistant turns (this is a user turn)"


def test_weight_is_kept_and_made_an_integer():
    out, _ = validate_messages([u("q"), a("draft", weight=0), u("hello?"), a("answer", weight=1.0)])
    assert [m.get("weight") for m in out] == [None, 0, None, 1]
    assert isinstance(out[3]["weight"], int)


def test_at_least_one_assistant_turn_is_needed():
    assert reason([u("only a question")]) == "the conversation has no assistant turn (nothing to train on)"


def test_an_assistant_turn_must_follow_a_user_turn():
    assert reason([s("sys"), a("Hi! How can I help?")]) == \
        "the conversation has no user turn: an assistant turn must answer a user turn"
    # The assistant speaking only before the user is no better.
    assert "no assistant turn follows a user turn" in reason([a("Hello!"), u("hi")])


def test_an_opening_assistant_greeting_before_the_user_is_kept():
    out, _ = validate_messages([a("Hi, how can I help?"), u("Refund please."), a("Done.")])
    assert [m["role"] for m in out] == ["assistant", "user", "assistant"]


def test_a_trailing_user_turn_is_dropped_with_a_warning():
    out, warnings = validate_messages([u("q"), a("answer"), u("Thanks!"), u("Bye")])
    assert out == [u("q"), a("answer")]
    assert warnings == ["dropped the last user turn (12 characters): no assistant turn answers it"]


def test_empty_and_non_list_messages_are_rejected():
    assert reason([]) == "the conversation has no messages"
    assert reason({"role": "user"}) == "field 'messages' must be a list, got an object"


def test_tool_turns_are_rejected_with_a_clear_reason():
    assert "tool calls (role 'tool') are not supported" in reason([u("q"), {"role": "tool", "content": "{}"}, a("x")])
    assert "tool calls" in reason([u("q"), {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}])


def test_lone_surrogates_are_rejected():
    assert "invalid character" in reason([u("q"), a("broken emoji \ud83d")])


def test_too_many_messages_is_imported_with_a_warning():
    msgs = [m for i in range(3) for m in (u(f"q{i}"), a(f"a{i}"))]
    out, warnings = validate_messages(msgs, ImportOptions(max_messages=4))
    assert len(out) == 6
    assert warnings == ["conversation has 6 messages (more than the maximum 4)"]


def test_too_many_characters_is_imported_with_a_warning():
    out, warnings = validate_messages([u("x" * 30), a("y" * 30)], ImportOptions(max_chars=50))
    assert len(out) == 2
    assert warnings == ["conversation has 60 characters (more than the maximum 50)"]


def test_nothing_to_train_on_is_a_warning():
    _, warnings = validate_messages([u("q"), a("x", weight=0)])
    assert warnings == ["every assistant turn has weight 0: this conversation trains nothing"]


def test_content_hash_covers_roles_contents_and_weights():
    base = [u("q"), a("x")]
    h = Conversation(base, "line 1", None, {}).content_hash
    # Where it came from does not count.
    assert h == Conversation([u("q"), a("x")], "line 9", "other", {"x": 1}).content_hash
    assert h == messages_hash([u("q"), a("x", weight=1)])  # an absent weight means 1
    assert h != messages_hash([u("q"), a("x", weight=0)])
    assert h != messages_hash([s("q"), a("x")])
    assert h != messages_hash([u("q"), a("x ")])
    assert len(h) == 64

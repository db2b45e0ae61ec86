"""Gradio 6 chat history -> OpenAI messages (serving/history.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from serving.history import content_text, to_openai_messages


def test_gradio6_block_content_becomes_plain_strings():
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}], "metadata": None, "options": []},
    ]
    assert to_openai_messages(history, "Be brief.", "How are you?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]


def test_string_content_and_several_text_blocks():
    history = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
               {"role": "assistant", "content": "c"}]
    assert to_openai_messages(history) == [{"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "c"}]


def test_files_components_and_thoughts_are_dropped():
    history = [
        {"role": "user", "content": [{"type": "file", "file": {"path": "/tmp/x.png"}}, {"type": "text", "text": "see"}]},
        {"role": "assistant", "content": "thinking...", "metadata": {"title": "Thought", "status": "done"}},
        {"role": "assistant", "content": [{"type": "component", "component": "image", "value": None,
                                           "constructor_args": {}, "props": {}}]},
        {"role": "assistant", "content": "answer"},
    ]
    assert to_openai_messages(history) == [{"role": "user", "content": "see"},
                                           {"role": "assistant", "content": "answer"}]


def test_system_prompt_argument_replaces_history_system_and_history_system_moves_first():
    history = [{"role": "user", "content": "q"}, {"role": "system", "content": "old"}]
    assert to_openai_messages(history, "new") == [{"role": "system", "content": "new"},
                                                  {"role": "user", "content": "q"}]
    assert to_openai_messages(history) == [{"role": "system", "content": "old"}, {"role": "user", "content": "q"}]


def test_blank_system_prompt_and_empty_messages_are_skipped_and_same_roles_joined():
    history = [{"role": "user", "content": "one"}, {"role": "assistant", "content": ""},
               {"role": "user", "content": [{"type": "text", "text": "two"}]}]
    assert to_openai_messages(history, "   ") == [{"role": "user", "content": "one\n\ntwo"}]


def test_chatmessage_like_objects_are_accepted():
    @dataclass
    class ChatMessage:  # the shape of gr.ChatMessage
        content: object
        role: str = "assistant"
        metadata: dict = field(default_factory=dict)

    msgs = to_openai_messages([ChatMessage("hi", role="user"), ChatMessage([{"type": "text", "text": "yo"}])])
    assert msgs == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


def test_new_message_may_be_a_gradio_multimodal_dict_or_blocks():
    assert to_openai_messages([], None, {"role": "user", "content": [{"type": "text", "text": "x"}]}) == \
        [{"role": "user", "content": "x"}]
    assert content_text({"text": "plain dict block"}) == "plain dict block"


def test_unknown_role_is_named():
    with pytest.raises(ValueError, match="'tool'"):
        to_openai_messages([{"role": "tool", "content": "x"}])

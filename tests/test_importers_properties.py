"""Property tests for the importers: whatever the bytes, only ImportFileError escapes; any JSON shape fed
to any format gives items, never a crash; valid conversations round-trip through OpenAI JSONL.

Run: .venv/bin/python -m pytest tests/test_importers_properties.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.importers import (FORMATS, PARSERS, Conversation, ImportFileError, ImportOptions, ImportWarning,
                                Reject, open_import)
from store.redaction import RedactionSettings
from training.importers.model import messages_hash
from training.importers.pipeline import finish

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ITEM_TYPES = (Conversation, Reject, ImportWarning)

# Pieces of every format, so random text reaches past the first checks of each parser.
FRAGMENTS = [
    "Customer: ", "Agent: ", "System:", "[10:01] ", "---", "===", "\n", "\n\n", "\r\n", ",", ";", "\t", '"', "{", "}",
    "[", "]", '{"messages": [', '{"role": "user", "content": "hi"}', '{"role": "assistant", "content": ',
    '"weight": 0', '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}',
    '{"instruction": "i", "output": "o"}', '{"tickets": [{"id": 1, "requester_id": 1, "comments": [',
    '{"author_id": 1, "public": true, "plain_body": "x"}', '"conversation_parts": [', '"part_type": "comment"',
    "conversation_id,turn,speaker,text\n", "question,answer\n", "1,2,customer,hello\n", "ticket_id;ts;from;body\n",
    "<p>", "</p>", "&amp;", "é", "\ufeff", "\x00", "\udcff",
]
fragmented_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=40).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["messages", "role", "content", "weight", "from", "value", "conversations", "instruction",
                         "input", "output", "system", "history", "tickets", "comments", "author_id", "requester_id",
                         "public", "plain_body", "html_body", "body", "source", "conversation_parts", "part_type",
                         "author", "type", "id", "tags", "metadata"]) | st.text(max_size=5),
        inner, max_size=5),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One directory for the module: hypothesis runs many examples inside one test call."""
    return tmp_path_factory.mktemp("importers")


def import_all(work: Path, data: bytes, fmt: str) -> list:
    path = work / "input"
    path.write_bytes(data)
    try:
        stream = open_import(path, ImportOptions(format=fmt))
        items = list(stream)
    except ImportFileError as exc:
        assert "internal error" not in str(exc)
        return []
    assert all(isinstance(i, ITEM_TYPES) for i in items)
    assert stream.duplicates >= 0
    return items


@FAST
@given(data=st.binary(max_size=3000), fmt=st.sampled_from(("auto",) + FORMATS))
def test_random_bytes_raise_nothing_but_import_file_error(work, data, fmt):
    import_all(work, data, fmt)


@FAST
@given(text=st.one_of(st.text(max_size=300), fragmented_text), fmt=st.sampled_from(("auto",) + FORMATS),
       codec=st.sampled_from(["utf-8", "utf-16", "cp1252"]))
def test_random_text_raises_nothing_but_import_file_error(work, text, fmt, codec):
    import_all(work, text.encode(codec, errors="replace"), fmt)


@FAST
@given(values=st.lists(json_values, max_size=5), layout=st.sampled_from(["jsonl", "array", "pretty"]),
       fmt=st.sampled_from(sorted(set(FORMATS) - {"csv", "transcript"})))
def test_any_json_shape_gives_items_for_every_json_format(values, layout, fmt):
    if layout == "jsonl":
        text = "\n".join(json.dumps(v) for v in values)
    else:
        text = json.dumps(values, indent=2 if layout == "pretty" else None)
    options = ImportOptions()
    items = list(finish(PARSERS[fmt](text, options), options))
    assert all(isinstance(i, ITEM_TYPES) for i in items)
    for conv in (i for i in items if isinstance(i, Conversation)):
        json.dumps(conv.meta)  # the store writes meta as JSON


# Text as a validated conversation holds it: non-empty, no surrounding whitespace.
content = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60).map(str.strip).filter(bool)


@st.composite
def conversations(draw):
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(content)})
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(content)})
        answer = {"role": "assistant", "content": draw(content)}
        weight = draw(st.sampled_from([None, 0, 1]))
        if weight is not None:
            answer["weight"] = weight
        messages.append(answer)
    return messages


@FAST
@given(convs=st.lists(conversations(), min_size=1, max_size=5))
def test_valid_conversations_round_trip_through_openai_jsonl(work, convs):
    path = work / "roundtrip.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs), encoding="utf-8")
    # Parsing is what is tested here: redaction (on by default) has its own property tests.
    stream = open_import(path, ImportOptions(), redaction=RedactionSettings.off())
    items = list(stream)
    # Expected: every conversation exactly as written, less repeats (an explicit weight 1 equals none).
    expected, seen = [], set()
    for c in convs:
        if messages_hash(c) not in seen:
            seen.add(messages_hash(c))
            expected.append(c)
    assert stream.format == "openai"
    assert [i.messages for i in items if isinstance(i, Conversation)] == expected
    assert stream.duplicates == len(convs) - len(expected)
    assert not [i for i in items if isinstance(i, Reject)]

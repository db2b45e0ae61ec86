"""Property-based tests of redact_conversation: idempotent, structure and roles kept, no empty turns,
one placeholder per value and one value per placeholder across a conversation.

Run: .venv/bin/python -m pytest tests/test_redaction_properties.py -q   (about 30 s)
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.redaction import PLACEHOLDER, RedactionSettings, redact_conversation
from store.redaction.placeholders import normalise

ON = RedactionSettings.from_options(patterns=["ORDER=ORD-\\d{6}"])

PII = ["anna@example.com", "Anna@Example.com", "bob.k@mail.example.org", "+44 20 7946 0958", "+442079460958",
       "(415) 555-2671", "06 12 34 56 78", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "203.0.113.54",
       "https://app.example.com/reset?token=a8F3k2LmQ9x7Zp1W4r6T", "@anna_92", "221B Baker Street",
       "Hauptstraße 5, 10115 Berlin", "my name is Anna Schmidt.", "Mr. Johnson", "Regards,\nMaria", "ORD-123456",
       "<EMAIL_1>", "<PERSON_3>"]
FILLER = ["Hi", "thanks", "order", "#4839201", "$49.99", "2024-03-15", "v2.3.14", "E-4021", "the", "parcel", "is",
          "late", ",", ".", "!", "\n", "Danke", "merci", "¿dónde?", "14:30", "SKU AB-4821-X", "Anna", "<", ">", "_1"]
piece = st.one_of(st.sampled_from(PII), st.sampled_from(FILLER), st.text(max_size=8))
content = st.lists(piece, min_size=1, max_size=10).map(" ".join).filter(lambda s: s.strip())
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": content},
                                optional={"weight": st.sampled_from([0, 1])})
conversation = st.lists(message, min_size=1, max_size=5)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(conversation)
def test_redaction_is_idempotent(msgs):
    once, _ = redact_conversation(msgs, ON)
    twice, found = redact_conversation(once, ON)
    assert twice == once and found == []


@PROPS
@given(conversation)
def test_structure_and_roles_are_kept_and_no_turn_is_empty(msgs):
    out, findings = redact_conversation(msgs, ON)
    assert len(out) == len(msgs)
    for before, after in zip(msgs, out):
        assert set(after) == set(before)
        assert {k: v for k, v in after.items() if k != "content"} == {k: v for k, v in before.items() if k != "content"}
        assert isinstance(after["content"], str) and after["content"].strip()
    for f in findings:
        assert 0 <= f.start < f.end <= len(msgs[f.message]["content"])


@PROPS
@given(conversation)
def test_placeholders_are_consistent_across_the_conversation(msgs):
    _, findings = redact_conversation(msgs, ON)
    by_value: dict[tuple[str, str], set[str]] = {}
    by_placeholder: dict[str, set[str]] = {}
    for f in findings:
        value = normalise(f.type, msgs[f.message]["content"][f.start:f.end])
        by_value.setdefault((f.type, value), set()).add(f.placeholder)
        by_placeholder.setdefault(f.placeholder, set()).add(value)
        assert f.placeholder.startswith(f"<{f.type}_") and PLACEHOLDER.fullmatch(f.placeholder)
    assert all(len(p) == 1 for p in by_value.values())
    assert all(len(v) == 1 for v in by_placeholder.values())
    # A placeholder the conversation already held is never given to a new value.
    existing = {m.group() for msg in msgs for m in PLACEHOLDER.finditer(msg["content"])}
    assert not existing & set(by_placeholder)


@PROPS
@given(conversation)
def test_off_returns_an_equal_copy(msgs):
    out, findings = redact_conversation(msgs, RedactionSettings.off())
    assert out == msgs and findings == []

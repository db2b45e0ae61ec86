"""store.redaction: one test per recognizer type, the look-alikes that must stay, settings, custom patterns,
placeholder numbering, and that the engine runs offline without a spaCy model.

Run: .venv/bin/python -m pytest tests/test_redaction_engine.py -q   (about 15 s, most of it importing Presidio)
"""

from __future__ import annotations

import pytest

from store.redaction import (CustomPattern, Placeholders, RedactionReport, RedactionSettings, analyzer_for, find_spans,
                             highlight_segments, parse_pattern, preview, redact_conversation, redact_text)

ON = RedactionSettings()


def kinds(text: str, settings: RedactionSettings = ON) -> list[tuple[str, str]]:
    return [(s.type, text[s.start:s.end]) for s in find_spans(text, settings)]


@pytest.mark.parametrize("text, kind, value", [
    ("write to jo.smith+orders@mail.example.org please", "EMAIL", "jo.smith+orders@mail.example.org"),
    ("Meine Adresse: lukas.müller@example.de.", "EMAIL", "lukas.müller@example.de"),
    ("call me on +44 20 7946 0958 today", "PHONE", "+44 20 7946 0958"),
    ("mobile (415) 555-2671 after six", "PHONE", "(415) 555-2671"),
    ("Rückruf unter +49 30 901820 bitte", "PHONE", "+49 30 901820"),
    ("mon numéro : 06 12 34 56 78", "PHONE", "06 12 34 56 78"),
    ("llámenme al +34 612 34 56 78", "PHONE", "+34 612 34 56 78"),
    ("WhatsApp 0049 151 23456789", "PHONE", "0049 151 23456789"),
    ("card 4111 1111 1111 1111 was charged", "CARD", "4111 1111 1111 1111"),
    ("Amex 3782 822463 10005", "CARD", "3782 822463 10005"),
    ("IBAN DE89 3704 0044 0532 0130 00 bitte", "IBAN", "DE89 3704 0044 0532 0130 00"),
    ("to GB82WEST12345698765432 please", "IBAN", "GB82WEST12345698765432"),
    ("from 203.0.113.54 at night", "IP", "203.0.113.54"),
    ("ip 2001:db8:85a3::8a2e:370:7334 again", "IP", "2001:db8:85a3::8a2e:370:7334"),
    ("reset: https://app.example.com/reset-password?token=a8F3k2LmQ9x7Zp1W4r6T", "URL",
     "https://app.example.com/reset-password?token=a8F3k2LmQ9x7Zp1W4r6T"),
    ("see https://portal.example.com/users/annaschmidt/settings.", "URL",
     "https://portal.example.com/users/annaschmidt/settings"),
    ("my profile https://www.instagram.com/anna_schmidt", "URL", "https://www.instagram.com/anna_schmidt"),
    ("DM me, I'm @anna_92 there", "HANDLE", "@anna_92"),
    ("ship it to 221B Baker Street, Apt 4 please", "ADDRESS", "221B Baker Street, Apt 4"),
    ("Lieferung an Hauptstraße 5a, 10115 Berlin", "ADDRESS", "Hauptstraße 5a, 10115 Berlin"),
    ("livraison au 12 rue de la Paix, 75002 Paris", "ADDRESS", "12 rue de la Paix, 75002 Paris"),
    ("envío a Calle Mayor 12, 28013 Madrid", "ADDRESS", "Calle Mayor 12, 28013 Madrid"),
    ("London SW1A 1AA", "ADDRESS", "SW1A 1AA"),
    ("Hi, my name is Anna Schmidt.", "PERSON", "Anna Schmidt"),
    ("Ich heiße Jonas Weber und habe eine Frage", "PERSON", "Jonas Weber"),
    ("Bonjour, je m'appelle Claire Dubois.", "PERSON", "Claire Dubois"),
    ("Hola, me llamo Lucía García.", "PERSON", "Lucía García"),
    ("Mr. Johnson will sign for it", "PERSON", "Johnson"),
    ("Thanks for the help.\n\nKind regards,\nMaria Gonzalez", "PERSON", "Maria Gonzalez"),
])
def test_each_type_is_found(text, kind, value):
    assert (kind, value) in kinds(text)


@pytest.mark.parametrize("text", [
    "Your order total is $1,249.99 (incl. 49,99 € shipping) and € 1.299,00 for the TV.",
    "It was delivered on 2024-03-15, or 15.03.2024, or 03/15/2025 at 14:30.",
    "The SKU AB-4821-X and model XR-2000 are in stock; EAN 4006381333931.",
    "Tracking 1Z999AA10123456784, JJD000390012345678, 9400100000000000000000.",
    "Error 0x80070005, E-4021, HTTP 503 and ERR_502 after the update.",
    "Update to v2.3.14 or version 10.2.0.1 (build 48213).",
    "Order #4839201 and order number 58210394 are both on invoice 2024-0311.",
    "Read https://help.example-shop.com/articles/returns or www.example-shop.com/help/warranty.",
    "Hi there, thanks a lot! Best, Support Team",
    "Ich bin Kunde seit 2019. Mit freundlichen Grüßen\nIhr Kundenservice",
    "I'm sorry to hear that, I'm happy to help.",
])
def test_look_alikes_are_kept(text):
    assert kinds(text) == []


def test_placeholders_are_consistent_within_a_conversation():
    msgs = [
        {"role": "user", "content": "I'm Anna, write to anna@example.com or call +44 20 7946 0958."},
        {"role": "assistant", "content": "Sent to anna@example.com; a second copy to bob@example.com."},
        {"role": "user", "content": "Thanks. ANNA@example.com is right, and +442079460958 too."},
    ]
    out, findings = redact_conversation(msgs, ON)
    assert out[0]["content"] == "I'm <PERSON_1>, write to <EMAIL_1> or call <PHONE_1>."
    assert out[1]["content"] == "Sent to <EMAIL_1>; a second copy to <EMAIL_2>."
    assert out[2]["content"] == "Thanks. <EMAIL_1> is right, and <PHONE_1> too."
    assert [f.message for f in findings] == [0, 0, 0, 1, 1, 2, 2]
    assert all(f.line == 1 for f in findings)


def test_redacting_twice_changes_nothing_and_new_values_get_new_numbers():
    once, _ = redact_text("mail a@example.com and b@example.com", ON)
    assert redact_text(once, ON) == (once, [])
    # A value added to already redacted text never reuses a number in use.
    again, found = redact_text(once + " or c@example.com", ON)
    assert again == "mail <EMAIL_1> and <EMAIL_2> or <EMAIL_3>" and [f.placeholder for f in found] == ["<EMAIL_3>"]


def test_roles_extra_keys_and_blocks_are_kept():
    msgs = [{"role": "system", "content": "Be kind."},
            {"role": "user", "content": [{"type": "text", "text": "I'm @jo_99"}, {"type": "image", "url": "x"}]},
            {"role": "assistant", "content": "Hi there!", "weight": 0}]
    out, findings = redact_conversation(msgs, ON)
    assert out[0] == msgs[0] and out[2] == {"role": "assistant", "content": "Hi there!", "weight": 0}
    assert out[1]["content"] == [{"type": "text", "text": "I'm <HANDLE_1>"}, {"type": "image", "url": "x"}]
    assert msgs[1]["content"][0]["text"] == "I'm @jo_99"  # the input is not changed
    assert [(f.type, f.message) for f in findings] == [("HANDLE", 1)]


def test_custom_patterns_types_off_and_allow_list():
    settings = RedactionSettings.from_options(off=["phone"], patterns=["ORDER=ORD-\\d{6}"],
                                              allow=["support@acme.example"])
    text = "Order ORD-123456: write support@acme.example or jo@example.com, call +44 20 7946 0958"
    out, findings = redact_text(text, settings)
    assert out == "Order <ORDER_1>: write support@acme.example or <EMAIL_1>, call +44 20 7946 0958"
    assert [f.type for f in findings] == ["ORDER", "EMAIL"]
    assert settings.to_record() == {"enabled": True, "types": [t for t in settings.labels if t != "ORDER"],
                                    "off": ["PHONE"], "patterns": ["ORDER=ORD-\\d{6}"], "allowed_values": 1}


def test_a_custom_pattern_wins_over_a_built_in_of_the_same_length():
    settings = RedactionSettings(patterns=(CustomPattern("CUSTOMER", r"\b\d{3} \d{3} \d{4}\b"),))
    assert kinds("customer 415 555 2671", settings) == [("CUSTOMER", "415 555 2671")]


@pytest.mark.parametrize("spec, problem", [
    ("ORDER", "LABEL=REGEX"), ("order id=\\d+", "capital letters"), ("EMAIL=x", "built-in"),
    ("ORDER=(", "does not compile"), ("ORDER=a*", "matches empty"),
])
def test_bad_patterns_are_refused_with_a_reason(spec, problem):
    with pytest.raises(ValueError, match=problem):
        parse_pattern(spec)


def test_unknown_types_are_refused():
    with pytest.raises(ValueError, match="unknown redaction type"):
        RedactionSettings.from_options(off=["NAMES"])


def test_off_redacts_nothing_and_is_recorded():
    text = "jo@example.com"
    assert redact_text(text, RedactionSettings.off()) == (text, [])
    assert RedactionSettings.off().to_record()["enabled"] is False


def test_preview_gives_spans_for_highlighting_and_changes_nothing():
    text = "Mail jo@example.com now"
    findings = preview(text)
    assert [(f.type, f.start, f.end, f.placeholder) for f in findings] == [("EMAIL", 5, 19, "<EMAIL_1>")]
    assert highlight_segments(text, findings) == [("Mail ", None), ("jo@example.com", "EMAIL"), (" now", None)]
    conv = preview([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "call +44 20 7946 0958"}])
    assert [(f.type, f.message) for f in conv] == [("PHONE", 1)]


def test_report_counts_with_locations_and_never_values():
    report = RedactionReport()
    _, findings = redact_conversation([{"role": "user", "content": "jo@example.com, +44 20 7946 0958"}], ON)
    report.add(findings, "line 7")
    data = report.to_json()
    assert data["counts"] == {"EMAIL": 1, "PHONE": 1} and data["locations"]["EMAIL"] == ["line 7, message 1"]
    assert "jo@example.com" not in repr(data) and "7946" not in repr(data)
    assert report.summary() == "redacted 2 values in 1 conversations: EMAIL 1, PHONE 1"


def test_placeholders_normalise_grouping_and_case():
    names = Placeholders()
    assert names.name("IBAN", "DE89 3704 0044 0532 0130 00") == names.name("IBAN", "de89370400440532013000")
    assert names.name("EMAIL", "Jo@Example.com") == names.name("EMAIL", "jo@example.com") == "<EMAIL_1>"


def test_the_engine_is_offline_cached_and_has_no_spacy_model():
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    engine = analyzer_for(ON)
    assert isinstance(engine.nlp_engine, NoOpNlpEngine)
    assert analyzer_for(RedactionSettings()) is engine  # equal settings share one engine

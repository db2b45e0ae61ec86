"""Redaction of what an import yields, before anything is written: conversations (messages, metadata, external
id) with consistent placeholders, and the text of rejects and warnings, which can quote a speaker's name.

The engine is store.redaction (shared with captured traffic and ratings); this module only applies it to
the importers' types. Tested in tests/test_redaction_import.py.
"""

from __future__ import annotations

from dataclasses import replace

from store.redaction import Finding, Placeholders, RedactionSettings, redact_conversation, redact_text, redact_value
from training.importers.model import Conversation, ImportWarning, Reject


def redact_conversation_item(conv: Conversation, settings: RedactionSettings) -> tuple[Conversation, list[Finding]]:
    """`conv` with personal data replaced in its messages, metadata and external id, one numbering for all."""
    if not settings.enabled:
        return conv, []
    names = Placeholders()
    messages, findings = redact_conversation(conv.messages, settings, placeholders=names)
    meta, meta_findings = redact_value(conv.meta, settings, names)
    external_id, id_findings = (redact_text(conv.external_id, settings, placeholders=names)
                                if conv.external_id else (conv.external_id, []))
    # Metadata and id findings carry no message index: the report shows them at the record's location.
    return replace(conv, messages=messages, meta=meta, external_id=external_id), findings + meta_findings + id_findings


def redact_notice(item: Reject | ImportWarning, settings: RedactionSettings) -> Reject | ImportWarning:
    """A reject or warning whose text is redacted (reasons may quote a role such as 'anna@example.com')."""
    if not settings.enabled:
        return item
    if isinstance(item, Reject):
        return replace(item, reason=redact_text(item.reason, settings)[0])
    return replace(item, message=redact_text(item.message, settings)[0])

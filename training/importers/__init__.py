"""Conversation importers: helpdesk and fine-tuning exports -> validated canonical conversations, streamed.

    stream = open_import(Path("tickets.json"), ImportOptions())   # format auto-detected
    for item in stream:   # Conversation | Reject | ImportWarning, read lazily
        ...
    stream.format, stream.format_reason, stream.encoding, stream.duplicates, stream.repeats

Canonical form: {"messages": [{"role": "system"|"user"|"assistant", "content": str, "weight": 0|1}]},
weight only on assistant turns (0 = do not train on it). One pure parser per format (parse_openai ...
parse_intercom, parse_replies for reply chains, parse_mapped for JSON read through a mapping) takes
text and yields raw Records or Rejects; validate_messages is shared by all.
Run the tests: .venv/bin/python -m pytest tests/test_importers_*.py -q
"""

from training.importers.alpaca import parse_alpaca
from training.importers.csv_ import parse_csv
from training.importers.detect import detect_format, guess_format
from training.importers.html_text import html_to_text
from training.importers.intercom import parse_intercom
from training.importers.mapped import parse_mapped
from training.importers.model import (FORMATS, ROLES, Conversation, ImportFileError, ImportOptions, ImportWarning,
                                      Record, Reject, parse_pairs)
from training.importers.openai import parse_openai
from training.importers.pipeline import PARSERS, ImportStream, finish, open_import
from training.importers.replies import parse_replies
from training.importers.sharegpt import parse_sharegpt
from training.importers.transcript import parse_transcript
from training.importers.validate import InvalidConversation, validate_messages
from training.importers.zendesk import parse_zendesk

__all__ = [
    "FORMATS", "ROLES", "Conversation", "ImportFileError", "ImportOptions", "ImportStream", "ImportWarning",
    "InvalidConversation", "PARSERS", "Record", "Reject", "detect_format", "finish", "guess_format", "parse_pairs",
    "html_to_text", "open_import", "parse_alpaca", "parse_csv", "parse_intercom", "parse_openai",
    "parse_sharegpt", "parse_transcript", "parse_zendesk", "validate_messages", "parse_replies", "parse_mapped",
]

"""ShareGPT JSON or JSONL -> records: {"conversations": [{"from": ..., "value": ...}, ...]}. Pure.

Also read: the "messages" key and the role/content spelling of turns; a top-level "system" string
(prepended as the system message). Speakers human/user -> user, gpt/assistant/model/chatgpt/bard ->
assistant, system -> system; the role map adds or overrides names (case-insensitive). A JSON array is
streamed with ijson, never loaded whole.
Tested in tests/test_importers_formats.py.
"""

from __future__ import annotations

from typing import Iterator

from training.importers.decode import TextSource
from training.importers.fields import convert_records, id_of, pick_meta, require_object
from training.importers.jsonrecords import iter_json_records, json_type
from training.importers.model import ImportOptions, Record, Reject
from training.importers.speakers import SHAREGPT_SPEAKERS, role_of, speaker_table, unknown_speaker

_META_KEYS = ("source", "category", "language", "lang", "tags", "model")


def converter(options: ImportOptions):
    """A convert(location, obj) for these options (their role map)."""
    table = speaker_table(SHAREGPT_SPEAKERS, options.role_map)

    def convert(location: str, obj: object) -> Record | Reject:
        bad = require_object(location, obj, "a conversation")
        if bad:
            return bad
        key = "conversations" if "conversations" in obj else "messages" if "messages" in obj else None
        if key is None:
            return Reject(location, "field 'conversations' is missing (ShareGPT records look like "
                                    '{"conversations": [{"from": "human", "value": ...}, ...]})')
        turns = obj[key]
        if not isinstance(turns, list):
            return Reject(location, f"field {key!r} must be a list, got {json_type(turns)}")
        messages = []
        system = obj.get("system")
        if isinstance(system, str) and system.strip():
            messages.append({"role": "system", "content": system, "_at": "field 'system'"})
        for i, turn in enumerate(turns, 1):
            if not isinstance(turn, dict):
                return Reject(location, f"turn {i} of {key!r}: expected an object with 'from' and 'value', "
                                        f"got {json_type(turn)}")
            speaker = turn.get("from", turn.get("role"))
            if not isinstance(speaker, str):
                return Reject(location, f"turn {i} of {key!r}: field 'from' is missing or not text")
            role = role_of(speaker, table)
            if role is None:
                return Reject(location, unknown_speaker(len(messages) + 1, speaker, f"turn {i}"))
            messages.append({"role": role, "content": turn.get("value", turn.get("content")), "_at": f"turn {i}"})
        return Record(messages, location, id_of(obj.get("id")), pick_meta(obj, _META_KEYS))

    return convert


def parse_sharegpt(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from ShareGPT text: a JSON array ("record N") or JSONL ("line N")."""
    yield from convert_records(iter_json_records(source), converter(options or ImportOptions()))

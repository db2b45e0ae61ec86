"""JSON of any shape -> records, through a mapping the user gives once (ImportOptions.json_map). Pure.

Each key of the mapping is a JMESPath expression (https://jmespath.org, the `jmespath` library), so
any nesting, list index or function the language has is available without a path language of ours:
  turns             in the record: the list of turns                      dialogContent
  speaker           in each turn: who speaks (default: from || role || speaker || author)
                    a turn keyed by its speaker, {"client": "Hi"}:        keys(@)[0]
  text              in each turn: what is said (default: value || content || text || message)
                    the same keyed turn:                                  values(@)[0]
  system            in the record: a system prompt put first              meta.instructions
  id                in the record: the conversation's id                  dialogId
  append_user       in the record: text (or a list of texts) added as user turns after the turns
  append_assistant  in the record: the same, as assistant turns           finalAgentReply
  records           a plain key: the list that holds the records when the file is one object around them
Speakers go through the same table as CSV speakers (client/customer -> user, agent/support -> assistant)
plus the role map. Records come from JSONL or a JSON array, streamed (jsonrecords.py).
Tested in tests/test_importers_mapped.py.
"""

from __future__ import annotations

from typing import Iterator

import jmespath
from jmespath.exceptions import JMESPathError

from training.importers.decode import TextSource
from training.importers.fields import convert_records, id_of, require_object
from training.importers.jsonrecords import iter_json_records, json_type
from training.importers.model import ImportOptions, Record, Reject
from training.importers.speakers import CSV_SPEAKERS, role_of, speaker_table, unknown_speaker

DEFAULTS = {"speaker": "from || role || speaker || author", "text": "value || content || text || message"}


class _Path:
    """One compiled expression and its text, for messages."""

    def __init__(self, key: str, expression: str):
        self.key, self.text = key, expression
        self.compiled = jmespath.compile(expression)

    def find(self, value: object) -> object:
        try:
            return self.compiled.search(value)
        except JMESPathError as exc:  # e.g. keys(@) on a turn that is text: the record's shape, not a bug
            raise _Mismatch(f"the {self.key} path {self.text!r} does not fit here ({str(exc).splitlines()[0]})")


class _Mismatch(ValueError):
    pass


def _texts(value: object) -> list | None:
    """An append value -> the texts to add ([] for nothing), None when it is not text."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v.strip()]
    return None


def converter(options: ImportOptions):
    """A convert(location, obj) for this mapping."""
    given = {k: v for k, v in options.json_map.items() if k != "records"}
    paths = {k: _Path(k, e) for k, e in {**DEFAULTS, **given}.items()}
    table = speaker_table(CSV_SPEAKERS, options.role_map)

    def convert(location: str, obj: object) -> Record | Reject:
        bad = require_object(location, obj, "a record")
        if bad:
            return bad
        if "turns" not in paths:
            return Reject(location, "no JSON mapping: say where the turns are (turns=PATH)")
        try:
            return _convert(location, obj)
        except _Mismatch as exc:
            return Reject(location, str(exc))

    def _convert(location: str, obj: dict) -> Record | Reject:
        turns = paths["turns"].find(obj)
        if not isinstance(turns, list):
            keys = ", ".join(repr(k) for k in list(obj)[:10]) or "no keys"
            found = "nothing" if turns is None else json_type(turns)
            return Reject(location, f"the turns path {paths['turns'].text!r} finds {found}, not a list "
                                    f"(this record has {keys})")
        messages = []
        if "system" in paths:
            system = paths["system"].find(obj)
            if isinstance(system, str) and system.strip():
                messages.append({"role": "system", "content": system, "_at": f"path {paths['system'].text!r}"})
        for i, turn in enumerate(turns, 1):
            speaker = paths["speaker"].find(turn)
            if speaker is None or isinstance(speaker, (dict, list)):
                return Reject(location, f"turn {i}: the speaker path {paths['speaker'].text!r} finds "
                                        f"{'nothing' if speaker is None else json_type(speaker)} in {json_type(turn)}")
            role = role_of(str(speaker), table)
            if role is None:
                return Reject(location, unknown_speaker(len(messages) + 1, speaker, f"turn {i}"))
            messages.append({"role": role, "content": paths["text"].find(turn), "_at": f"turn {i}"})
        for role in ("user", "assistant"):
            path = paths.get(f"append_{role}")
            if path is None:
                continue
            texts = _texts(path.find(obj))
            if texts is None:
                return Reject(location, f"the append_{role} path {path.text!r} finds "
                                        f"{json_type(path.find(obj))}, not text")
            messages += [{"role": role, "content": t, "_at": f"path {path.text!r}"} for t in texts]
        ident = id_of(paths["id"].find(obj)) if "id" in paths else None
        return Record(messages, location, ident, {})

    return convert


def parse_mapped(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from JSON text read through options.json_map: JSONL ("line N") or an array ("record N")."""
    options = options or ImportOptions()
    records = options.json_map.get("records", "").strip()
    yield from convert_records(iter_json_records(source, (records,) if records else ()), converter(options))

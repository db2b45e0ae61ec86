"""JSON of any shape read through a mapping of JMESPath expressions (training/importers/mapped.py).

The fixture dialogs_mapped.json is checked in tests/test_importers_formats.py.
Run: .venv/bin/python -m pytest tests/test_importers_mapped.py -q
"""

from __future__ import annotations

import json

import pytest

from training.importers import Conversation, ImportFileError, ImportOptions, Reject, open_import
from training.importers.mapped import parse_mapped
from training.importers.pipeline import finish

KEYED = {"turns": "dialogContent", "speaker": "keys(@)[0]", "text": "values(@)[0]",
         "append_assistant": "lastAgentTurn"}


def items(value, json_map: dict, **more) -> list:
    options = ImportOptions(json_map=json_map, **more)
    text = value if isinstance(value, str) else json.dumps(value)
    return list(finish(parse_mapped(text, options), options))


def test_turns_keyed_by_speaker_and_a_last_turn_elsewhere():
    rec = {"dialogContent": [{"client": "Is it open?"}, {"agent": "Yes."}, {"client": "Till when?"}],
           "lastAgentTurn": "Till 8 pm."}
    (conv,) = items([rec], KEYED)
    assert conv.messages == [{"role": "user", "content": "Is it open?"}, {"role": "assistant", "content": "Yes."},
                             {"role": "user", "content": "Till when?"}, {"role": "assistant", "content": "Till 8 pm."}]


def test_nested_paths_system_id_and_default_speaker_text_keys():
    rec = {"meta": {"id": 17, "prompt": "Be brief."},
           "chat": {"log": [{"author": "customer", "message": "Hi"}, {"author": "Support", "message": "Hello"}]}}
    (conv,) = items([rec], {"turns": "chat.log", "system": "meta.prompt", "id": "meta.id"})
    assert conv.external_id == "17"
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant"]


def test_records_wrapped_in_an_object_and_jsonl():
    doc = {"data": [{"t": [{"from": "user", "value": "q"}, {"from": "gpt", "value": "a"}]}] * 2}
    assert len([i for i in items(doc, {"records": "data", "turns": "t"}) if isinstance(i, Conversation)]) == 1
    jsonl = "\n".join(json.dumps({"t": [{"from": "user", "value": f"q{n}"}, {"from": "gpt", "value": "a"}]})
                      for n in range(3))
    found = items(jsonl, {"turns": "t"})
    assert [c.location for c in found] == ["line 1", "line 2", "line 3"]


def test_records_that_do_not_fit_are_rejected_naming_the_path():
    found = items([{"other": 1}, {"dialogContent": [{"client": "hi"}, "text turn"]},
                   {"dialogContent": [{"robot": "hi"}]}], KEYED)
    reasons = [r.reason for r in found if isinstance(r, Reject)]
    assert reasons[0] == "the turns path 'dialogContent' finds nothing, not a list (this record has 'other')"
    assert reasons[1].startswith("the speaker path 'keys(@)[0]' does not fit here")
    assert "speaker 'robot' is not one of system/user/assistant (add it to the role map, e.g. robot=" in reasons[2]


def test_role_map_names_new_speakers():
    (conv,) = items([{"dialogContent": [{"Kunde": "Hallo"}, {"Mitarbeiter": "Guten Tag"}]}], KEYED,
                    role_map={"Kunde": "user", "Mitarbeiter": "assistant"})
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]


def test_mapping_problems_are_named_before_reading(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[]")
    with pytest.raises(ImportFileError, match="not a JMESPath expression"):
        open_import(path, ImportOptions(json_map={"turns": "dialog[["}))
    with pytest.raises(ImportFileError, match="'turn' is not one of records, turns"):
        open_import(path, ImportOptions(json_map={"turn": "x"}))
    with pytest.raises(ImportFileError, match="needs a JSON mapping"):
        open_import(path, ImportOptions(format="mapped"))


def test_without_a_mapping_the_parser_rejects_rather_than_raises():
    (rej,) = list(parse_mapped('[{"a": 1}]', ImportOptions()))
    assert rej.reason.startswith("no JSON mapping")

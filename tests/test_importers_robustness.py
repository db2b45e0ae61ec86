"""open_import on awkward files: encodings, binary garbage, empty files, truncation, the wrong format
claimed, in-file duplicates, bad options, and a large file read lazily.

Run: .venv/bin/python -m pytest tests/test_importers_robustness.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store.redaction import RedactionSettings
from training.importers import (Conversation, ImportFileError, ImportOptions, ImportWarning, Reject, open_import)
from training.importers.decode import SAMPLE_BYTES
from training.importers.model import messages_digest

# A support CSV with German, Spanish and French accents and typographic punctuation (all in Windows-1252).
ACCENTED_CSV = """ticket_id,speaker,text
1,customer,"Grüß Gott, meine Bestellung ist nicht angekommen. Können Sie mir helfen?"
1,agent,"Das tut mir leid! Ich prüfe das sofort; die Lieferung ging an die Müllerstraße 5."
2,customer,"Hola, ¿dónde está mi pedido? Soy el señor García."
2,agent,"¡Perdón por la espera! Llegará mañana."
3,customer,Café crème: my order never arrived… déjà vu!
3,agent,Désolé — we’ll resend it today.
"""


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def read(path: Path, **options) -> tuple[object, list]:
    # Decoding is checked on the raw text ("Señor Muñoz"); redaction is tests/test_redaction_import.py.
    stream = open_import(path, ImportOptions(**options), redaction=RedactionSettings.off())
    return stream, list(stream)


def contents(items) -> list[str]:
    return [m["content"] for i in items if isinstance(i, Conversation) for m in i.messages]


def chat(i: int, extra: str = "") -> dict:
    return {"messages": [{"role": "user", "content": f"Where is order {i}?{extra}"},
                         {"role": "assistant", "content": f"Order {i} ships today."}]}


def jsonl(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


# --- encodings --------------------------------------------------------------------------------------

def test_utf8_with_bom(tmp_path):
    stream, items = read(write(tmp_path, "bom.jsonl", b"\xef\xbb\xbf" + jsonl([chat(1)]).encode()))
    assert (stream.format, stream.encoding) == ("openai", "utf-8-sig")
    assert contents(items)[0] == "Where is order 1?"


def test_cp1252_csv_with_accents(tmp_path):
    stream, items = read(write(tmp_path, "excel.csv", ACCENTED_CSV.encode("cp1252")))
    assert stream.encoding == "cp1252"
    got = contents(items)
    assert "Grüß Gott, meine Bestellung ist nicht angekommen. Können Sie mir helfen?" in got
    assert "Café crème: my order never arrived… déjà vu!" in got
    assert "Désolé — we’ll resend it today." in got


def test_latin1_transcript(tmp_path):
    text = "Customer: Hola, ¿dónde está mi pedido? Señor Muñoz.\nAgent: ¡Llegará mañana, señor!\n"
    stream, items = read(write(tmp_path, "chat.txt", text.encode("latin-1")))
    assert stream.encoding in ("cp1252", "iso8859-1", "iso8859-15")  # identical for these characters
    assert contents(items) == ["Hola, ¿dónde está mi pedido? Señor Muñoz.", "¡Llegará mañana, señor!"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be"])
def test_utf16_with_bom(tmp_path, codec):
    data = ACCENTED_CSV.encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    stream, items = read(write(tmp_path, "u16.csv", data))
    assert stream.encoding == "utf-16"
    assert "¡Perdón por la espera! Llegará mañana." in contents(items)


def test_utf16_without_bom(tmp_path):
    stream, items = read(write(tmp_path, "u16.csv", ACCENTED_CSV.encode("utf-16-le")))
    assert stream.encoding == "utf-16-le"
    assert len([i for i in items if isinstance(i, Conversation)]) == 3


def test_ascii_start_then_cp1252_later_switches_encoding_without_changing_what_came_before(tmp_path):
    filler = "".join(f"{i},customer,Where is order {i}?\n{i},agent,It ships today.\n" for i in range(9000))
    assert len(filler) > SAMPLE_BYTES
    data = ("ticket_id,speaker,text\n" + filler).encode() + ACCENTED_CSV.split("\n", 1)[1].encode("cp1252")
    stream, items = read(write(tmp_path, "late.csv", data))
    assert stream.encoding == "cp1252"
    got = contents(items)
    assert got[0] == "Where is order 0?" and "Café crème: my order never arrived… déjà vu!" in got


def test_utf8_then_other_bytes_is_a_file_error_naming_offset_and_line(tmp_path):
    head = "ticket_id,speaker,text\n1,customer,Grüße\n1,agent,Hallo\n"
    data = (head + "x,customer,filler\n" * 20000).encode() + b"9,customer,caf\xe9\n"
    path = write(tmp_path, "mixed.csv", data)
    stream = open_import(path, ImportOptions())
    with pytest.raises(ImportFileError) as exc:
        list(stream)
    offset = data.index(b"\xe9")
    assert str(exc.value).startswith("mixed.csv: cannot decode byte 0xe9 at offset " + str(offset))
    assert "(line 20004)" in str(exc.value)


@pytest.mark.parametrize("data, says", [
    (bytes(range(256)) * 50, "binary"),
    (b"\x00\x01\x02\x03garbage\xff\xfe\x00" * 300, None),  # may pass for UTF-16, then fits no format
    (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 200, "ZIP archive"),
    (b"\x1f\x8b\x08\x00" + b"\x13" * 100, "gzip"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
    (b"\x07\x1b[0m\x08" * 500, "binary"),  # control characters
])
def test_binary_files_are_a_file_error(tmp_path, data, says):
    with pytest.raises(ImportFileError, match=says):
        open_import(write(tmp_path, "blob.bin", data), ImportOptions())


@pytest.mark.parametrize("data, says", [(b"", "is empty"), (b"\n \r\n\t\n", "only blank space")])
def test_empty_files_are_a_file_error(tmp_path, data, says):
    with pytest.raises(ImportFileError, match=says) as exc:
        open_import(write(tmp_path, "nothing.jsonl", data), ImportOptions())
    assert str(exc.value).startswith("nothing.jsonl: ")


def test_a_missing_file_is_a_file_error(tmp_path):
    with pytest.raises(ImportFileError, match="cannot read the file"):
        open_import(tmp_path / "gone.jsonl", ImportOptions())


# --- truncation -------------------------------------------------------------------------------------

def test_truncated_jsonl_keeps_the_lines_before_and_rejects_the_cut_line(tmp_path):
    text = jsonl([chat(1), chat(2)]) + json.dumps(chat(3))[:40]
    _, items = read(write(tmp_path, "cut.jsonl", text))
    assert [type(i) for i in items] == [Conversation, Conversation, Reject]
    assert items[2] == Reject("line 3", "the line ends before its JSON record does (the file looks truncated)")


def test_truncated_json_array_keeps_the_records_before(tmp_path):
    records = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
               for i in range(4)]
    text = json.dumps(records, indent=2)
    cut = text[: text.index('"q3"') + 2]
    _, items = read(write(tmp_path, "cut.json", cut))
    assert [i.location for i in items] == ["record 1", "record 2", "record 3", "record 4"]
    assert items[3] == Reject("record 4", "the file ends inside record 4 (truncated?); "
                                          "the 3 records before it were read")


def test_json_array_missing_only_its_closing_bracket(tmp_path):
    text = json.dumps([chat(1), chat(2)])[:-1]
    _, items = read(write(tmp_path, "cut.json", text), format="openai")
    assert items[-1].location == "end of file" and "truncated" in items[-1].reason
    assert len(contents(items)) == 4


def test_invalid_json_inside_an_array_stops_there_with_a_reason(tmp_path):
    text = "[\n" + json.dumps(chat(1)) + ",\n" + json.dumps(chat(2))[:-2] + " oops },\n" + json.dumps(chat(3)) + "\n]"
    _, items = read(write(tmp_path, "bad.json", text))
    assert isinstance(items[0], Conversation)
    assert items[1].location == "record 2" and "invalid JSON" in items[1].reason
    assert len(items) == 2


def test_a_bad_line_in_jsonl_is_rejected_and_reading_goes_on(tmp_path):
    text = jsonl([chat(1)]) + "{not json}\n" + "[1, 2]\n" + jsonl([chat(2)])
    _, items = read(write(tmp_path, "some.jsonl", text))
    assert [i.location for i in items] == ["line 1", "line 2", "line 3", "line 4"]
    assert items[1].reason.startswith("this line is not valid JSON")
    assert items[2].reason == "expected a JSON object on this line, got a list"


def test_pretty_printed_objects_one_after_another_are_records(tmp_path):
    # Keys that are empty or hold dots must not confuse the streaming parser's nesting.
    odd = {"": {"a.b": [1, {"": 2}]}, **chat(1), "x.y": {"": []}}
    text = json.dumps(odd, indent=2) + "\n" + json.dumps(chat(2), indent=2)
    _, items = read(write(tmp_path, "pretty.json", text), format="openai")
    assert [i.location for i in items] == ["record 1", "record 2"]
    assert contents(items)[0] == "Where is order 1?"


# --- wrong format claimed, options ------------------------------------------------------------------

def test_openai_claimed_on_a_csv_is_a_clear_file_error(tmp_path):
    with pytest.raises(ImportFileError) as exc:
        open_import(write(tmp_path, "tickets.csv", ACCENTED_CSV), ImportOptions(format="openai"))
    message = str(exc.value)
    assert message.startswith("tickets.csv: this does not look like OpenAI chat JSONL: "
                              "line 1: this line is not valid JSON")
    assert "it looks like CSV" in message and "choose csv or auto" in message and exc.value.field == "format"


@pytest.mark.parametrize("fmt, looks", [("csv", "openai"), ("zendesk", "openai"), ("transcript", "openai"),
                                        ("intercom", "openai"), ("alpaca", "openai")])
def test_any_wrong_format_on_openai_jsonl_names_the_right_one(tmp_path, fmt, looks):
    with pytest.raises(ImportFileError, match=f"choose {looks} or auto"):
        open_import(write(tmp_path, "chats.jsonl", jsonl([chat(1), chat(2)])), ImportOptions(format=fmt))


def test_sharegpt_claimed_on_openai_jsonl_reads_it_as_the_role_content_variant(tmp_path):
    stream, items = read(write(tmp_path, "chats.jsonl", jsonl([chat(1)])), format="sharegpt")
    assert stream.format == "sharegpt" and contents(items) == ["Where is order 1?", "Order 1 ships today."]


def test_a_claimed_format_whose_records_are_merely_invalid_is_not_a_file_error(tmp_path):
    # The file is OpenAI JSONL; its conversations just fail validation: rejects, not a file error.
    lines = [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(30)]
    _, items = read(write(tmp_path, "q.jsonl", jsonl(lines)), format="openai")
    assert len(items) == 30 and all(isinstance(i, Reject) for i in items)


@pytest.mark.parametrize("options, says", [
    (dict(format="xml"), "unknown format 'xml'"),
    (dict(role_map={"bot": "agent"}), "role map bot=agent: 'agent' is not one of system/user/assistant"),
    (dict(transcript_labels={"Kunde": "customer"}), "transcript label Kunde=customer"),
    (dict(csv_columns={"body": "text"}), "'body' is not one of conversation, order"),
    (dict(max_messages=0), "max_messages must be a positive whole number"),
    (dict(transcript_separator="  "), "separator is blank"),
])
def test_bad_options_are_a_file_error_naming_the_option(tmp_path, options, says):
    with pytest.raises(ImportFileError, match=says):
        open_import(write(tmp_path, "a.jsonl", jsonl([chat(1)])), ImportOptions(**options))


# --- duplicates, warnings, laziness -----------------------------------------------------------------

def test_in_file_duplicates_are_dropped_and_counted(tmp_path):
    same_but_spaced = {"messages": [{"role": "user", "content": "  Where is order 1?\n"},
                                    {"role": "assistant", "content": "Order 1 ships today.", "weight": 1}]}
    stream, items = read(write(tmp_path, "d.jsonl", jsonl([chat(1), chat(2), chat(1), same_but_spaced])))
    assert [i.location for i in items] == ["line 1", "line 2"]
    assert stream.duplicates == 2
    # Each repeat with its place and the key of the copy kept (what the Data tab's preview names).
    assert stream.repeats == [("line 3", messages_digest(items[0].messages)),
                              ("line 4", messages_digest(items[0].messages))]


def test_long_conversations_are_imported_with_a_warning(tmp_path):
    long = {"messages": [m for i in range(6) for m in chat(i)["messages"]]}
    _, items = read(write(tmp_path, "long.jsonl", jsonl([long])), max_messages=10)
    assert isinstance(items[0], Conversation)
    assert items[1] == ImportWarning("line 1", "conversation has 12 messages (more than the maximum 10)")


def test_iterating_twice_reads_the_file_again(tmp_path):
    stream = open_import(write(tmp_path, "x.jsonl", jsonl([chat(1), chat(1)])), ImportOptions())
    assert len(list(stream)) == len(list(stream)) == 1 and stream.duplicates == 1


def test_a_large_file_is_streamed_lazily(tmp_path):
    template = json.dumps(chat(0)).replace("order 0", "order {i}").replace("Order 0", "Order {i}")
    path = write(tmp_path, "big.jsonl", "".join(template.replace("{i}", str(i)) + "\n" for i in range(50_000)))
    stream = open_import(path, ImportOptions())
    items = iter(stream)
    first = next(items)
    # The first conversation comes out after reading one chunk, not the whole file.
    assert first.location == "line 1" and 0 < stream.bytes_read < stream.size / 4
    assert 1 + sum(1 for _ in items) == 50_000
    assert stream.bytes_read == stream.size and stream.duplicates == 0

"""CSV import (training/importers/csv_.py): long form sorted and unsorted, timestamps, question/answer
rows, delimiter detection, named columns, and every reason a row or file is refused.

Run: .venv/bin/python -m pytest tests/test_importers_csv.py -q
"""

from __future__ import annotations

import pytest

from training.importers import Conversation, ImportFileError, ImportOptions, Reject, parse_csv
from training.importers.csv_ import line_ranges, order_key, sniff_delimiter
from training.importers.pipeline import finish


def run(text: str, **options) -> list:
    opts = ImportOptions(**options)
    return list(finish(parse_csv(text, opts), opts))


def convs(text: str, **options) -> list[Conversation]:
    out = run(text, **options)
    assert all(isinstance(i, Conversation) for i in out), out
    return out


def turns(conv: Conversation) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in conv.messages]


SORTED = """conversation_id,turn,speaker,text
c1,1,customer,My refund hasn't arrived.
c1,2,agent,"Sorry! It was issued today, so allow 3-5 days."
c2,1,customer,How do I reset my password?
c2,2,agent,Use 'Forgot password' on the sign-in page.
"""


def test_long_form_sorted_groups_rows_into_conversations():
    a, b = convs(SORTED)
    assert turns(a) == [("user", "My refund hasn't arrived."),
                        ("assistant", "Sorry! It was issued today, so allow 3-5 days.")]
    assert (a.location, a.external_id) == ("lines 2-3", "c1")
    assert (b.location, b.external_id) == ("lines 4-5", "c2")


def test_long_form_unsorted_rows_are_grouped_and_ordered_by_turn():
    text = """ticket_id,seq,from,body
t2,2,agent,Use the link we emailed.
t1,3,customer,Thanks!
t1,1,customer,Where is my parcel?
t2,1,customer,Password reset please.
t1,2,agent,It arrives tomorrow.
t1,4,agent,You're welcome.
"""
    t2, t1 = convs(text)  # in order of first appearance
    assert t2.external_id == "t2" and turns(t2) == [("user", "Password reset please."),
                                                    ("assistant", "Use the link we emailed.")]
    assert [c for _, c in turns(t1)] == ["Where is my parcel?", "It arrives tomorrow.", "Thanks!", "You're welcome."]
    assert t1.location == "lines 3-4, 6-7"


def test_numeric_order_sorts_as_numbers_not_text():
    text = "thread_id,position,role,content\nx,10,assistant,second\nx,9,user,first\n"
    [c] = convs(text)
    assert turns(c) == [("user", "first"), ("assistant", "second")]


def test_timestamp_order_with_time_zones():
    # 09:00+01:00 is 08:00 UTC, before 08:30Z; a naive timestamp counts as UTC.
    text = """chat_id,created_at,sender,message
k,2024-05-01T08:30:00Z,agent,Sure - which order?
k,2024-05-01T09:00:00+01:00,customer,Can I change my order?
k,2024-05-01 08:45:00,customer,Order 5521.
k,2024-05-01T08:50:00.250Z,agent,Done!
"""
    [c] = convs(text)
    assert [x for _, x in turns(c)] == ["Can I change my order?", "Sure - which order?", "Order 5521.", "Done!"]


def test_order_value_that_is_not_a_number_or_timestamp_rejects_the_conversation():
    text = "conversation_id,timestamp,speaker,text\nz,yesterday,customer,hi\nz,2,agent,hello\n"
    [rej] = run(text)
    assert rej == Reject("lines 2-3", "line 2: the order value (column 'timestamp') 'yesterday' is neither a "
                                      "number nor an ISO 8601 timestamp")


def test_mixed_numbers_and_timestamps_in_one_conversation_are_rejected():
    text = "conversation_id,ts,speaker,text\nz,1,customer,hi\nz,2024-01-01T00:00:00,agent,hello\n"
    [rej] = run(text)
    assert "mixes numbers and timestamps" in rej.reason


def test_without_an_order_column_file_order_is_kept():
    text = "conversation,author,text\nq,customer,first\nw,customer,other\nq,agent,second\nw,agent,answer\n"
    q, w = convs(text)
    assert [x for _, x in turns(q)] == ["first", "second"] and q.location == "lines 2, 4"


def test_quoted_field_with_line_breaks_and_delimiters():
    text = 'conversation_id,speaker,text\n1,customer,"Hello,\nmy order ""#12"" is late"\n1,agent,On it.\n'
    [c] = convs(text)
    assert c.messages[0]["content"] == 'Hello,\nmy order "#12" is late'
    assert c.location == "lines 2-4"


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_detected(delimiter):
    rows = [["conversation_id", "speaker", "text"], ["1", "customer", "Hi, it's me; again"],
            ["1", "agent", "Hello, welcome; how can I help?"]]
    text = "\n".join(delimiter.join(f'"{c}"' if ("," in c or ";" in c) else c for c in row) for row in rows) + "\n"
    assert sniff_delimiter(text) == delimiter
    [c] = convs(text)
    assert c.messages[0]["content"] == "Hi, it's me; again"


def test_header_names_are_matched_loosely():
    text = "Ticket ID;Created At;Author;Body\n1;1;Customer;hi\n1;2;Support Agent;hello\n"
    [c] = convs(text)
    assert turns(c) == [("user", "hi"), ("assistant", "hello")]


def test_columns_can_be_named():
    text = "case,n,who_said,words,ignored\n1,2,them,reply,x\n1,1,me,question,y\n"
    [c] = convs(text, csv_columns={"conversation": "case", "order": "n", "speaker": "who_said", "text": "words"},
                role_map={"me": "user", "them": "assistant"})
    assert turns(c) == [("user", "question"), ("assistant", "reply")]


def test_a_named_column_missing_from_the_header_is_a_file_error():
    with pytest.raises(ImportFileError, match="CSV column 'body' \\(given for 'text'\\) is not in the header"):
        run(SORTED, csv_columns={"text": "body"})


def test_a_header_without_conversation_columns_is_a_file_error_naming_them():
    with pytest.raises(ImportFileError) as exc:
        run("name,email\nJo,jo@example.com\n")
    # The lower layer names the field that fixes it; each door words it (--csv-column, "CSV columns").
    assert "'name', 'email'" in str(exc.value) and exc.value.field == "csv_columns"
    assert "--" not in str(exc.value)


def test_speaker_and_text_without_a_conversation_id_is_a_file_error():
    with pytest.raises(ImportFileError, match="no conversation column found"):
        run("speaker,text\ncustomer,hi\nagent,hello\n")


def test_unknown_speaker_is_rejected_naming_message_line_and_role_map():
    text = "conversation_id,speaker,text\n1,customer,hi\n1,Bob,hello\n"
    [rej] = run(text)
    assert rej.reason == ("message 2 (line 3): speaker 'Bob' is not one of system/user/assistant "
                          "(add it to the role map, e.g. Bob=assistant)")
    [c] = convs(text, role_map={"bob": "assistant"})
    assert turns(c)[1] == ("assistant", "hello")


def test_empty_conversation_id_rejects_the_row():
    out = run("conversation_id,speaker,text\n,customer,lost row\n1,customer,hi\n1,agent,hello\n")
    assert out[0] == Reject("line 2", "the conversation id (column 'conversation_id') is empty")
    assert isinstance(out[1], Conversation)


def test_blank_lines_and_rows_without_text_are_skipped():
    # Helpdesk exports have rows for attachments or events with no text: they are not turns.
    [c] = run("conversation_id,speaker,text\n\n1,customer,hi\n1,agent\n1,system-event,\n\n1,agent,hello\n")
    assert turns(c) == [("user", "hi"), ("assistant", "hello")]
    assert c.location == "lines 3, 7"


def test_question_answer_rows():
    text = ("prompt,response\nHow long do refunds take?,5-7 business days.\n"
            "¿Envían a Canarias?,\"Sí, en 5-7 días.\"\n")
    a, b = convs(text)
    assert turns(a) == [("user", "How long do refunds take?"), ("assistant", "5-7 business days.")]
    assert (b.location, turns(b)[1]) == ("line 3", ("assistant", "Sí, en 5-7 días."))


def test_question_answer_with_system_and_id_columns():
    text = "id,system,question,answer\nfaq-1,You are Acme support.,Opening hours?,9 to 5.\n"
    [c] = convs(text)
    assert c.external_id == "faq-1" and c.messages[0] == {"role": "system", "content": "You are Acme support."}


def test_question_answer_empty_answer_is_rejected_naming_the_column():
    [rej] = run("input,output\nHello?,\n")
    assert rej == Reject("line 2", "message 2 (column 'output'): field 'content' is empty")


def test_question_answer_columns_can_be_named():
    [c] = convs("a,b\nq1,a1\n", csv_columns={"question": "a", "answer": "b"})
    assert turns(c) == [("user", "q1"), ("assistant", "a1")]


def test_mixing_long_form_and_question_columns_is_a_file_error():
    with pytest.raises(ImportFileError, match="mix"):
        run("a,b\nq1,a1\n", csv_columns={"question": "a", "text": "b"})


@pytest.mark.parametrize("value, key, kind", [
    ("3", 3.0, "number"), ("2.5", 2.5, "number"), ("2024-01-01T00:00:00Z", 1704067200.0, "timestamp"),
    ("2024-01-01", 1704067200.0, "timestamp"), ("2024-01-01T01:00:00+01:00", 1704067200.0, "timestamp"),
])
def test_order_key(value, key, kind):
    assert order_key(value)[:2] == (key, kind)


@pytest.mark.parametrize("value", ["", "nan", "inf", "01/02/2024"])
def test_order_key_problems(value):
    assert order_key(value)[2]


def test_line_ranges():
    assert line_ranges([(5, 5)]) == "line 5"
    assert line_ranges([(2, 2), (3, 4), (9, 9)]) == "lines 2-4, 9"
    assert line_ranges([(i, i) for i in range(2, 40, 2)]) == "lines 2, 4, 6, 8, 10, 12, ... (19 rows)"


def test_a_quote_never_closed_is_rejected_and_reading_goes_on():
    rows = "".join(f"{i},customer,q{i}\n{i},agent,a{i}\n" for i in range(8000))  # > 128 KB
    out = run('conversation_id,speaker,text\n1,customer,"never closed\n' + rows)
    assert out[0].location.startswith("lines 2-") and "a quote that is never closed" in out[0].reason
    assert isinstance(out[-1], Conversation) and out[-1].external_id == "7999"

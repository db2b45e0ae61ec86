"""Reply-linked exports: chains become conversations, branches share their start, the side comes from a column
or the agent accounts, and orphans and loops are rejected with their lines.

The fixtures twitter_care.csv and email_threads.jsonl are checked in tests/test_importers_formats.py.
Run: .venv/bin/python -m pytest tests/test_importers_replies.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.importers import (Conversation, ImportFileError, ImportOptions, Record, Reject, detect_format,
                                open_import)
from training.importers.pipeline import finish
from training.importers.replies import norm_id, parse_replies, strip_mentions

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
HEADER = "tweet_id,author_id,inbound,created_at,text,response_tweet_id,in_response_to_tweet_id\n"


def items(text: str, options: ImportOptions = ImportOptions()) -> list:
    return list(finish(parse_replies(text, options), options))


def convs(found: list) -> list[Conversation]:
    return [i for i in found if isinstance(i, Conversation)]


def rejects(found: list) -> list[Reject]:
    return [i for i in found if isinstance(i, Reject)]


def test_twitter_export_is_detected_with_its_columns_and_side():
    fmt, reason = detect_format((FIXTURES / "twitter_care.csv").read_text())
    assert fmt == "replies"
    assert "'in_response_to_tweet_id'" in reason and "'inbound'" in reason


def test_branches_become_conversations_sharing_their_start():
    found = convs(list(open_import(FIXTURES / "twitter_care.csv")))
    by_start = {}
    for c in found:
        by_start.setdefault(c.meta["thread_start"], []).append(c)
    assert [len(v) for v in by_start.values()] == [2, 1, 1, 2, 1]  # threads 1001 and 5001 branch
    a, b = by_start["5001"]
    assert a.messages[:3] == b.messages[:3] and a.messages[3] != b.messages[3]
    assert (a.external_id, b.external_id) == ("5004", "5005")
    # Leading @mentions are addressing, not content; consecutive customer tweets merge into one turn.
    assert by_start["3001"][0].messages[0]["content"] == ("I was charged twice for my subscription this month\n\n"
                                                          "both charges are $12.99 on Oct 28")


def test_rows_come_out_grouped_by_thread_whatever_the_file_order():
    text = HEADER + "\n".join([
        "3,brand,False,t,@c thanks for asking,,2",
        "1,c1,True,t,@brand question one,2,",
        "9,c9,True,t,@brand other question,10,",
        "2,c1,True,t,follow-up,3,1",
        "10,brand,False,t,other answer,,9",
    ])
    found = convs(items(text))
    assert [c.external_id for c in found] == ["3", "10"]
    assert found[0].location == "lines 2-3, 5"
    assert found[0].messages == [{"role": "user", "content": "question one\n\nfollow-up"},
                                 {"role": "assistant", "content": "thanks for asking"}]


def test_orphan_reply_rejects_its_thread_once_with_its_lines():
    text = HEADER + "\n".join([
        "20,c,True,t,@brand hello?,21,999",  # replies to a tweet the export does not hold
        "21,brand,False,t,@c hi there,\"22,23\",20",
        "22,c,True,t,thanks,,21",
        "23,c,True,t,ok,,21",
    ])
    found = items(text)
    assert convs(found) == []
    (rej,) = rejects(found)
    assert rej.location == "lines 2-5"
    assert "line 2 replies to message '999', which is not in the file" in rej.reason
    assert "4 messages" in rej.reason


def test_orphans_can_start_their_conversation():
    text = HEADER + "20,c,True,t,@brand hello?,21,999.0\n21,brand,False,t,@c hi there,,20\n"
    (conv,) = convs(items(text, ImportOptions(reply_orphans="start")))
    assert conv.meta == {"thread_start": "20"}


def test_loops_are_rejected_naming_their_lines():
    text = HEADER + "\n".join([
        "1,c,True,t,a,,3",
        "2,brand,False,t,b,,1",
        "3,c,True,t,c,,2",
        "4,brand,False,t,answer under the loop,,3",
        "5,c,True,t,talks to itself,,5",
    ])
    found = items(text)
    assert convs(found) == []
    reasons = {r.location: r.reason for r in rejects(found)}
    assert "lines 2-5" in reasons and "line 5: its reply chain loops (lines 2 -> 4 -> 3 -> 2)" in reasons["lines 2-5"]
    assert reasons["line 6"] == "these messages reply to each other in a loop (lines 6 -> 6)"


def test_a_loop_without_any_reply_under_it_is_still_rejected():
    text = HEADER + "1,c,True,t,a,,2\n2,brand,False,t,b,,1\n"
    (rej,) = rejects(items(text))
    assert rej.location == "lines 2-3" and "loop" in rej.reason


def test_bad_rows_are_rejected_with_their_line():
    text = HEADER + "\n".join([
        ",c,True,t,no id,,",
        "1,c,maybe,t,which side?,,",
        "2,c,True,t,question,3,",
        "2,c,True,t,same id again,,",
        "3,brand,False,t,answer,,2",
    ])
    found = items(text)
    assert {r.location: r.reason for r in rejects(found)} == {
        "line 2": "the message id ('tweet_id') is empty",
        "line 3": "the 'inbound' value 'maybe' is not true or false",
        "line 5": "message id '2' ('tweet_id') appears a second time; this row is skipped",
    }
    assert len(convs(found)) == 1


def test_agent_accounts_decide_the_side_from_the_author():
    text = "id,parent_id,from,body\n1,,ana@x.example,Where is my parcel?\n2,1,Help@Shop.example,It ships today.\n"
    with pytest.raises(ImportFileError) as exc:
        list(parse_replies(text, ImportOptions()))
    assert exc.value.field == "agent_accounts" and "'from'" in str(exc.value)
    (conv,) = convs(items(text, ImportOptions(agent_accounts=("@help@shop.example",))))
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]


def test_speaker_column_and_named_columns():
    text = "msg,answers,who,words\n1,,customer,Hi\n2,1,bot,Hello!\n"
    options = ImportOptions(reply_columns={"id": "msg", "reply_to": "answers", "text": "words"},
                            role_map={"bot": "assistant"})
    (conv,) = convs(items(text, options))
    assert conv.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def test_named_column_that_is_not_there_names_the_field():
    with pytest.raises(ImportFileError) as exc:
        list(parse_replies(HEADER, ImportOptions(reply_columns={"reply_to": "parent"})))
    assert exc.value.field == "reply_columns" and "'parent'" in str(exc.value)


def test_json_array_is_located_by_record():
    rows = [{"id": 1, "reply_to": None, "inbound": True, "text": "Hi"},
            {"id": 2, "reply_to": 1, "inbound": False, "text": "Hello"},
            {"id": 3, "reply_to": 77, "inbound": True, "text": "lost"}]
    found = items(json.dumps(rows))
    assert [c.location for c in convs(found)] == ["records 1-2"]
    assert [r.location for r in rejects(found)] == ["record 3"]


def test_json_records_of_another_shape_are_rejected_not_crashed():
    found = items('{"a": 1}\n{"b": 2}\n')
    assert [r.location for r in rejects(found)] == ["line 1"]


def test_given_format_on_a_file_of_another_kind_says_so(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("conversation_id,speaker,text\n1,customer,hi\n1,agent,hello\n")
    with pytest.raises(ImportFileError) as exc:
        open_import(path, ImportOptions(format="replies"))
    assert "no id or reply-to column found" in str(exc.value) or "no reply-to column" in str(exc.value)


@pytest.mark.parametrize("value,want", [("119237.0", "119237"), (" 42 ", "42"), ("", None), ("nan", None),
                                        (7, "7"), (None, None), ("<a@b>", "<a@b>")])
def test_ids_are_normalised(value, want):
    assert norm_id(value) == want


def test_leading_mentions_only_are_stripped():
    assert strip_mentions("@AcmeSupport @115712 mail me@x.example") == "mail me@x.example"
    assert strip_mentions("no mention @here") == "no mention @here"


def peak_memory(path: Path) -> tuple[int, int]:
    """(records, peak traced memory) of parsing the file as it streams from disk (validation and redaction,
    shared by every format, are not what is measured)."""
    import tracemalloc

    tracemalloc.start()
    with path.open(encoding="utf-8") as f:
        count = sum(isinstance(i, Record) for i in parse_replies(f, ImportOptions()))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return count, peak


def test_memory_holds_ids_not_texts(tmp_path):
    """The rows wait on disk: the same 6 000 rows with texts 100 times longer need about the same memory."""
    peaks = []
    for size in (40, 4000):
        path = tmp_path / f"export{size}.csv"
        body = "x" * size
        with path.open("w") as f:
            f.write(HEADER)
            for n in range(3000):
                f.write(f"{2 * n + 1},c{n},True,t,@brand question {n} {body},{2 * n + 2},\n")
                f.write(f"{2 * n + 2},brand,False,t,@c{n} answer {n} {body},,{2 * n + 1}\n")
        count, peak = peak_memory(path)
        assert count == 3000
        peaks.append(peak)
    print("peak memory with 40- and 4000-character texts:", peaks)
    # 24 MB more text in the second file; a batch of rows and one conversation's texts is all it may cost.
    assert peaks[1] - peaks[0] < 4_000_000, peaks

"""Reading completions on their way to the client (serving/completion_stream.py): ids, answers, usage."""

from __future__ import annotations

import json
import time

from serving.completion_stream import StreamReader, new_completion_id, rewrite_completion
from serving.traffic_api import completion_time


def sse(chunks: list[dict], done: bool = True) -> bytes:
    out = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(text: str | None, finish=None, index=0) -> dict:
    return {"id": "up-1", "object": "chat.completion.chunk", "choices": [
        {"index": index, "delta": {} if text is None else {"content": text}, "finish_reason": finish}]}


USAGE = {"id": "up-1", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def events(data: bytes) -> list[dict | str]:
    out = []
    for event in data.split(b"\n\n"):
        if event.startswith(b"data: "):
            payload = event[6:]
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def test_stream_gets_our_id_and_assembles_the_answer_across_split_reads():
    raw = sse([chunk("Hel"), chunk("lo"), chunk(" there", "stop"), USAGE])
    reader = StreamReader("chatcmpl-tlX", forward_usage=False)
    forwarded = b"".join(reader.feed(raw[i:i + 7]) for i in range(0, len(raw), 7)) + reader.close()
    got = events(forwarded)
    assert got[-1] == "[DONE]" and reader.done
    assert all(e["id"] == "chatcmpl-tlX" for e in got[:-1])
    # the usage-only chunk was asked for by the API, not the client: hidden, but kept for capture
    assert all(e["choices"] for e in got[:-1])
    client_text = "".join(e["choices"][0]["delta"].get("content", "") for e in got[:-1])
    result = reader.result()
    assert client_text == result.answer == "Hello there"
    assert result.finish_reason == "stop" and result.usage["completion_tokens"] == 2
    assert result.first_token_at is not None


def test_usage_chunk_is_forwarded_when_the_client_asked_for_it():
    reader = StreamReader("c", forward_usage=True)
    got = events(reader.feed(sse([chunk("a"), USAGE])))
    assert got[-2]["usage"]["total_tokens"] == 5


def test_stream_cut_off_is_not_done_and_keeps_the_partial_answer():
    reader = StreamReader("c")
    reader.feed(sse([chunk("one"), chunk(" two")], done=False) + b"data: {\"choi")
    assert not reader.done and reader.result().answer == "one two"


def test_other_choices_and_garbage_pass_through():
    reader = StreamReader("c")
    out = reader.feed(b": keep-alive\n\n" + sse([chunk("x", index=1), chunk("y")]) + b"data: not json\n\n")
    assert b": keep-alive" in out and b"data: not json" in out
    assert reader.result().answer == "y"


def test_non_streamed_completion_gets_our_id():
    body = json.dumps({"id": "up", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                                 "finish_reason": "length"}], "usage": {"total_tokens": 4}}).encode()
    new, outcome = rewrite_completion(body, "chatcmpl-tlY")
    assert json.loads(new)["id"] == "chatcmpl-tlY"
    assert (outcome.answer, outcome.finish_reason, outcome.usage) == ("Hi", "length", {"total_tokens": 4})
    assert rewrite_completion(b"oops", "z") == (b"oops", rewrite_completion(b"oops", "z")[1])


def test_completion_ids_are_unique_and_carry_their_time():
    ids = {new_completion_id() for _ in range(1000)}
    assert len(ids) == 1000
    made = completion_time(new_completion_id(at=1_700_000_000.5))
    assert made is not None and abs(made.timestamp() - 1_700_000_000.5) < 0.002
    assert completion_time("chatcmpl-123") is None and abs(completion_time(new_completion_id()).timestamp()
                                                           - time.time()) < 5

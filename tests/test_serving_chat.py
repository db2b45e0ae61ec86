"""The chat client against a scripted server: streaming, parameters, and errors a person can act on."""

from __future__ import annotations

import pytest

from fake_vllm import FakeVllm
from serving.chat import ChatClient, ChatError, SamplingParams, StreamEnd
from serving_helpers import free_port


@pytest.fixture
def server():
    with FakeVllm(free_port(), "base") as srv:
        yield srv


def test_streams_pieces_and_sends_sampling_params(server):
    client = ChatClient(server.url)
    params = SamplingParams(temperature=0, top_p=0.9, max_tokens=7, stop=("\n\n",), seed=1, extra={"top_k": 5})
    pieces = list(client.ask("base", "hi there", system_prompt="Be kind.", params=params))
    assert pieces == ["base:", " hi", " there", ""]
    assert isinstance(pieces[-1], StreamEnd) and pieces[-1].finish_reason == "stop" and not pieces[-1].cut_off
    body = [b for m, p, b in server.requests if p == "/v1/chat/completions"][-1]
    assert body["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi there"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["stop"], body["seed"], body["top_k"]) == \
        (0, 0.9, 7, ["\n\n"], 1, 5)
    assert body["stream"] is True
    assert client.models() == ["base"]
    client.close()


def test_an_answer_cut_at_max_tokens_says_so(server):
    end = list(ChatClient(server.url).ask("base", "one two three four five", params=SamplingParams(max_tokens=3)))[-1]
    assert isinstance(end, StreamEnd) and end.cut_off and end.max_tokens == 3


def test_unknown_model_is_a_clear_error(server):
    with pytest.raises(ChatError, match="'nope' is not loaded.*tuneloop adapters") as info:
        ChatClient(server.url).complete("nope", [{"role": "user", "content": "x"}])
    assert info.value.kind == "unknown_model"


def test_server_down_says_how_to_start_it_or_check_a_fleet():
    with pytest.raises(ChatError, match="not reachable.*tuneloop serve.*tuneloop replicas") as info:
        ChatClient(f"http://127.0.0.1:{free_port()}").complete("base", [{"role": "user", "content": "x"}])
    assert info.value.kind == "down"


@pytest.mark.parametrize("state,match,kind", [("starting", "is starting", "starting"),
                                              ("restarting", "is restarting", "starting"),
                                              ("failed", "failed and was not restarted", "down")])
def test_server_state_explains_a_refused_connection(state, match, kind):
    client = ChatClient(f"http://127.0.0.1:{free_port()}", server_state=lambda: state)
    with pytest.raises(ChatError, match=match) as info:
        client.complete("base", [{"role": "user", "content": "x"}])
    assert info.value.kind == kind


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"temperature": 3}, {"top_p": 0}, {"max_tokens": 0}])
def test_bad_sampling_params_are_refused(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)

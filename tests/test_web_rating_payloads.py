"""From UI events and per-browser state to rating requests (pure).

Run: .venv/bin/python -m pytest tests/test_web_rating_payloads.py -q
"""

from __future__ import annotations

import pytest

from ui.web.rating_payloads import (
    RatingError, RatingRequest, answer_choices, correction_request, thumb_request, user_name, verdict_request,
)

HISTORY = [
    {"role": "user", "content": [{"type": "text", "text": "Where is my order?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "It ships tomorrow."}]},
    {"role": "user", "content": "Can I change the address?"},
    {"role": "assistant", "content": "Yes, in your account settings under Addresses, until it ships."},
]
IDS = [11, 12, 13, 14]


@pytest.mark.parametrize("liked, kind, value", [(True, "thumb", "up"), (False, "thumb", "down"),
                                                ("", "clear_thumb", ""), (None, "clear_thumb", "")])
def test_like_events_become_thumbs_on_the_stored_message(liked, kind, value):
    assert thumb_request(3, liked, IDS) == RatingRequest(kind, value, message_id=14)


def test_a_two_dimensional_index_uses_its_message_index():
    assert thumb_request([1, 0], True, IDS).message_id == 12


@pytest.mark.parametrize("index", [-1, 4, "1"])
def test_an_index_outside_the_chat_is_refused_with_advice(index):
    with pytest.raises(RatingError, match="no longer in this chat"):
        thumb_request(index, True, IDS)


def test_an_answer_not_stored_yet_cannot_be_rated():
    with pytest.raises(RatingError, match="still being written"):
        thumb_request(1, True, [11, None])


def test_unknown_feedback_is_refused():
    with pytest.raises(RatingError):
        thumb_request(1, "Funny", IDS)


def test_verdict_rates_the_latest_turn():
    assert verdict_request("b", [3, 7]) == RatingRequest("verdict", "b", ab_turn_id=7)
    with pytest.raises(RatingError, match="Ask both models"):
        verdict_request("a", [])
    with pytest.raises(RatingError):
        verdict_request("c", [1])


def test_correction_needs_a_target_and_text():
    assert correction_request(14, "  Go to Settings > Addresses.  ") == RatingRequest(
        "correction", "Go to Settings > Addresses.", message_id=14)
    with pytest.raises(RatingError, match="Pick the answer"):
        correction_request(None, "text")
    with pytest.raises(RatingError, match="Type the answer"):
        correction_request(14, "   ")


def test_answer_choices_list_stored_answers_latest_first_with_a_preview():
    choices = answer_choices(HISTORY, IDS, "A")
    assert [mid for _, mid in choices] == [14, 12]
    assert choices[1][0] == "A answer 1: It ships tomorrow."
    assert choices[0][0].startswith("A answer 2: Yes, in your account settings") and choices[0][0].endswith("…")
    assert [mid for _, mid in answer_choices(HISTORY, [11, 12, 13, None])] == [12]


def test_user_name_is_the_login_or_a_per_browser_guest_id():
    assert user_name("maria", "abc") == "maria"
    assert user_name(None, "3f2a9c") == "guest-3f2a9c"
    assert user_name("", "x<script>") == "guest-xscript"
    assert user_name(None, None) == "guest-unknown"

"""serving.ab_session: the A/B rules without Gradio (sides, blind mode, reveal, id alignment)."""

from __future__ import annotations

import random

from serving import ab_session as ab


def test_sides_are_drawn_once_per_comparison_and_kept():
    state = ab.begin_turn(None, "base", "support-v1", blind=False)
    assert state["models"] == {"a": "base", "b": "support-v1"} and not state["blind"]
    again = ab.begin_turn(state, "other", "models", blind=True)  # later picks do not move a running comparison
    assert again["models"] == state["models"] and not again["blind"]


def test_blind_mode_shuffles_sides_and_hides_names_until_a_vote():
    drawn = {tuple(ab.begin_turn(None, "x", "y", True, random.Random(seed))["models"].values()) for seed in range(20)}
    assert drawn == {("x", "y"), ("y", "x")}
    state = ab.begin_turn(None, "x", "y", True, random.Random(1))
    assert ab.side_labels(state) == ("A", "B") and ab.is_blind_now(state)
    state = ab.record_turn(state, session_id=5, ab_turn_id=11, ids_a=[1, 2], ids_b=[3, 4])
    state, changed, revealed_now = ab.record_vote(state, 11, "a")
    assert (changed, revealed_now) == (False, True) and not ab.is_blind_now(state)
    assert ab.side_labels(state) == (f"A: {state['models']['a']}", f"B: {state['models']['b']}")
    state, changed, revealed_now = ab.record_vote(state, 11, "tie")
    assert (changed, revealed_now) == (True, False) and state["votes"] == {"11": "tie"}


def test_labels_name_the_models_when_not_blind_and_nothing_before_the_first_message():
    assert ab.side_labels(ab.new_session()) == ("A", "B")
    assert ab.side_labels(ab.begin_turn(None, "m1", "m2", False)) == ("A: m1", "B: m2")


def test_ids_line_up_with_what_is_shown_and_the_parent_is_the_last_stored():
    assert ab.aligned([1, 2], ["q", "a", "q2", "stopped"]) == [1, 2, None, None]
    assert ab.aligned(None, []) == []
    assert ab.last_saved([1, 2, None, None]) == 2 and ab.last_saved([None]) is None


def test_recording_a_turn_appends_it_for_voting():
    state = ab.record_turn(ab.new_session(), session_id=3, ab_turn_id=8, ids_a=[1, 2], ids_b=[3, 4])
    state = ab.record_turn(state, session_id=3, ab_turn_id=9, ids_a=[1, 2, 5, 6], ids_b=[3, 4, 7, 8])
    assert state["turns"] == [8, 9] and state["session_id"] == 3 and state["ids_b"][-1] == 8

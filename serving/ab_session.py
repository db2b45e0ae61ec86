"""The rules of an A/B comparison session, without any UI: sides, blind mode, reveal, and stored ids lined up.

A session is a plain dict (the web app keeps it per browser in gr.State; the CLI or a test can too):
`models` ({"a": name, "b": name}) fixed at the first message of a comparison, `blind` and
`revealed`, the stored message ids of each side lined up with what each side shows (`ids_a`,
`ids_b`; None for a message shown but not stored), the stored A/B turn ids (`turns`) and the votes
given in this session (`votes`: turn id -> verdict).
"""

from __future__ import annotations

import random


def new_session() -> dict:
    return {"session_id": None, "models": None, "blind": False, "revealed": False,
            "ids_a": [], "ids_b": [], "turns": [], "votes": {}}


def assign_sides(model_1: str, model_2: str, blind: bool, rng: random.Random | None = None) -> dict:
    """Which model answers on which side: as picked, or at random in blind mode."""
    pair = [model_1, model_2]
    if blind:
        (rng or random).shuffle(pair)
    return {"a": pair[0], "b": pair[1]}


def begin_turn(state: dict, model_1: str, model_2: str, blind: bool, rng: random.Random | None = None) -> dict:
    """The session for the next message: the sides are drawn at the first message and then kept."""
    state = {**new_session(), **(state or {})}
    if not state.get("models"):
        state.update(models=assign_sides(model_1, model_2, bool(blind), rng), blind=bool(blind), revealed=False)
    return state


def side_labels(state: dict) -> tuple[str, str]:
    """What each side is called: "A"/"B" while blind and unrevealed (or before the first message), else with names."""
    models = state.get("models")
    if not models or (state.get("blind") and not state.get("revealed")):
        return "A", "B"
    return f"A: {models['a']}", f"B: {models['b']}"


def is_blind_now(state: dict) -> bool:
    return bool(state.get("blind") and not state.get("revealed"))


def aligned(ids: list | None, shown: list | None) -> list:
    """Stored ids padded with None for messages that are shown but were not stored (a stopped answer)."""
    ids = list(ids or [])
    return ids + [None] * (len(shown or []) - len(ids))


def last_saved(ids: list | None) -> int | None:
    """The newest stored message id of a side: the parent of the next message."""
    return next((i for i in reversed(ids or []) if i is not None), None)


def record_turn(state: dict, *, session_id: int, ab_turn_id: int, ids_a: list, ids_b: list) -> dict:
    """The session after a turn was stored: its ids, and the turn to vote on."""
    return {**state, "session_id": session_id, "ids_a": ids_a, "ids_b": ids_b,
            "turns": [*state.get("turns", []), ab_turn_id]}


def record_vote(state: dict, ab_turn_id: int, value: str) -> tuple[dict, bool, bool]:
    """(the session after a vote, whether it changed an earlier vote, whether it revealed a blind pair now)."""
    changed = str(ab_turn_id) in state.get("votes", {})
    revealed_now = is_blind_now(state)
    state = {**state, "votes": {**state.get("votes", {}), str(ab_turn_id): value}, "revealed": True}
    return state, changed, revealed_now

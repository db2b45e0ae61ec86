"""Ratings -> the next round's training rows (SFT, KTO, DPO), with the report users see first.

Pure functions, no IO. The store reads the `ratings` table joined with the rated messages into
`RatingRecord`s; `build_feedback_dataset` turns them into rows and a report; `check_enough` says
whether that is enough data for the chosen method, and if not, how much is needed.
Tests: `.venv/bin/python -m pytest tests/test_feedback_dataset.py -q`.

Row formats (TRL's conversational formats, prompt explicit):
  SFT  {"messages": context + [{"role": "assistant", "content": answer, "weight": 1}]}, every
       earlier assistant turn with "weight": 0, so only the rated turn trains;
  KTO  {"prompt": context, "completion": [{"role": "assistant", "content": answer}], "label": bool};
  DPO  {"prompt": context, "chosen": [assistant msg], "rejected": [assistant msg]}.
The context is the conversation up to the rated answer (optional system, then user/assistant turns,
ending with a user turn); rows carry only "role" and "content" (plus "weight" in SFT rows).

Rules, applied in this order:
 1. Incomplete or invalid ratings are left out: an empty context or one that does not end with a user
    turn, an empty answer or corrected text ("incomplete"); an unknown kind or value, a misplaced
    system message, an unreadable timestamp ("invalid"); a correction identical to the answer it
    corrects ("correction_unchanged"); an a/b verdict between two identical answers
    ("identical_answers").
 2. Same answer = same content. Two ratings target the same answer when their contexts and answers
    are equal after collapsing whitespace (whatever the message ids); a verdict targets the unordered
    pair of its two answers, so the same two answers shown with sides swapped are the same pair.
 3. A person counts once per target: of one user's ratings of the same kind of the same target, only
    the latest (updated_at, else created_at; then the higher id) counts; the others are left out as
    "superseded". Users are told apart by the `user` string; "" is one (anonymous) user.
 4. Conflicts between people are settled by plurality: the value with strictly more votes than any
    other wins; the other voters are left out as "outvoted". When the top values are tied (one up and
    one down; "a" against "b"; "a" against "tie"), every vote on that target is left out as
    "conflict". Thumbs vote up/down on an answer; verdicts vote winner/tie/both_bad on a pair.
 5. A/B verdicts: the winner is chosen and the loser rejected (one DPO pair). A "tie" gives no pair
    (left out as "tie"). "both_bad" makes both answers KTO negatives: they join the thumbs vote on
    those answers as one thumbs-down each from that user (so rules 3 and 4 apply across the two,
    e.g. one person's "both bad" against another's thumbs-up is a conflict); they train only when the
    method has a KTO part. Ties and "both bad" never give a DPO pair on their own.
 6. Corrections: the corrected text is an SFT example, and it is chosen over every answer shown for
    that turn: the corrected answer, and for an A/B turn the other answer too (a correction matches
    an A/B turn when its message id is the turn's message_a_id/message_b_id, or its context equals
    the turn's and its original answer is one of the two). So a correction on an A/B turn gives two
    DPO pairs, whatever the verdict (tie, both bad, conflict); outside A/B it gives one. Corrections
    never conflict with each other: different corrected texts are all used. They do not vote in the
    thumbs majority and are not KTO rows.
 7. SFT examples come from answers whose thumbs vote was "up" and from corrections; KTO rows from the
    thumbs vote (label True for up, False for down); DPO pairs from rules 5 and 6.
 8. Duplicates: identical rows of one kind (same context + answer for SFT/KTO; same prompt, chosen
    and rejected for DPO) are kept once, the first by rating id, and counted in the report. The
    ratings behind a dropped duplicate still count as used (they are in the lineage, so the next
    build since this one does not offer them again).
 9. Replay (SFT only): `replay` holds SFT conversations from earlier rounds. k of them, sampled
    deterministically with `random.Random(seed)`, join the new SFT examples so that replayed
    examples make `replay_share` of the final SFT set: k = round(share * n / (1 - share)) for n new
    examples, at most the pool size; replay conversations equal to a new example or to each other
    are dropped first (counted as "replay" duplicates). No new SFT example -> nothing is replayed.
    Methods without SFT ignore the replay (noted in the report).
10. Ratings that survived the rules but feed no part of the chosen method (thumbs-down for "sft",
    verdicts for "sft"/"kto", thumbs for "dpo", corrections for "kto") are left out as
    "not_used_by_method".
11. Minimums (`DEFAULT_MINIMUMS`, overridable with `min_examples`), counted on new examples only
    (replay excluded): SFT 4 examples (one batch of 4); DPO 8 pairs (two batches of 4: fewer pairs
    is noise that the model memorises); KTO 4 desirable and 4 undesirable rows (KTO's per-step batch
    must be at least 4 and its KL estimate pairs mismatched rows inside a batch, so both kinds must
    be able to fill one). `check_enough` returns the refusal, naming the minimum, what the feedback
    has and from which ratings, and what to collect or which other method is ready.
12. KTO weights: `kto_weights` (formula in its docstring) so that (desirable_weight x #desirable) :
    (undesirable_weight x #undesirable) lies within TRL's [1:1, 4:3].
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Iterable, Literal, Mapping, Sequence

Kind = Literal["thumb", "verdict", "correction"]
Method = Literal["sft", "kto", "dpo", "sft+dpo", "sft+kto"]

KINDS = ("thumb", "verdict", "correction")
THUMB_VALUES = ("up", "down")
VERDICT_VALUES = ("a", "b", "tie", "both_bad")
# Each method and the parts (row kinds) it trains on, in training order.
METHODS: dict[str, tuple[str, ...]] = {
    "sft": ("sft",), "kto": ("kto",), "dpo": ("dpo",), "sft+dpo": ("sft", "dpo"), "sft+kto": ("sft", "kto"),
}
KTO_MIN_BATCH = 4
DEFAULT_MINIMUMS: dict[str, int] = {"sft": 4, "dpo": 8, "kto_desirable": 4, "kto_undesirable": 4}
DEFAULT_SCOPE = "the feedback since the last build"

# Why a rating was left out (the report's `reason`), with the sentence a user reads.
REASONS: dict[str, str] = {
    "incomplete": "empty context or answer, or the context does not end with a user turn",
    "invalid": "unknown kind or value, malformed context or unreadable timestamp",
    "correction_unchanged": "the correction is the same text as the answer",
    "identical_answers": "an A/B verdict between two identical answers",
    "superseded": "the same person rated the same answer again later; the latest rating counts",
    "outvoted": "most people rated this answer differently",
    "conflict": "people rated this answer differently and no value has a majority",
    "tie": "an A/B tie gives no preference pair",
    "not_used_by_method": "this kind of rating does not train the chosen method",
}


@dataclass(frozen=True)
class RatingRecord:
    """One row of `ratings` joined with the message(s) it rates. Fields a kind does not use stay None."""

    id: int
    kind: str
    """thumb | verdict | correction"""
    user: str
    created_at: str
    """ISO 8601; naive times are taken as UTC."""
    value: str
    """thumb: up|down; verdict: a|b|tie|both_bad; correction: the corrected answer text."""
    context: list[dict] = field(default_factory=list)
    """The OpenAI-style conversation up to (not including) the rated answer, ending with a user turn."""
    updated_at: str | None = None
    """Set when the user changed the rating; it then orders it instead of created_at."""
    message_id: int | None = None
    """thumb, correction: the rated assistant message."""
    model: str | None = None
    """thumb, correction: the adapter or base model that wrote the answer."""
    answer: str | None = None
    """thumb, correction: the rated answer (for a correction, the original one)."""
    ab_turn_id: int | None = None
    """verdict: the A/B turn."""
    message_a_id: int | None = None
    message_b_id: int | None = None
    answer_a: str | None = None
    answer_b: str | None = None
    model_a: str | None = None
    model_b: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RatingRecord:
        """Build from a joined row (a dict); `context` may be the stored JSON text; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in row.items() if k in names}
        if isinstance(data.get("context"), str):
            data["context"] = json.loads(data["context"] or "[]")
        return cls(**data)


@dataclass(frozen=True)
class FeedbackBuild:
    """What `build_feedback_dataset` made: rows per kind for the chosen method, their lineage, the report."""

    method: str
    sft: list[dict]
    """New SFT examples first, then the replayed ones (the last `replay_count`)."""
    kto: list[dict]
    dpo: list[dict]
    provenance: dict[str, list[tuple[int, ...]]]
    """Per kind, parallel to its rows: the ids of the ratings behind each row (replayed rows: ())."""
    rating_ids: tuple[int, ...]
    """The ratings used, sorted: the new dataset version's lineage."""
    replay_count: int
    desirable_weight: float
    undesirable_weight: float
    report: dict
    """JSON-able; see `build_feedback_dataset`."""
    minimums: dict[str, int]
    scope: str

    @property
    def new_sft_count(self) -> int:
        return len(self.sft) - self.replay_count

    @property
    def kto_counts(self) -> tuple[int, int]:
        """(#desirable, #undesirable) KTO rows."""
        return _kto_counts(self.kto)


def method_parts(method: str) -> tuple[str, ...]:
    """The row kinds a method trains on, e.g. "sft+dpo" -> ("sft", "dpo"); ValueError for an unknown method."""
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}") from None


def kto_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for TRL's KTOConfig, from the row counts D and U.

    TRL (after the KTO paper) asks that (desirable_weight * D) : (undesirable_weight * U) lie within
    [1:1, 4:3]. Rule: if D/U already lies in [1, 4/3], both weights are 1.0. Otherwise the larger side
    keeps 1.0 and the smaller side is raised so the weighted ratio is 7/6, the middle of the band:
      D > 4/3 U:  (1.0, 6D / 7U)   -> (1 * D) / (6D/7U * U) = 7/6
      D < U:      (7U / 6D, 1.0)   -> (7U/6D * D) / (1 * U) = 7/6
    With a zero count there is nothing to balance: (1.0, 1.0) (`check_enough` refuses such a set).
    """
    for n in (n_desirable, n_undesirable):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"counts must be non-negative integers, got {n_desirable!r}, {n_undesirable!r}")
    d, u = n_desirable, n_undesirable
    if d == 0 or u == 0 or u <= d <= u * 4 / 3:
        return 1.0, 1.0
    if d > u:
        return 1.0, 6 * d / (7 * u)
    return 7 * u / (6 * d), 1.0


# --- keys and validation ---------------------------------------------------------------------------

def _kto_counts(kto_rows: Sequence[Mapping]) -> tuple[int, int]:
    pos = sum(1 for row in kto_rows if row["label"])
    return pos, len(kto_rows) - pos


def _text_key(text: str) -> str:
    return " ".join(text.split())


def _ctx_key(context: Sequence[Mapping]) -> tuple:
    return tuple((m["role"], _text_key(m["content"])) for m in context)


def _clean_ctx(context: Sequence[Mapping]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in context]


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text.strip()}


def _blank(text: Any) -> bool:
    return not isinstance(text, str) or not text.strip()


def _context_problem(context: Any) -> tuple[str, str] | None:
    if not isinstance(context, (list, tuple)) or not context:
        return "incomplete", "empty context"
    for i, m in enumerate(context):
        if not isinstance(m, Mapping):
            return "invalid", f"context[{i}] is not a message"
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            return "invalid", f"context[{i}]: role {role!r} is not system, user or assistant"
        if role == "system" and i != 0:
            return "invalid", f"context[{i}]: a system message may only come first"
        if not isinstance(content, str):
            return "invalid", f"context[{i}]: content is not text"
        if role != "system" and not content.strip():
            return "incomplete", f"context[{i}]: empty {role} message"
    if context[-1]["role"] != "user":
        return "incomplete", "the context does not end with a user turn"
    return None


def _when(r: RatingRecord) -> tuple[datetime, int]:
    stamp = datetime.fromisoformat(r.updated_at or r.created_at)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp, r.id


def _problem(r: RatingRecord) -> tuple[str, str] | None:
    """Rule 1: why a rating cannot be used at all, or None."""
    if r.kind not in KINDS:
        return "invalid", f"unknown kind {r.kind!r}"
    try:
        _when(r)
    except (TypeError, ValueError):
        return "invalid", f"unreadable timestamp {r.updated_at or r.created_at!r}"
    found = _context_problem(r.context)
    if found:
        return found
    if r.kind == "thumb":
        if r.value not in THUMB_VALUES:
            return "invalid", f"thumb value {r.value!r} is not up or down"
        if _blank(r.answer):
            return "incomplete", "empty answer"
    elif r.kind == "correction":
        if _blank(r.answer):
            return "incomplete", "empty original answer"
        if _blank(r.value):
            return "incomplete", "empty corrected answer"
        if _text_key(r.value) == _text_key(r.answer):
            return "correction_unchanged", "the corrected text equals the answer"
    else:
        if r.value not in VERDICT_VALUES:
            return "invalid", f"verdict value {r.value!r} is not a, b, tie or both_bad"
        if _blank(r.answer_a) or _blank(r.answer_b):
            return "incomplete", "empty answer " + ("A" if _blank(r.answer_a) else "B")
        if r.value in ("a", "b") and _text_key(r.answer_a) == _text_key(r.answer_b):
            return "identical_answers", "answers A and B are the same text"
    return None


def _target(r: RatingRecord) -> tuple:
    if r.kind == "verdict":
        return r.kind, _ctx_key(r.context), frozenset((_text_key(r.answer_a), _text_key(r.answer_b)))
    return r.kind, _ctx_key(r.context), _text_key(r.answer)


def _plurality(votes: Sequence[str]) -> str | None:
    """Rule 4: the value with strictly more votes than any other, or None when the top is tied."""
    ranked = Counter(votes).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def _vote_summary(pairs: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{user or '(anonymous)'}: {label}" for user, label in pairs)


# --- the build -------------------------------------------------------------------------------------

@dataclass
class _Cand:
    part: str
    key: tuple
    row: dict
    rating_id: int


@dataclass
class _Vote:
    """One person's up/down on one answer: a thumb, or half of a "both bad" verdict."""

    rating: RatingRecord
    value: str
    context: list
    answer: str

    @property
    def key(self) -> tuple:
        return _ctx_key(self.context), _text_key(self.answer)


def _verdict_label(r: RatingRecord) -> str:
    if r.value in ("a", "b"):
        model = r.model_a if r.value == "a" else r.model_b
        return f"answer {r.value.upper()}" + (f" ({model})" if model else "")
    return "both bad" if r.value == "both_bad" else "tie"


def _sft_row(context: Sequence[Mapping], answer: str) -> dict:
    messages = [dict(m, weight=0) if m["role"] == "assistant" else m for m in _clean_ctx(context)]
    return {"messages": messages + [dict(_assistant(answer), weight=1)]}


def _normalize_replay(item: Any) -> dict:
    messages = item.get("messages") if isinstance(item, Mapping) else item
    if not isinstance(messages, (list, tuple)) or not all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise TypeError(f"a replay item must be {{'messages': [...]}} or a message list, got {item!r:.120}")
    return {"messages": [dict(m) for m in messages]}


def _replay_key(conversation: Mapping) -> tuple:
    return _ctx_key(conversation["messages"])


def _minimums(min_examples: Mapping[str, int] | None) -> dict[str, int]:
    minimums = dict(DEFAULT_MINIMUMS)
    for name, value in (min_examples or {}).items():
        if name not in DEFAULT_MINIMUMS:
            raise ValueError(f"unknown minimum {name!r}; known: {', '.join(DEFAULT_MINIMUMS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"minimum {name!r} must be a positive integer, got {value!r}")
        minimums[name] = value
    return minimums


def _keep_latest(items: Sequence, key, rating, fate: dict) -> list:
    """Rule 3: of the items sharing key(item) (person + target), keep the latest rating's; mark the rest."""
    latest: dict = {}
    for item in items:
        k = key(item)
        if k not in latest or _when(rating(item)) > _when(rating(latest[k])):
            latest[k] = item
    kept = []
    for item in items:
        winner = latest[key(item)]
        if winner is item:
            kept.append(item)
        else:
            fate.setdefault(rating(item).id,
                            ("superseded", f"replaced by rating #{rating(winner).id} from the same person"))
    return kept


def _settle(group: Sequence, value, summary: str, fate: dict, rating=lambda x: x) -> tuple[str | None, list]:
    """Rule 4 on one target's votes: (winning value, its voters), or (None, []) on a conflict."""
    outcome = _plurality([value(x) for x in group])
    if outcome is None:
        for x in group:
            fate.setdefault(rating(x).id, ("conflict", f"no majority: {summary}"))
        return None, []
    majority = [x for x in group if value(x) == outcome]
    for x in group:
        if value(x) != outcome:
            detail = f"the majority ({len(majority)} of {len(group)}) said otherwise: {summary}"
            fate.setdefault(rating(x).id, ("outvoted", detail))
    return outcome, majority


def _from_verdicts(verdicts: Sequence[RatingRecord], fate: dict) -> tuple[list[_Cand], list[_Vote]]:
    """Rule 5: DPO candidates from settled verdicts, and the thumbs-down votes of "both bad" ones."""
    def vote(r: RatingRecord) -> str:
        if r.value in ("a", "b"):
            return "win:" + _text_key(r.answer_a if r.value == "a" else r.answer_b)
        return r.value

    groups: dict[tuple, list[RatingRecord]] = {}
    for r in verdicts:
        groups.setdefault(_target(r), []).append(r)
    cands, downs = [], []
    for group in groups.values():
        summary = _vote_summary((r.user, _verdict_label(r)) for r in group)
        outcome, majority = _settle(group, vote, summary, fate)
        for r in majority:
            if outcome == "tie":
                fate[r.id] = ("tie", "a tie gives no pair; a correction of this turn is still used")
            elif outcome == "both_bad":
                downs += [_Vote(r, "down", r.context, r.answer_a), _Vote(r, "down", r.context, r.answer_b)]
            else:
                win, lose = (r.answer_a, r.answer_b) if r.value == "a" else (r.answer_b, r.answer_a)
                row = {"prompt": _clean_ctx(r.context), "chosen": [_assistant(win)], "rejected": [_assistant(lose)]}
                cands.append(_Cand("dpo", (_ctx_key(r.context), _text_key(win), _text_key(lose)), row, r.id))
    return cands, downs


def _from_thumbs(votes: Sequence[_Vote], fate: dict) -> list[_Cand]:
    """Rules 3, 4 and 7 on the thumbs vote (thumbs and "both bad" halves): KTO rows, SFT rows for "up"."""
    votes = _keep_latest(votes, lambda v: (v.rating.user, v.key), lambda v: v.rating, fate)
    groups: dict[tuple, list[_Vote]] = {}
    for v in votes:
        groups.setdefault(v.key, []).append(v)
    cands = []
    for key, group in groups.items():
        summary = _vote_summary((v.rating.user, v.value if v.rating.kind == "thumb" else "both bad") for v in group)
        outcome, majority = _settle(group, lambda v: v.value, summary, fate, rating=lambda v: v.rating)
        for v in majority:
            row = {"prompt": _clean_ctx(v.context), "completion": [_assistant(v.answer)], "label": outcome == "up"}
            cands.append(_Cand("kto", key, row, v.rating.id))
            if outcome == "up":
                cands.append(_Cand("sft", key[0] + (("assistant", key[1]),), _sft_row(v.context, v.answer),
                                   v.rating.id))
    return cands


def _from_corrections(corrections: Sequence[RatingRecord], verdicts: Sequence[RatingRecord]) -> list[_Cand]:
    """Rule 6: an SFT row per correction, and the corrected text chosen over every answer shown."""
    turns: dict[tuple, list[RatingRecord]] = {}  # A/B verdicts by shown message id and by (context, answer)
    for v in verdicts:
        ctx_key = _ctx_key(v.context)
        for k in {("id", v.message_a_id), ("id", v.message_b_id),
                  ("text", ctx_key, _text_key(v.answer_a)), ("text", ctx_key, _text_key(v.answer_b))}:
            turns.setdefault(k, []).append(v)
    cands = []
    for c in corrections:
        ctx_key, fixed = _ctx_key(c.context), _text_key(c.value)
        matched = turns.get(("text", ctx_key, _text_key(c.answer)), [])
        if c.message_id is not None:
            matched = matched + turns.get(("id", c.message_id), [])
        shown = {_text_key(c.answer): c.answer}
        for v in sorted(matched, key=lambda v: v.id):
            for text in (v.answer_a, v.answer_b):
                shown.setdefault(_text_key(text), text)
        cands.append(_Cand("sft", ctx_key + (("assistant", fixed),), _sft_row(c.context, c.value), c.id))
        for rejected_key, rejected in shown.items():
            if rejected_key != fixed:
                row = {"prompt": _clean_ctx(c.context), "chosen": [_assistant(c.value)],
                       "rejected": [_assistant(rejected)]}
                cands.append(_Cand("dpo", (ctx_key, fixed, rejected_key), row, c.id))
    return cands


def _dedup(cands: Sequence[_Cand]) -> tuple[dict[str, list[dict]], dict[str, list[tuple[int, ...]]], Counter]:
    """Rule 8: one row per key and kind, the first by rating id; later copies add their rating to its lineage."""
    rows: dict[str, list[dict]] = {"sft": [], "kto": [], "dpo": []}
    prov: dict[str, list[list[int]]] = {"sft": [], "kto": [], "dpo": []}
    index: dict[tuple, int] = {}
    duplicates: Counter = Counter()
    for cand in sorted(cands, key=lambda cand: cand.rating_id):  # stable: a rating's own rows keep their order
        at = index.get((cand.part, cand.key))
        if at is None:
            index[(cand.part, cand.key)] = len(rows[cand.part])
            rows[cand.part].append(cand.row)
            prov[cand.part].append([cand.rating_id])
        else:
            duplicates[cand.part] += 1
            if cand.rating_id not in prov[cand.part][at]:
                prov[cand.part][at].append(cand.rating_id)
    return rows, {part: [tuple(ids) for ids in prov[part]] for part in prov}, duplicates


def _replay(new_sft: Sequence[dict], replay: Sequence, share: float, seed: int) -> tuple[list[dict], int, list[str]]:
    """Rule 9: (replayed rows, replay duplicates dropped, notes)."""
    taken = {_replay_key(row) for row in new_sft}
    pool, dups = [], 0
    for item in map(_normalize_replay, replay):
        k = _replay_key(item)
        if k in taken:
            dups += 1
        else:
            taken.add(k)
            pool.append(item)
    n = len(new_sft)
    want = math.floor(share * n / (1 - share) + 0.5)
    k = min(len(pool), want)
    notes = []
    if n == 0:
        notes.append("no new SFT example: nothing replayed")
    elif k < want:
        notes.append(f"replay pool holds {len(pool)} usable conversations; {want} wanted")
    return [pool[i] for i in sorted(random.Random(seed).sample(range(len(pool)), k))], dups, notes


def build_feedback_dataset(
    records: Iterable[RatingRecord],
    *,
    method: Method | str = "sft",
    replay: Sequence[Mapping | Sequence[Mapping]] = (),
    replay_share: float = 0.2,
    seed: int = 0,
    min_examples: Mapping[str, int] | None = None,
    scope: str = DEFAULT_SCOPE,
) -> FeedbackBuild:
    """Apply the module's rules to `records`; return the rows for `method`, their lineage and the report.

    `min_examples` overrides entries of `DEFAULT_MINIMUMS` (used by `check_enough`); `scope` names the
    feedback in refusal messages. The report (JSON-able) holds: method, scope; ratings / ratings_used /
    ratings_left_out; examples (rows per kind for this method, and replay); kto (desirable, undesirable,
    weights; None without KTO); sources (per kind, the ratings behind its rows by rating kind);
    used_by_kind, used_by_user, used_by_model (a verdict counts for each of its models); duplicates (rows
    dropped per kind, and replay); left_out (rating_id, kind, user, reason, detail) and
    left_out_by_reason; available (what each method would get from these ratings, for suggestions);
    minimums; notes.
    """
    parts = method_parts(method)
    if not 0 <= replay_share < 1:
        raise ValueError(f"replay_share must be in [0, 1), got {replay_share!r}")
    minimums = _minimums(min_examples)
    records = sorted(records, key=lambda r: r.id)
    repeated = sorted(i for i, n in Counter(r.id for r in records).items() if n > 1)
    if repeated:
        raise ValueError(f"duplicate rating ids: {repeated}")

    fate: dict[int, tuple[str, str]] = {}  # why a rating went unused, should it give no row
    valid = []
    for r in records:  # rule 1
        found = _problem(r)
        if found:
            fate[r.id] = found
        else:
            valid.append(r)
    effective = _keep_latest(valid, lambda r: (r.user, _target(r)), lambda r: r, fate)
    of_kind = {kind: [r for r in effective if r.kind == kind] for kind in KINDS}
    cands, downs = _from_verdicts(of_kind["verdict"], fate)
    thumbs = [_Vote(r, r.value, r.context, r.answer) for r in of_kind["thumb"]]
    cands += _from_thumbs(thumbs + downs, fate)
    cands += _from_corrections(of_kind["correction"], [r for r in valid if r.kind == "verdict"])
    rows, provenance, duplicates = _dedup(cands)

    kto_pos, kto_neg = _kto_counts(rows["kto"])
    available = {"sft": len(rows["sft"]), "kto_desirable": kto_pos, "kto_undesirable": kto_neg,
                 "dpo": len(rows["dpo"])}
    for part in ("sft", "kto", "dpo"):
        if part not in parts:
            rows[part], provenance[part] = [], []
    replayed, replay_dups, notes = [], 0, []
    if replay and "sft" not in parts:
        notes.append(f"replay ignored: method {method!r} has no SFT part")
    elif replay:
        replayed, replay_dups, notes = _replay(rows["sft"], replay, replay_share, seed)
    new_counts = {p: len(rows[p]) for p in parts}
    rows["sft"] = rows["sft"] + replayed
    provenance["sft"] = provenance["sft"] + [()] * len(replayed)

    # Rule 10: what is not used, and why.
    used = sorted({i for part in parts for ids in provenance[part] for i in ids})
    parts_of: dict[int, set[str]] = {}
    for cand in cands:
        parts_of.setdefault(cand.rating_id, set()).add(cand.part)
    used_set, left_out = set(used), []
    for r in records:
        if r.id in used_set:
            continue
        would = sorted(p.upper() for p in parts_of.get(r.id, ()))
        if would:  # it survived the rules: only the method leaves it out
            reason, detail = "not_used_by_method", f"it trains {' and '.join(would)}; method {method!r} does not"
        else:
            reason, detail = fate.get(r.id, ("not_used_by_method", "it gave no example"))
        left_out.append({"rating_id": r.id, "kind": r.kind, "user": r.user, "reason": reason, "detail": detail})

    pos, neg = _kto_counts(rows["kto"])
    dw, uw = kto_weights(pos, neg) if "kto" in parts else (1.0, 1.0)
    by_id = {r.id: r for r in records}
    by_model: Counter = Counter()
    for i in used:
        r = by_id[i]
        for model in ({r.model_a, r.model_b} if r.kind == "verdict" else {r.model}):
            by_model[model or "(unknown)"] += 1
    report = {
        "method": method,
        "scope": scope,
        "ratings": len(records),
        "ratings_used": len(used),
        "ratings_left_out": len(left_out),
        "examples": {**new_counts, "replay": len(replayed)},
        "kto": {"desirable": pos, "undesirable": neg, "desirable_weight": dw, "undesirable_weight": uw}
        if "kto" in parts else None,
        "sources": {p: dict(Counter(by_id[i].kind for i in {i for ids in provenance[p] for i in ids})) for p in parts},
        "used_by_kind": dict(Counter(by_id[i].kind for i in used)),
        "used_by_user": dict(Counter(by_id[i].user or "(anonymous)" for i in used)),
        "used_by_model": dict(by_model),
        "duplicates": {**{p: duplicates[p] for p in parts}, "replay": replay_dups},
        "left_out": left_out,
        "left_out_by_reason": dict(Counter(item["reason"] for item in left_out)),
        "available": available,
        "minimums": minimums,
        "notes": notes,
    }
    return FeedbackBuild(
        method=method, sft=rows["sft"], kto=rows["kto"], dpo=rows["dpo"], provenance=provenance,
        rating_ids=tuple(used), replay_count=len(replayed), desirable_weight=dw, undesirable_weight=uw,
        report=report, minimums=minimums, scope=scope,
    )


# --- refusal and report text -----------------------------------------------------------------------

def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_SOURCE_WORDS = {
    "sft": {"thumb": ("thumbs-up", "thumbs-up"), "correction": ("correction", "corrections")},
    "kto": {"thumb": ("thumb", "thumbs"), "verdict": ("'both bad' verdict", "'both bad' verdicts")},
    "dpo": {"verdict": ("A/B verdict", "A/B verdicts"), "correction": ("correction", "corrections")},
}


def _from(build: FeedbackBuild, part: str) -> str:
    sources = build.report["sources"].get(part) or {}
    words = [_count(sources[kind], *_SOURCE_WORDS[part][kind]) for kind in KINDS if sources.get(kind)]
    return f" (from {_and(words)})" if words else ""


def _ready(build: FeedbackBuild, failing: str) -> str:
    """', or choose X (n ready)' for the single methods these ratings would satisfy."""
    a, m = build.report["available"], build.minimums
    ready = []
    if failing != "sft" and a["sft"] >= m["sft"]:
        ready.append(f"SFT ({_count(a['sft'], 'example')} ready)")
    if failing != "kto" and a["kto_desirable"] >= m["kto_desirable"] and a["kto_undesirable"] >= m["kto_undesirable"]:
        ready.append(f"KTO ({a['kto_desirable']} desirable and {a['kto_undesirable']} undesirable ready)")
    if failing != "dpo" and a["dpo"] >= m["dpo"]:
        ready.append(f"DPO ({_count(a['dpo'], 'pair')} ready)")
    return f", or choose {' or '.join(ready)}" if ready else ""


def check_enough(build: FeedbackBuild, method: str | None = None) -> str | None:
    """None when `build` has enough new rows for `method` (default: its own); else the refusal to show.

    Counts new rows only (replay excluded) against `build.minimums` (rule 11). For a combined method
    every part must pass; the messages of the failing parts are joined.
    """
    method = method or build.method
    parts = method_parts(method)
    if not set(parts) <= set(method_parts(build.method)):
        return f"This build was made for method {build.method!r}; build again for {method!r} to check it."
    m, scope, problems = build.minimums, build.scope, []
    if "sft" in parts and build.new_sft_count < m["sft"]:
        problems.append(
            f"SFT needs at least {_count(m['sft'], 'example')}; {scope} has {build.new_sft_count}"
            f"{_from(build, 'sft')}. Collect more thumbs-up ratings or corrections{_ready(build, 'sft')}."
        )
    if "kto" in parts:
        pos, neg = build.kto_counts
        short = [w for w, n, k in (("thumbs-up", pos, "kto_desirable"), ("thumbs-down", neg, "kto_undesirable"))
                 if n < m[k]]
        if short:
            problems.append(
                f"KTO needs at least {m['kto_desirable']} desirable (thumbs-up) and {m['kto_undesirable']} "
                f"undesirable (thumbs-down) examples, so that batches of {KTO_MIN_BATCH} can mix both for its "
                f"KL estimate; {scope} has {pos} desirable and {neg} undesirable{_from(build, 'kto')}. "
                f"Collect more {' and '.join(short)} ratings{_ready(build, 'kto')}."
            )
    if "dpo" in parts and len(build.dpo) < m["dpo"]:
        problems.append(
            f"DPO needs at least {m['dpo']} preference pairs; {scope} has {len(build.dpo)}"
            f"{_from(build, 'dpo')}. Collect more A/B votes or corrections{_ready(build, 'dpo')}."
        )
    return " ".join(problems) or None


def format_report(build: FeedbackBuild) -> str:
    """The report as the few lines a user reads before training (the CLI's non-JSON output)."""
    rep = build.report
    lines = [f"Feedback build for {build.method.upper()} ({rep['scope']}): {_count(rep['ratings'], 'rating')}, "
             f"{rep['ratings_used']} used, {rep['ratings_left_out']} left out."]
    nouns = {"sft": ("example", "examples"), "kto": ("example", "examples"), "dpo": ("pair", "pairs")}
    for part in method_parts(build.method):
        line = f"  {part.upper()}: {_count(rep['examples'][part], *nouns[part])}{_from(build, part)}"
        if part == "sft" and rep["examples"]["replay"]:
            line += f" + {rep['examples']['replay']} replayed from earlier rounds"
        if part == "kto":
            k = rep["kto"]
            line += (f"; {k['desirable']} desirable, {k['undesirable']} undesirable; weights "
                     f"{k['desirable_weight']:.3g} / {k['undesirable_weight']:.3g}")
        if rep["duplicates"][part]:
            line += f"; {_count(rep['duplicates'][part], 'duplicate')} dropped"
        lines.append(line)
    for title, counts in (("by user", rep["used_by_user"]), ("by model", rep["used_by_model"])):
        if counts:
            lines.append(f"  Used {title}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if rep["left_out"]:
        lines.append("  Left out:")
        lines += [f"    #{x['rating_id']} {x['kind']} by {x['user'] or '(anonymous)'}: {x['reason']} ({x['detail']})"
                  for x in rep["left_out"]]
    lines += [f"  Note: {note}" for note in rep["notes"]]
    problem = check_enough(build)
    if problem:
        lines.append(f"  Not enough data: {problem}")
    return "\n".join(lines)

"""One feedback round's build: the ratings since the last build -> a new feedback dataset version.

The IO around the pure builder (training.feedback_dataset): pick the rating window, the adapter the
next round continues from and its replay pool, choose the method, build, refuse or write.

    rb = build_round(settings, dataset="feedback", method="auto")     # or a sqlite-utils Database
    rb.version, rb.method, rb.from_adapter                            # feedback@3, "sft+dpo", ...
    tuneloop feedback build [--method auto] [--since all|2026-11-20] [--dry-run] [--json]

Tests: .venv/bin/python -m pytest tests/test_feedback_round.py -q
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Iterator

from sqlite_utils import Database

from store import runs
from store.adapters import get_adapter, list_adapters
from store.datasets import (NewConversation, VersionRef, has_imported_versions, iter_version_conversations,
                            validate_dataset_name)
from store.db import connect, now, write_transaction
from store.feedback import get_build, last_build, rating_rows, save_feedback_version
from store.settings import Settings
from store.traffic import completions_for_ratings
from training.feedback_dataset import (
    METHODS, FeedbackBuild, RatingRecord, build_feedback_dataset, check_enough, method_parts,
)
from training.importers.model import messages_hash

DEFAULT_DATASET = "feedback"
# "auto" takes the first method in this order that the ratings support. Combined methods come first
# because they train on more of the ratings; among signals, a DPO pair (two answers to the same
# question, one preferred) says more than KTO's unpaired good/bad labels, which say more than SFT
# alone (it learns only the good answers).
AUTO_ORDER = ("sft+dpo", "sft+kto", "dpo", "kto", "sft")
# The replay pool is read newest round first and stops here: replay wants about share/(1-share)
# times the new SFT examples (tens to hundreds), so a few thousand candidates are plenty to sample from.
REPLAY_POOL_MAX = 5000
RATE_HINT = "rate answers in the Chat or Compare A/B tabs"


class FeedbackOptionError(ValueError):
    """A build option that cannot be used; `field` names it (since, replay_share, dataset) so each door can
    word it for its user (a flag, a form field)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class FeedbackRefused(Exception):
    """Nothing was written: no new ratings, or not enough for the method. `build` has the report, if any."""

    def __init__(self, message: str, *, method: str | None = None, build: FeedbackBuild | None = None,
                 tried: dict[str, FeedbackBuild] | None = None):
        super().__init__(message)
        self.method = method
        self.build = build
        self.tried = tried or {}
        """For method "auto": every single method's build, to say how far each is from enough."""


class NoNewRatings(FeedbackRefused):
    """No rating in the window at all."""


@dataclass(frozen=True)
class RoundBuild:
    """What `build_round` made (or, for a dry run, would make)."""

    dataset: str
    method: str
    requested_method: str
    """"auto" or the method asked for."""
    build: FeedbackBuild
    since: str | None
    """The window's lower bound (UTC ISO, exclusive); None for every rating."""
    previous: str | None
    """The feedback version the window starts after, when it does."""
    from_adapter: str | None
    """The adapter the next round continues from; None: the base model."""
    replay_pool: int
    """Conversations the replay was sampled from."""
    version: VersionRef | None = None
    """None for a dry run."""
    dry_run: bool = False
    replay_share: float = 0.2
    since_option: str | None = None
    """The --since text as given (None: the default window)."""

    @property
    def report(self) -> dict:
        return self.build.report

    def to_json(self) -> dict:
        rep = self.report
        kto_pos, kto_neg = self.build.kto_counts
        return {
            "version": str(self.version) if self.version else None,
            "version_id": self.version.id if self.version else None,
            "dataset": self.dataset,
            "dry_run": self.dry_run,
            "method": self.method,
            "requested_method": self.requested_method,
            "since": self.since,
            "scope": self.build.scope,
            "previous_build": self.previous,
            "from_adapter": self.from_adapter,
            "counts": {"sft": self.build.new_sft_count, "replay": self.build.replay_count, "kto": len(self.build.kto),
                       "kto_desirable": kto_pos, "kto_undesirable": kto_neg, "dpo": len(self.build.dpo)},
            "weights": {"desirable": self.build.desirable_weight, "undesirable": self.build.undesirable_weight},
            "ratings": {"read": rep["ratings"], "used": rep["ratings_used"], "left_out": rep["ratings_left_out"]},
            "rating_ids": list(self.build.rating_ids),
            "left_out": rep["left_out"],
            "left_out_by_reason": rep["left_out_by_reason"],
            "replay_pool": self.replay_pool,
            "report": rep,
        }


def parse_since(text: str | None) -> tuple[bool, str | None]:
    """--since -> (explicit, bound): (False, None) for the default window (after the last build),
    (True, None) for "all", (True, UTC ISO time) for a date or time; ValueError for anything else.

    A date is its midnight; a time without a zone is UTC, like every stored time.
    """
    if text is None or not text.strip():
        return False, None
    text = text.strip()
    if text.lower() == "all":
        return True, None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FeedbackOptionError("since", f"{text!r} is not a date or time: use 'all', a date like 2026-11-20 or a "
                         "time like 2026-11-20T14:30 (UTC unless it names a zone, e.g. 2026-11-20T14:30+01:00)"
                         ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return True, when.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def current_adapter(db: Database, name: str | None = None) -> dict | None:
    """The adapter the next round continues from: `name` (AdapterNotFound if unknown), else the newest
    non-archived one; None when there is none (the round starts from the base model)."""
    if name:
        return get_adapter(db, name)
    adapters = list_adapters(db, include_archived=False)
    return adapters[0] if adapters else None


def trained_versions(db: Database, adapter: dict | None) -> list[int]:
    """Dataset version ids `adapter` and its ancestors were trained on, newest round first."""
    out, seen = [], set()
    while adapter is not None and adapter["id"] not in seen:
        seen.add(adapter["id"])
        version_id = adapter.get("dataset_version_id")
        if version_id is None and adapter.get("run_id"):
            try:
                version_id = runs.get_run(db, adapter["run_id"])["dataset_version_id"]
            except runs.RunNotFound:
                version_id = None
        if version_id is not None and version_id not in out:
            out.append(version_id)
        adapter = get_adapter(db, adapter["parent_id"]) if adapter.get("parent_id") else None
    return out


def replay_pool(db: Database, adapter: dict | None, *, limit: int = REPLAY_POOL_MAX) -> list[dict]:
    """SFT conversations ({"messages"}) of what `adapter` and its ancestors were trained on, at most `limit`."""
    pool, seen = [], set()
    for version_id in trained_versions(db, adapter):
        # An import version repeats its parent's conversations: the same row counts once.
        for conv in iter_version_conversations(db, version_id, limit=limit):
            if conv["id"] not in seen:
                seen.add(conv["id"])
                pool.append({"messages": conv["messages"]})
                if len(pool) >= limit:
                    return pool
    return pool


def build_round(
    target: Settings | Database,
    *,
    dataset: str = DEFAULT_DATASET,
    method: str = "auto",
    since: str | None = None,
    replay_share: float = 0.2,
    from_adapter: str | None = None,
    user: str = "",
    dry_run: bool = False,
    seed: int = 0,
) -> RoundBuild:
    """Build the next feedback version of `dataset` from the ratings in the window; write it unless `dry_run`.

    `since`: None = the ratings given or changed after the last feedback build of `dataset` (all of
    them before the first build); "all" = every rating; a date or ISO time = those after it.
    `method`: "auto" (the first of AUTO_ORDER that has enough data) or one of METHODS.
    Raises ValueError (bad option), AdapterNotFound, NoNewRatings or FeedbackRefused; a refusal writes nothing.
    """
    if method != "auto":
        method_parts(method)
    if not 0 <= replay_share < 1:
        raise FeedbackOptionError("replay_share", f"must be at least 0 and below 1, got {replay_share!r}")
    dataset = validate_dataset_name(dataset)
    explicit, bound = parse_since(since)
    with _database(target) as db:
        _check_dataset(db, dataset)
        adapter = current_adapter(db, from_adapter)
        pool = replay_pool(db, adapter)
        # Reading the ratings, stamping the build and writing it happen under the write lock: every
        # rating is stamped under that lock too, so each one is either in this build's window or
        # stamped after it (see _let_clock_pass).
        with nullcontext() if dry_run else write_transaction(db):
            previous = None if explicit else last_build(db, dataset)
            if previous is not None:
                bound = previous["created_at"]
            scope = _scope(explicit, bound, previous)
            rows = rating_rows(db, since=bound)
            if not rows:
                raise NoNewRatings(_no_ratings(explicit, bound, previous))
            records = [RatingRecord.from_row(r) for r in rows]
            chosen, build = choose_method(records, method, replay=pool, replay_share=replay_share, seed=seed,
                                          scope=scope)
            result = RoundBuild(dataset=dataset, method=chosen, requested_method=method, build=build, since=bound,
                                previous=previous["ref"] if previous else None,
                                from_adapter=adapter["name"] if adapter else None, replay_pool=len(pool),
                                dry_run=dry_run, replay_share=replay_share,
                                since_option=since.strip() if explicit else None)
            if dry_run:
                return result
            ref = save_feedback_version(
                db, dataset=dataset, method=chosen, sft=sft_conversations(build, completions_for_ratings(db, build.rating_ids)),
                kto=build.kto, dpo=build.dpo,
                provenance=build.provenance, rating_ids=build.rating_ids, report=build.report, since=bound,
                from_adapter=result.from_adapter, desirable_weight=build.desirable_weight,
                undesirable_weight=build.undesirable_weight, user=user)
            _let_clock_pass(db, ref)
    return replace(result, version=ref)


def choose_method(records: list[RatingRecord], method: str, *, replay=(), replay_share: float = 0.2,
                  seed: int = 0, scope: str) -> tuple[str, FeedbackBuild]:
    """(method, build) for `method`, or for "auto" the first of AUTO_ORDER with enough data.

    Raises FeedbackRefused with check_enough's message: for an explicit method, that method's; for
    "auto" with nothing ready, that of the single method closest to its minimum (SFT on a tie).
    """
    def build(m: str) -> FeedbackBuild:
        return build_feedback_dataset(records, method=m, replay=replay, replay_share=replay_share, seed=seed,
                                      scope=scope)

    if method != "auto":
        made = build(method)
        problem = check_enough(made)
        if problem:
            raise FeedbackRefused(problem, method=method, build=made)
        return method, made
    tried = {}
    for m in AUTO_ORDER:
        tried[m] = build(m)
        if check_enough(tried[m]) is None:
            return m, tried[m]
    closest = max((m for m, parts in METHODS.items() if len(parts) == 1), key=lambda m: _readiness(tried[m]))
    raise FeedbackRefused(check_enough(tried[closest]), method=closest, build=tried[closest],
                          tried={m: tried[m] for m in METHODS if len(METHODS[m]) == 1 and m in tried})


def sft_conversations(build: FeedbackBuild, completions: dict[int, str] | None = None) -> list[NewConversation]:
    """The build's SFT rows as conversations to store, content-addressed like imports (replayed ones
    hash to the stored conversation they came from, so they are shared, not copied). `completions`
    ({rating id: captured completion id}) adds the /v1 completions an example came from to its lineage."""
    out = []
    for i, row in enumerate(build.sft):
        ids = list(build.provenance["sft"][i]) if i < len(build.provenance["sft"]) else []
        meta = {"rating_ids": ids} if ids else {"replay": True}
        if any(r in (completions or {}) for r in ids):
            meta["completion_ids"] = sorted({completions[r] for r in ids if r in completions})
        out.append(NewConversation(content_hash=messages_hash(row["messages"]), messages=row["messages"],
                                   source="feedback", source_format="feedback", meta=meta))
    return out


# --- helpers ---------------------------------------------------------------------------------------

@contextmanager
def _database(target: Settings | Database) -> Iterator[Database]:
    if isinstance(target, Database):
        yield target
    else:
        with connect(target.db_path) as db:
            yield db


def _check_dataset(db: Database, dataset: str) -> None:
    """Feedback versions hold one round's rows, not a growing set: keep them out of imported datasets."""
    if has_imported_versions(db, dataset):
        raise FeedbackOptionError("dataset", f"{dataset!r} holds imported conversations; feedback builds go to a "
                                             f"dataset of their own (default {DEFAULT_DATASET!r}): choose another")


def shortfall(build: FeedbackBuild) -> dict[str, int]:
    """How many more new rows a single-method build needs, by what gives them: {"sft": 2} (answers to learn),
    {"kto_desirable": 1, "kto_undesirable": 3} (thumbs up, thumbs down), {"dpo": 5} (preference pairs); {} when
    it has enough."""
    m, part = build.minimums, method_parts(build.method)[0]
    if part == "sft":
        need = {"sft": m["sft"] - build.new_sft_count}
    elif part == "dpo":
        need = {"dpo": m["dpo"] - len(build.dpo)}
    else:
        pos, neg = build.kto_counts
        need = {"kto_desirable": m["kto_desirable"] - pos, "kto_undesirable": m["kto_undesirable"] - neg}
    return {k: v for k, v in need.items() if v > 0}


def _readiness(build: FeedbackBuild) -> float:
    """How close a single-method build is to its minimum (1.0 = enough)."""
    m, part = build.minimums, method_parts(build.method)[0]
    if part == "sft":
        return build.new_sft_count / m["sft"]
    if part == "dpo":
        return len(build.dpo) / m["dpo"]
    pos, neg = build.kto_counts
    return min(pos / m["kto_desirable"], neg / m["kto_undesirable"])


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _scope(explicit: bool, bound: str | None, previous: dict | None) -> str:
    if previous is not None:
        return f"the feedback since {previous['ref']} ({_when(bound)})"
    if bound is not None:
        return f"the feedback since {_when(bound)}"
    return "all the feedback" if explicit else "all the feedback so far"


def _no_ratings(explicit: bool, bound: str | None, previous: dict | None) -> str:
    if previous is not None:
        return f"no ratings since {previous['ref']} ({_when(bound)}); {RATE_HINT}, or build from all ratings"
    if bound is not None:
        return f"no ratings since {_when(bound)}; {RATE_HINT}, or build from an earlier date"
    return f"no ratings yet; {RATE_HINT} first"


def _let_clock_pass(db: Database, ref: VersionRef) -> None:
    """Hold the write lock until the clock has passed the build's stamp (millisecond resolution), so a
    rating written after this build is stamped strictly later and the next window (`> stamp`) sees it."""
    stamp = get_build(db, ref.id)["created_at"]
    while now() <= stamp:
        time.sleep(0.0005)


__all__ = ["AUTO_ORDER", "METHODS", "FeedbackOptionError", "FeedbackRefused", "NoNewRatings", "RoundBuild", "build_round", "choose_method",
           "current_adapter", "parse_since", "replay_pool", "sft_conversations", "trained_versions"]

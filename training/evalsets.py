"""Eval-set items from held-out splits, imported files, corrected answers and hand-written items; overlap exclusion.

An item is a conversation up to an assistant turn (the prompt), an optional reference answer and
optional named checks. Pure builders return `store.evaluations.NewEvalItem`s; thin `build_*`
functions write them as a new eval set version through the store (which validates every item).

- held-out: the exact conversations a run held out (training.data.split_conversations with the
  run's eval_fraction and seed, on its dataset version's conversations in order), each cut at its
  last assistant turn: prompt = the messages before it, reference = that turn;
- file: any import format (training.importers), every conversation cut the same way;
- corrections: a corrected answer from the ratings is a "golden" answer: prompt = the rated
  answer's context, reference = the correction;
- manual: a question (or a conversation ending with a user turn), an optional reference and checks.

`exclude_eval_overlap(conversations, eval_items)` keeps eval items out of training: a conversation
is held out (never trained on) when the prompt before any of its assistant turns equals an eval item's prompt after
normalisation (store.evaluations.prompt_key: case, spacing and system messages ignored).

    .venv/bin/python -m pytest tests/test_eval_store.py tests/test_eval_wiring.py -q
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Collection, Iterable, Sequence

from sqlite_utils import Database

from store import evaluations as ev
from store.datasets import iter_version_conversations
from store.evaluations import EvalSetRef, NewEvalItem, prompt_key
from store.feedback import rating_rows
from store.runs import get_run
from training.data import split_conversations


class NoEvalItems(ValueError):
    """The source gave no usable eval item; the message says why."""


def cut_at_last_assistant(messages: Sequence[dict]) -> tuple[list[dict], str] | None:
    """(prompt, reference): the messages before the last assistant turn, and that turn's text.

    None when there is no assistant turn after a user turn (nothing to evaluate).
    """
    for i in range(len(messages) - 1, 0, -1):
        m = messages[i]
        if m.get("role") == "assistant" and str(m.get("content") or "").strip():
            prompt = [{"role": p["role"], "content": p["content"]} for p in messages[:i]]
            if prompt and prompt[-1]["role"] == "user":
                return prompt, str(m["content"]).strip()
            return None
    return None


def items_from_conversations(conversations: Iterable[dict], *, source: str) -> tuple[list[NewEvalItem], int]:
    """Cut each conversation ({"messages", "id"?}) at its last assistant turn; returns (items, skipped)."""
    items, skipped = [], 0
    for conv in conversations:
        cut = cut_at_last_assistant(conv["messages"])
        if cut is None:
            skipped += 1
            continue
        meta = {"source": source}
        if conv.get("id") is not None:
            meta["conversation_id"] = conv["id"]
        items.append(NewEvalItem(cut[0], cut[1], [], meta))
    return items, skipped


def heldout_items(conversations: Sequence[dict], *, eval_fraction: float, seed: int, source: str = "heldout",
                  never_train: Collection[int] = ()) -> list[NewEvalItem]:
    """The items of the conversations a run with `eval_fraction`, `seed` and `never_train` held out (the trainer's
    own split)."""
    _, held = split_conversations(list(conversations), eval_fraction, seed, never_train)
    return items_from_conversations(held, source=source)[0]


def correction_items(rows: Iterable[dict]) -> list[NewEvalItem]:
    """Corrected answers (store.feedback.rating_rows dicts) -> items with the correction as reference.

    A correction without a usable context (empty, not ending with a user turn) is left out.
    """
    items = []
    for r in rows:
        if r.get("kind") != "correction" or not str(r.get("value") or "").strip():
            continue
        context = json.loads(r["context"]) if isinstance(r.get("context"), str) else (r.get("context") or [])
        if not context or context[-1].get("role") != "user":
            continue
        prompt = [{"role": m["role"], "content": m["content"]} for m in context]
        items.append(NewEvalItem(prompt, r["value"].strip(), [], {"source": "correction", "rating_id": r.get("id")}))
    return items


def manual_item(question: str | list[dict], *, reference: str | None = None, checks: list[dict] | None = None,
                system: str | None = None) -> NewEvalItem:
    """A hand-written item: a question (or a conversation ending with a user turn), reference and checks.

    Validated at once (ValueError naming the field), so the browser can show the problem.
    """
    if isinstance(question, str):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    else:
        messages = list(question)
    return ev.validate_item(NewEvalItem(messages, reference, checks, {"source": "manual"}), "the item")


# --- keeping eval items out of training ---
def conversation_prompt_keys(messages: Sequence[dict]) -> set[str]:
    """The prompt key before every assistant turn of a training conversation (each answer it trains)."""
    return {prompt_key(list(messages[:i])) for i, m in enumerate(messages) if m.get("role") == "assistant" and i}


def exclude_eval_overlap(conversations: Sequence[dict], eval_items: Iterable[dict | NewEvalItem | str]
                         ) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): drop every conversation that would train an answer to an eval item's prompt.

    `eval_items` are items (with "messages") or their prompt keys (store.evaluations.eval_prompt_keys).
    """
    keys = set()
    for item in eval_items:
        if isinstance(item, str):
            keys.add(item)
        else:
            keys.add(prompt_key(item.messages if isinstance(item, NewEvalItem) else item["messages"]))
    kept, dropped = [], []
    for conv in conversations:
        (dropped if conversation_prompt_keys(conv["messages"]) & keys else kept).append(conv)
    return kept, dropped


# --- thin store IO ---
def run_heldout_items(db: Database, run_id: int) -> list[NewEvalItem]:
    """The items a training run held out, rebuilt from its stored config (dataset version, fraction, seed).

    The conversations the run's config lists in `excluded_conversation_ids` (eval items, never trained on)
    were held out too, so they are items here as well: the split is the one the run made.
    """
    run = get_run(db, run_id)
    cfg = run["config"]
    fraction = float(cfg.get("eval_fraction") or 0)
    if fraction <= 0 or not cfg.get("dataset_version_id"):
        raise NoEvalItems(f"run {run_id} held nothing out (eval_fraction={fraction:g}): build the eval set from "
                          "a file, corrections or hand-written items instead")
    conversations = list(iter_version_conversations(db, cfg["dataset_version_id"]))
    items = heldout_items(conversations, eval_fraction=fraction, seed=int(cfg.get("seed", 42)),
                          source=f"run {run_id}", never_train=cfg.get("excluded_conversation_ids") or ())
    if not items:
        raise NoEvalItems(f"run {run_id}'s held-out conversations have no assistant turn to evaluate")
    return items


def with_checks(items: Sequence[NewEvalItem], checks: Sequence[dict] | None) -> list[NewEvalItem]:
    """The same checks added to every item (e.g. "states the 30-day refund rule" on a file of refund questions)."""
    if not checks:
        return list(items)
    return [replace(i, checks=[*(i.checks or []), *checks]) for i in items]


def build_from_run(db: Database, name: str, run_id: int, *, created_by: str = "",
                   checks: Sequence[dict] | None = None) -> EvalSetRef:
    items = with_checks(run_heldout_items(db, run_id), checks)
    return ev.create_eval_set_version(db, name, items, source_kind="heldout", source_ref=f"run {run_id}",
                                      created_by=created_by)


def file_items(path: Path, options=None) -> tuple[list[NewEvalItem], dict]:
    """Items from a conversation-log file in any import format; returns (items, report)."""
    from training.importers import Conversation, Reject, open_import

    path = Path(path)
    stream = open_import(path, options)
    convs, rejected = [], 0
    for item in stream:
        if isinstance(item, Conversation):
            convs.append({"messages": item.messages})
        elif isinstance(item, Reject):
            rejected += 1
    items, skipped = items_from_conversations(convs, source=path.name)
    return items, {"file": path.name, "format": stream.format, "items": len(items), "rejected": rejected,
                   "without_answer": skipped}


def build_from_file(db: Database, name: str, path: Path, *, created_by: str = "", options=None,
                    checks: Sequence[dict] | None = None) -> tuple[EvalSetRef, dict]:
    items, report = file_items(path, options)
    items = with_checks(items, checks)
    if not items:
        raise NoEvalItems(f"{Path(path).name}: no conversation with an assistant answer to evaluate "
                          f"({report['rejected']} rejected)")
    from training.ingest import file_sha256

    ref = ev.create_eval_set_version(db, name, items, source_kind="file",
                                     source_ref=json.dumps({"file": report["file"], "sha256": file_sha256(Path(path)),
                                                            "format": report["format"]}),
                                     created_by=created_by)
    return ref, report


def build_from_corrections(db: Database, name: str, *, since: str | None = None, created_by: str = "",
                           checks: Sequence[dict] | None = None) -> EvalSetRef:
    items = with_checks(correction_items(rating_rows(db, since=since)), checks)
    if not items:
        raise NoEvalItems("no corrected answer to build eval items from: correct some answers in the Chat tab first")
    ids = sorted(i.meta["rating_id"] for i in items if i.meta.get("rating_id") is not None)
    return ev.create_eval_set_version(db, name, items, source_kind="corrections",
                                      source_ref=json.dumps({"ratings": ids, "since": since}), created_by=created_by)


def build_manual(db: Database, name: str, items: Sequence[NewEvalItem], *, created_by: str = "") -> EvalSetRef:
    if not items:
        raise NoEvalItems("no item given")
    return ev.create_eval_set_version(db, name, items, source_kind="manual", source_ref=created_by,
                                      created_by=created_by)


# --- the automatic evaluation at the end of a run ---
AUTO_SET_PREFIX = "auto-"


def auto_eval_items(db: Database, run_id: int, *, default_set: str, budget: int) -> tuple[list[NewEvalItem], str]:
    """The items the end-of-run evaluation asks: the run's held-out items and the team's default eval set's,
    taking turns, at most `budget`; and where they came from, in words ("" when there are none)."""
    sources = []
    try:
        held = run_heldout_items(db, run_id)
    except NoEvalItems:
        held = []
    if held:
        sources.append(f"{len(held)} held out by run {run_id}")
    team = []
    if default_set:
        ref = ev.resolve_set(db, default_set)
        team = [NewEvalItem(r["messages"], r["reference"], r["checks"], r["meta"]) for r in ev.iter_eval_items(db, ref.id)]
        sources.append(f"{len(team)} from {ref}")
        # A held-out conversation that asks a team item's question (an eval item is held out of training) is
        # asked once, as the team's item: it carries the team's reference and checks.
        asked = {prompt_key(t.messages) for t in team}
        held = [h for h in held if prompt_key(h.messages) not in asked]
    # The two sources take turns, so a small budget still samples both.
    mixed = [x for i in range(max(len(held), len(team))) for x in (held[i:i + 1] + team[i:i + 1])]
    return mixed[:budget], ", ".join(sources)


def queue_auto_eval(db: Database, run_id: int, *, candidate: str, baseline: str, default_set: str, budget: int,
                    max_tokens: int) -> int | None:
    """Write the end-of-run eval set (`auto-<candidate>`) and queue its eval run; the serving process runs it
    once the candidate is loaded. None (nothing queued) when the budget is 0 or there is nothing to ask."""
    if budget <= 0:
        return None
    items, sources = auto_eval_items(db, run_id, default_set=default_set, budget=budget)
    if not items:
        return None
    ref = ev.create_eval_set_version(db, AUTO_SET_PREFIX + candidate, items, source_kind="heldout",
                                     source_ref=f"run {run_id}", note=sources, include_parent=False)
    return ev.create_eval_run(db, candidate=candidate, baseline=baseline, set_version_id=ref.id, trigger="auto",
                              config={"max_items": budget, "max_tokens": max_tokens})

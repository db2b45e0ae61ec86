"""Judge scores for captured /v1 answers: an LLM judge grades each answer nobody rated yet, 0 (bad) to 1 (good).

The review queue's "Judge score below" filter then puts the weakest answers first. The judge is the
evaluation's (serving.evaluation.judge: any OpenAI-compatible endpoint, the same `--judge` flag); here it
grades one answer on a 1-5 scale instead of comparing two. Pure parts: `build_score_messages` (the
prompt) and `parse_score` (the judge's text -> 0..1 or None); `judge_captures` is the thin loop that
reads captures, asks, and stores each score as it comes (stopping early keeps what was scored).

An answer the judge's reply cannot be read for keeps no score (counted, retried by the next run); an
unreachable judge stops the run with its reason.

    tuneloop traffic judge --judge URL=http://gpu-box:8000/v1,MODEL=qwen2.5-32b --limit 200
    .venv/bin/python -m pytest tests/test_traffic_judge.py -q
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from serving.evaluation.judge import JudgeUnavailable, _conversation_text, json_objects
from store.db import connect
from store.traffic import CaptureFilter, find_captures, get_capture, set_judge_score

SYSTEM_PROMPT = (
    "You grade one answer a customer-support assistant gave to the conversation shown. Judge whether it is "
    "correct, follows the shop's policies as stated in the conversation, is helpful and polite, and invents no "
    "links, e-mail addresses, phone numbers or policies. Do not reward length. Reply with one JSON object and "
    'nothing else: {"score": 1 | 2 | 3 | 4 | 5, "reason": "<one short sentence>"} where 1 is wrong or harmful, '
    "3 is acceptable and 5 is correct, complete and polite."
)
_SCORE_LINE = re.compile(r"^[\s*#>-]*score\s*[:=]\s*\**\s*([1-5])\b", re.IGNORECASE | re.MULTILINE)


def build_score_messages(messages: list[dict], answer: str) -> list[dict]:
    """The chat messages asking the judge to grade `answer` to the conversation `messages`."""
    user = (f"## Conversation\n{_conversation_text(messages)}\n\n## The assistant's answer\n{answer or '(empty)'}"
            '\n\nGrade the answer. Reply with JSON only: {"score": 1-5, "reason": "..."}')
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_score(text: str | None) -> float | None:
    """The judge's grade as 0..1 (1 -> 0, 3 -> 0.5, 5 -> 1): a JSON object's "score" (preferred), else one
    'score: N' line. Anything else is None: a guess would sort the queue by noise."""
    raw = text or ""
    for data in json_objects(raw):
        score = data.get("score")
        if isinstance(score, str) and score.strip().isdigit():
            score = int(score.strip())
        if isinstance(score, (int, float)) and not isinstance(score, bool) and 1 <= score <= 5:
            return round((score - 1) / 4, 4)
    found = {m.group(1) for m in _SCORE_LINE.finditer(raw)}
    return (int(found.pop()) - 1) / 4 if len(found) == 1 else None


@dataclass(frozen=True)
class JudgeReport:
    scored: int
    unparsable: int
    """Answers whose grade could not be read: left unscored, tried again by the next run."""
    stopped: str | None = None
    """Why the run stopped early (the judge could not be reached), else None."""


def judge_captures(db_path: Path | str, ask: Callable[[list[dict]], str], *, deployment: str | None = None,
                   limit: int = 100) -> JudgeReport:
    """Grade up to `limit` complete captured answers that nobody rated and no judge scored yet, newest first.

    `ask` sends chat messages to the judge and returns its text (JudgeClient.ask); JudgeUnavailable stops
    the run. Each score is stored as soon as it is known."""
    with connect(db_path) as db:
        ids = [r["id"] for r in find_captures(db, CaptureFilter(deployment=deployment, rated=False, judged=False,
                                                                status="complete", limit=limit))]
    scored = unparsable = 0
    for cid in ids:
        with connect(db_path) as db:
            capture = get_capture(db, cid)
        try:
            score = parse_score(ask(build_score_messages(capture["messages"], capture["answer"])))
        except JudgeUnavailable as exc:
            return JudgeReport(scored, unparsable, stopped=str(exc))
        if score is None:
            unparsable += 1
            continue
        with connect(db_path) as db:
            set_judge_score(db, cid, score)
        scored += 1
    return JudgeReport(scored, unparsable)

"""Pairwise LLM judge over any OpenAI-compatible endpoint, asked in both orders to cancel position bias.

Pure parts: `build_judge_messages` (the prompt), `parse_judge_answer` (the judge's text -> A, B, tie
or unparsable), `combine_orders` (two orders -> candidate, baseline, tie or unparsable). The HTTP call
is `JudgeClient`, the only part that talks to a server.

Rules: the candidate is shown first as A, then second as B. When both orders name the same model (or
both say tie), that is the verdict; when they disagree, it is a tie (the judge preferred a position,
not an answer). When either answer cannot be parsed, the verdict is "unparsable", with the raw texts
kept, so the run counts and reports it instead of crashing or guessing. An endpoint that cannot be
reached or answers with an HTTP error raises JudgeUnavailable; the runner decides to stop or continue.

    judge = JudgeClient(JudgeConfig(base_url="http://gpu-box:8000/v1", model="qwen2.5-32b"))
    judge.judge(prompt_messages, candidate_answer, baseline_answer, reference=None)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

VERDICTS = ("candidate", "baseline", "tie", "unparsable")
MAX_REASON_CHARS = 300
MAX_RAW_CHARS = 2000

SYSTEM_PROMPT = (
    "You compare two answers a customer-support assistant could give to the same conversation. "
    "Prefer the answer that is correct, follows the shop's policies as stated in the conversation or the "
    "reference, is helpful and polite, and invents no links, e-mail addresses, phone numbers or policies. "
    "Do not prefer an answer for being longer. Reply with one JSON object and nothing else: "
    '{"winner": "A" | "B" | "tie", "reason": "<one short sentence>"}'
)


class JudgeUnavailable(RuntimeError):
    """The judge endpoint could not be reached or answered with an error; the message says which."""


@dataclass(frozen=True)
class JudgeConfig:
    """Where the judge is: any OpenAI-compatible endpoint and model."""

    base_url: str
    """e.g. http://127.0.0.1:8011/v1 (a '/v1' is added when missing)."""
    model: str
    api_key: str = ""
    """Sent as a Bearer token; never stored with a run."""
    timeout_s: float = 120.0
    max_tokens: int = 200

    def __post_init__(self):
        if not self.base_url.strip():
            raise ValueError("judge base_url is empty: give the judge endpoint's URL, e.g. http://host:8000/v1")
        if not self.model.strip():
            raise ValueError("judge model is empty: give the model name the judge endpoint serves")

    def public(self) -> dict:
        """What is stored with a run (the key is left out)."""
        return {"base_url": self.base_url, "model": self.model}


@dataclass(frozen=True)
class OrderVerdict:
    """One judge answer, for one order of the two answers."""

    winner: str | None
    """A | B | tie; None when the answer could not be parsed."""
    reason: str
    raw: str


@dataclass(frozen=True)
class JudgeVerdict:
    """The combined verdict on one item."""

    verdict: str
    """candidate | baseline | tie | unparsable"""
    reason: str
    orders: tuple[OrderVerdict, OrderVerdict]
    """(candidate shown as A, candidate shown as B)"""
    raw: list[str] = field(default_factory=list)
    """The raw answers, kept when the verdict is unparsable."""


def _conversation_text(messages: list[dict]) -> str:
    return "\n".join(f"{m.get('role', '?').upper()}: {m.get('content', '')}" for m in messages)


def build_judge_messages(prompt_messages: list[dict], answer_a: str, answer_b: str,
                         reference: str | None = None) -> list[dict]:
    """The chat messages for one judgement of answer A against answer B."""
    parts = [f"## Conversation\n{_conversation_text(prompt_messages)}"]
    if reference:
        parts.append(f"## Reference answer (what a good answer says)\n{reference}")
    parts += [f"## Answer A\n{answer_a or '(empty)'}", f"## Answer B\n{answer_b or '(empty)'}",
              'Which answer is better? Reply with JSON only: {"winner": "A" | "B" | "tie", "reason": "..."}']
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
# A "Winner: A" line, at the start of a line only: a judge that echoes the instructions (which show
# the JSON shape with every option) must not be read as choosing the first option.
_WINNER_LINE = re.compile(r"^[\s*#>-]*winner\s*[:=]\s*\**\s*(A|B|tie)\b", re.IGNORECASE | re.MULTILINE)
_WINNER_WORDS = {"a": "A", "b": "B", "tie": "tie", "answer a": "A", "answer b": "B", "draw": "tie", "equal": "tie"}


def _clip(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def json_objects(raw: str) -> list[dict]:
    """The flat JSON objects in a judge's reply, last first (the answer usually ends the reply)."""
    out = []
    for match in reversed(_JSON_OBJECT.findall(raw)):
        try:
            data = json.loads(match)
        except ValueError:
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def parse_judge_answer(text: str | None) -> OrderVerdict:
    """Read the judge's answer: a JSON object with "winner" (preferred), else a 'winner: A' line.

    Anything else (prose naming both answers, an empty reply, a winner other than A/B/tie) is
    unparsable: guessing would put noise into the win rate.
    """
    raw = text or ""
    for data in json_objects(raw):
        if isinstance(data.get("winner"), str):
            winner = _WINNER_WORDS.get(data["winner"].strip().lower())
            if winner:
                return OrderVerdict(winner, _clip(str(data.get("reason") or ""), MAX_REASON_CHARS),
                                    _clip(raw, MAX_RAW_CHARS))
    found = {m.group(1).lower() for m in _WINNER_LINE.finditer(raw)}
    if len(found) == 1:
        winner = _WINNER_WORDS[found.pop()]
        reason = _WINNER_LINE.sub("", raw).strip(" \n:.-")
        return OrderVerdict(winner, _clip(reason, MAX_REASON_CHARS), _clip(raw, MAX_RAW_CHARS))
    return OrderVerdict(None, "", _clip(raw, MAX_RAW_CHARS))


def combine_orders(candidate_first: OrderVerdict, candidate_second: OrderVerdict) -> JudgeVerdict:
    """Combine the two orders: agreement stands, disagreement is a tie, an unparsable order is unparsable.

    `candidate_first` judged (A=candidate, B=baseline); `candidate_second` judged (A=baseline, B=candidate).
    """
    orders = (candidate_first, candidate_second)
    if candidate_first.winner is None or candidate_second.winner is None:
        which = " and ".join(n for n, o in (("first", candidate_first), ("second", candidate_second))
                             if o.winner is None)
        return JudgeVerdict("unparsable", f"the judge's answer could not be read ({which} order)", orders,
                            raw=[candidate_first.raw, candidate_second.raw])
    first = {"A": "candidate", "B": "baseline", "tie": "tie"}[candidate_first.winner]
    second = {"A": "baseline", "B": "candidate", "tie": "tie"}[candidate_second.winner]
    if first == second:
        reason = candidate_first.reason or candidate_second.reason
        return JudgeVerdict(first, reason, orders)
    return JudgeVerdict("tie", f"the two orders disagree ({first} first, {second} when swapped): "
                               f"counted as a tie", orders)


class JudgeClient:
    """Asks the judge endpoint over HTTP with the openai client (temperature 0, both orders)."""

    def __init__(self, config: JudgeConfig):
        import openai

        self.config = config
        url = config.base_url.rstrip("/")
        self._openai = openai
        self._client = openai.OpenAI(base_url=url if url.endswith("/v1") else url + "/v1",
                                     api_key=config.api_key or "EMPTY",
                                     timeout=openai.Timeout(config.timeout_s, connect=5.0), max_retries=1)

    def close(self) -> None:
        self._client.close()

    def ask(self, messages: list[dict]) -> str:
        """One judge completion's text; raises JudgeUnavailable on any transport or HTTP error."""
        try:
            done = self._client.chat.completions.create(model=self.config.model, messages=messages, temperature=0,
                                                        max_tokens=self.config.max_tokens)
        except self._openai.APIStatusError as exc:
            raise JudgeUnavailable(f"the judge endpoint answered {exc.status_code} for model "
                                   f"{self.config.model!r}") from None
        except self._openai.APIError as exc:  # connection refused, timeout, malformed response
            raise JudgeUnavailable(f"the judge endpoint {self.config.base_url} is not reachable "
                                   f"({type(exc).__name__})") from None
        if not done.choices:
            return ""
        return done.choices[0].message.content or ""

    def judge(self, prompt_messages: list[dict], candidate: str, baseline: str,
              reference: str | None = None) -> JudgeVerdict:
        first = parse_judge_answer(self.ask(build_judge_messages(prompt_messages, candidate, baseline, reference)))
        second = parse_judge_answer(self.ask(build_judge_messages(prompt_messages, baseline, candidate, reference)))
        return combine_orders(first, second)

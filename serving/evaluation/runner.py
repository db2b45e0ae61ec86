"""One eval run: both models answer every item through the served OpenAI-compatible API, scored and judged.

    run_id = plan_eval_run(db, candidate="support-v4", baseline="support-v3", eval_set="refunds")
    outcome = execute_eval_run(settings.db_path, run_id, base_url=server_url(settings),
                               embedder=Embedder(dir), progress=lambda done, total, result: ...)

Answers come from vLLM over HTTP only (the openai client, temperature 0), `concurrency` items in
flight at once so the server batches them; each item's answers, scores and verdict are written to
the store as soon as it is done (a UI polls `eval_runs.done/total` and the per-item rows), and the
run ends `done`, `stopped` or `failed` with its summary and reason. `run_items` is the same loop
without the store, for tests and the benchmark.

Bad input and failures, each a clear message and nothing lost:
- an empty set -> EmptyEvalSet; a model the server does not serve or cannot load (404, or 400 that
  is not about the prompt's length) -> ModelUnavailable; the server down -> ServerUnavailable. The
  run is marked failed with that message (results so far are kept) and the error is raised.
- a judge that is down or answers garbage: `on_judge_error="continue"` records the item's verdict as
  "error" / "unparsable" and goes on; "stop" keeps what was done and ends the run `stopped` with the
  reason. A prompt longer than the model's context is that item's empty answer, noted, not a failure.
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Protocol, Sequence

from serving.chat import DOWN_HINT
from serving.evaluation.checks import Check, GroundingIndex, parse_checks
from serving.evaluation.judge import JudgeClient, JudgeConfig, JudgeUnavailable, JudgeVerdict
from serving.evaluation.scoring import score_answer
from serving.evaluation.summary import EvalSummary, ItemResult, summarize
from store import evaluations as ev
from store.db import connect
from store.ratings import head_to_head
from store.winrate import WinRate

DEFAULT_MAX_TOKENS = 256
DEFAULT_CONCURRENCY = 4


class EvalError(RuntimeError):
    """An eval run could not go on; the message says what happened and what to do."""


class EmptyEvalSet(EvalError):
    pass


class ModelUnavailable(EvalError):
    pass


class ServerUnavailable(EvalError):
    pass


@dataclass(frozen=True)
class EvalSettings:
    """How a run asks the models (stored with the run in `eval_runs.config`)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    """Longest answer; an answer stopped there counts as cut off."""
    concurrency: int = DEFAULT_CONCURRENCY
    """Items in flight at once (each asks both models, then the judge twice)."""
    on_judge_error: Literal["stop", "continue"] = "continue"
    """What a judge that is down or answers garbage does to the run."""
    max_items: int | None = None
    """Budget: evaluate at most this many items of the set (the first ones). None: all."""
    request_timeout_s: float = 600.0

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 1 <= self.concurrency <= 256:
            raise ValueError(f"concurrency must be between 1 and 256, got {self.concurrency}")
        if self.on_judge_error not in ("stop", "continue"):
            raise ValueError(f"on_judge_error must be 'stop' or 'continue', not {self.on_judge_error!r}")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items must be at least 1 (or None for all), got {self.max_items}")

    def to_json(self) -> dict:
        return {"max_tokens": self.max_tokens, "concurrency": self.concurrency, "on_judge_error": self.on_judge_error,
                "max_items": self.max_items, "request_timeout_s": self.request_timeout_s}

    @classmethod
    def from_json(cls, data: dict | None) -> "EvalSettings":
        data = data or {}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class EvalItem:
    id: int
    position: int
    messages: list[dict]
    reference: str | None
    checks: list[Check]

    @classmethod
    def from_row(cls, row: dict) -> "EvalItem":
        return cls(row["id"], row["position"], row["messages"], row.get("reference"),
                   parse_checks(row.get("checks"), where=f"eval item {row['position']}"))


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None
    note: str | None = None


@dataclass
class EvalOutcome:
    status: str
    """done | stopped | failed"""
    results: list[ItemResult] = field(default_factory=list)
    summary: EvalSummary | None = None
    error: str | None = None
    failure: EvalError | None = field(default=None, repr=False)
    """The error that ended a failed run (execute_eval_run raises it)."""


class ModelAsker(Protocol):
    def answer(self, model: str, messages: list[dict], max_tokens: int) -> Answer: ...


class Judge(Protocol):
    def judge(self, prompt_messages: list[dict], candidate: str, baseline: str,
              reference: str | None = None) -> JudgeVerdict: ...


class OpenAIAsker:
    """Asks a served model over HTTP with the openai client, temperature 0; maps errors to EvalError."""

    def __init__(self, base_url: str, *, api_key: str = "EMPTY", timeout_s: float = 600.0):
        import openai

        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self._openai = openai
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY",
                                     timeout=openai.Timeout(timeout_s, connect=5.0), max_retries=0)

    def close(self) -> None:
        self._client.close()

    def answer(self, model: str, messages: list[dict], max_tokens: int) -> Answer:
        openai = self._openai
        try:
            done = self._client.chat.completions.create(model=model, messages=messages, temperature=0,
                                                        max_tokens=max_tokens)
        except openai.NotFoundError as exc:
            raise ModelUnavailable(f"the model server does not serve {model!r} ({_message(exc)}): load the "
                                   "adapter (tuneloop adapters load NAME) or check the name") from None
        except openai.BadRequestError as exc:
            text = _message(exc)
            if any(w in text.lower() for w in ("context length", "maximum context", "too long", "max_tokens")):
                return Answer("", "error", f"prompt too long for {model}: {text[:200]}")
            raise ModelUnavailable(f"the model server refused {model!r} (400: {text[:300]})") from None
        except openai.APIStatusError as exc:
            raise ServerUnavailable(f"the model server answered {exc.status_code} for {model!r}: "
                                    f"{_message(exc)[:300]}") from None
        except openai.APIError as exc:
            raise ServerUnavailable(f"the model server at {self.base_url} is not reachable "
                                    f"({type(exc).__name__}): {DOWN_HINT}") from None
        choice = done.choices[0] if done.choices else None
        if choice is None:
            return Answer("", None, "the server returned no choice")
        return Answer(choice.message.content or "", choice.finish_reason)


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(exc)



def make_scorer(grounding: GroundingIndex | None, embedder=None) -> Callable[[EvalItem, Answer, Answer], tuple]:
    """(item, candidate answer, baseline answer) -> (candidate SideScores, baseline SideScores)."""

    def score(item: EvalItem, cand: Answer, base: Answer):
        sims: list[float | None] = [None, None]
        if item.reference and embedder is not None:
            sims = embedder.similarities([cand.text, base.text], item.reference)
        return tuple(score_answer(a.text, a.finish_reason, reference=item.reference, checks=item.checks,
                                  grounding=grounding, similarity=s) for a, s in zip((cand, base), sims))

    return score


def _work(item: EvalItem, candidate: str, baseline: str, asker: ModelAsker, judge: Judge | None,
          max_tokens: int):
    """One item on a worker thread: both answers, then the judge (its failure is returned, not raised)."""
    cand = asker.answer(candidate, item.messages, max_tokens)
    base = asker.answer(baseline, item.messages, max_tokens)
    verdict: JudgeVerdict | JudgeUnavailable | None = None
    if judge is not None:
        try:
            verdict = judge.judge(item.messages, cand.text, base.text, item.reference)
        except JudgeUnavailable as exc:
            verdict = exc
    return cand, base, verdict


def run_items(items: Sequence[EvalItem], *, candidate: str, baseline: str, asker: ModelAsker,
              scorer: Callable[[EvalItem, Answer, Answer], tuple], settings: EvalSettings = EvalSettings(),
              judge: Judge | None = None, judge_model: str | None = None,
              on_result: Callable[[ItemResult, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None, people: WinRate | None = None) -> EvalOutcome:
    """Evaluate `items`, calling `on_result(result, done)` on this thread after each item.

    Raises EmptyEvalSet before asking anything. A ModelUnavailable/ServerUnavailable from a worker
    ends the loop; the outcome is then "failed" with the message and the results so far (the caller
    decides whether to raise). Scoring runs on the calling thread (one embedding model, no locks).
    """
    if not items:
        raise EmptyEvalSet("the eval set has no items: add items to it before running it")
    results: list[ItemResult] = []
    notes: list[str] = []
    status, error, failure = "done", None, None
    pending = list(items)
    with cf.ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="eval") as pool:
        in_flight: dict[cf.Future, EvalItem] = {}

        def refill() -> None:
            while pending and len(in_flight) < settings.concurrency:
                item = pending.pop(0)
                in_flight[pool.submit(_work, item, candidate, baseline, asker, judge, settings.max_tokens)] = item

        refill()
        while in_flight:
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: in_flight[f].position):
                item = in_flight.pop(fut)
                if status != "done":
                    continue  # stopping: in-flight work finishes, but is not recorded
                try:
                    cand, base, verdict = fut.result()
                except EvalError as exc:
                    status, error, failure = "failed", str(exc), exc
                    continue
                result, judge_failed = _result(item, cand, base, verdict, scorer)
                results.append(result)
                for a in (cand, base):
                    if a.note:
                        notes.append(f"item {item.position}: {a.note}")
                if on_result:
                    on_result(result, len(results))
                if judge_failed and settings.on_judge_error == "stop":
                    status, error = "stopped", f"the judge failed on item {item.position}: {result.reason}"
                elif should_stop and should_stop():
                    status, error = "stopped", "stopped on request"
            if status == "done":
                refill()
            else:
                pending.clear()
    summary = summarize(results, judge_model=judge_model if judge is not None else None, people=people,
                        notes=notes) if results else None
    return EvalOutcome(status, results, summary, error, failure)


def _result(item: EvalItem, cand: Answer, base: Answer, verdict, scorer) -> tuple[ItemResult, bool]:
    cand_scores, base_scores = scorer(item, cand, base)
    v = reason = raw = None
    failed = False
    if isinstance(verdict, JudgeUnavailable):
        v, reason, failed = "error", str(verdict), True
    elif verdict is not None:
        v, reason = verdict.verdict, verdict.reason
        raw = verdict.raw or None
        failed = verdict.verdict == "unparsable"
    return ItemResult(item.id, item.position, cand.text, base.text, cand.finish_reason, base.finish_reason,
                      cand_scores, base_scores, v, reason, raw), failed


# --- the store-facing layer ---
def plan_eval_run(db, *, candidate: str, baseline: str, eval_set: str, judge: JudgeConfig | None = None,
                  settings: EvalSettings = EvalSettings(), trigger: str = "manual", created_by: str = "") -> int:
    """Queue a run of `candidate` against `baseline` on eval set `eval_set` ('name' or 'name@N').

    Raises EvalSetNotFound, or EmptyEvalSet for a set version without items.
    """
    ref = ev.resolve_set(db, eval_set)
    if next(ev.iter_eval_items(db, ref.id, limit=1), None) is None:
        raise EmptyEvalSet(f"eval set {ref} has no items")
    return ev.create_eval_run(db, candidate=candidate, baseline=baseline, set_version_id=ref.id,
                              judge=judge.public() if judge else None, config=settings.to_json(), trigger=trigger,
                              created_by=created_by)


def execute_eval_run(db_path: Path | str, run_id: int, *, base_url: str, api_key: str = "EMPTY",
                     judge_api_key: str = "", embedder=None, asker: ModelAsker | None = None,
                     judge: Judge | None = None,
                     progress: Callable[[int, int, ItemResult], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> EvalOutcome:
    """Run a planned eval run to its end, writing each item's result and the progress to the store.

    Opens its own database connection (call it from the thread, or process, that runs the eval).
    Returns the outcome for "done" and "stopped"; for a failure, marks the run failed with the
    reason and raises the EvalError. `asker`/`judge` replace the HTTP clients in tests.
    """
    with connect(db_path) as db:
        run = ev.get_eval_run(db, run_id)
        if run["status"] != "queued":
            raise EvalError(f"eval run {run_id} is {run['status']}, not queued: plan a new run to evaluate again")
        cfg = EvalSettings.from_json(run["config"])
        rows = list(ev.iter_eval_items(db, run["set_version_id"], limit=cfg.max_items))
        items = [EvalItem.from_row(r) for r in rows]
        ev.mark_eval_running(db, run_id, total=len(items))
        grounding = GroundingIndex.build(ev.grounding_texts(db), ev.allowlist(db))
        record = head_to_head(db, run["candidate"], run["baseline"])
        people = WinRate(record["wins"], record["losses"], record["ties"], record["both_bad"])
        own_asker = asker is None
        asker = asker or OpenAIAsker(base_url, api_key=api_key, timeout_s=cfg.request_timeout_s)
        judge_model = None
        own_judge = False
        if run["judge"]:
            judge_model = run["judge"]["model"]
            if judge is None:
                judge = JudgeClient(JudgeConfig(run["judge"]["base_url"], run["judge"]["model"], judge_api_key))
                own_judge = True
        else:
            judge = None

        def on_result(result: ItemResult, done: int) -> None:
            ev.record_item_result(db, run_id, result.to_row(), done=done)
            if progress:
                progress(done, len(items), result)

        try:
            outcome = run_items(items, candidate=run["candidate"], baseline=run["baseline"], asker=asker,
                                scorer=make_scorer(grounding, embedder), settings=cfg, judge=judge,
                                judge_model=judge_model, on_result=on_result, should_stop=should_stop,
                                people=people)
        except EvalError as exc:
            ev.finish_eval_run(db, run_id, "failed", error=str(exc))
            raise
        except Exception as exc:  # a bug of ours: the run must not stay "running" forever
            ev.finish_eval_run(db, run_id, "failed", error=internal_error(exc))
            raise
        finally:
            if own_asker:
                asker.close()
            if own_judge:
                judge.close()
        if embedder is None and outcome.summary is not None and outcome.summary.has_references:
            outcome.summary.notes.append("no embedding model: reference similarity not measured "
                                         "(run `tuneloop setup`)")
        summary = outcome.summary.to_json() if outcome.summary else None
        ev.finish_eval_run(db, run_id, outcome.status, summary=summary, error=outcome.error)
        if outcome.failure is not None:
            raise outcome.failure
        return outcome


def internal_error(exc: Exception) -> str:
    return f"internal error ({type(exc).__name__}: {exc})"


def fail_unstarted(db_path: Path | str, run_id: int, exc: Exception) -> None:
    """Mark a run failed that broke before `execute_eval_run` took it (loading the embedding model, say), so it
    does not stay queued for ever; a run the runner already ended is left as it is."""
    with connect(db_path) as db:
        if ev.get_eval_run(db, run_id)["status"] in ("queued", "running"):
            ev.finish_eval_run(db, run_id, "failed", error=internal_error(exc))


def load_summary(db, run_id: int) -> EvalSummary | None:
    run = ev.get_eval_run(db, run_id)
    return EvalSummary.from_json(run["summary"]) if run["summary"] else None


__all__ = ["Answer", "EmptyEvalSet", "EvalError", "EvalItem", "EvalOutcome", "EvalSettings", "ModelUnavailable",
           "OpenAIAsker", "ServerUnavailable", "execute_eval_run", "load_summary", "make_scorer", "plan_eval_run",
           "run_items"]

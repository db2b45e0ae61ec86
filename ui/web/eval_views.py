"""Pure renderers of the Evaluate tab: eval sets, eval runs, per-item results, the gate and deployments as tables and HTML.

No Gradio, no store: each takes the store's rows or serving's typed results and returns a DataFrame
or escaped HTML, so tests check them without a browser. Everything user-supplied is escaped.

    .venv/bin/python -m pytest tests/test_web_evaluate.py -q
"""

from __future__ import annotations

import html

import pandas as pd

from serving.evaluation.curve import CURVE_METRICS, CurvePoint
from serving.evaluation.summary import EvalSummary
from store.winrate import WinRate
from ui.text import eval_rows, short_time
from ui.web.html import conversation_html

SOURCE_WORDS = {"heldout": "held out by a training run", "file": "imported file", "corrections": "corrected answers",
                "manual": "written by hand"}
STATUS_WORDS = {"queued": "waiting to start", "running": "running", "done": "finished", "failed": "failed",
                "stopped": "stopped early"}
VERDICT_WORDS = {"candidate": "candidate better", "baseline": "baseline better", "tie": "tie (the two orders disagreed "
                 "or the judge saw no difference)", "unparsable": "judge answer could not be read",
                 "error": "judge failed"}
ACTION_WORDS = {"promote": "promoted", "force": "forced past the gate", "rollback": "rolled back"}

SET_COLUMNS = ["Eval set", "Versions", "Items (newest)", "Built from (newest)", "Built by", "Built (UTC)"]
RUN_COLUMNS = ["Run", "Status", "Candidate", "Against", "Eval set", "Items", "Similarity", "ROUGE-L", "Checks passed",
               "Invented contacts", "Length (words)", "Cut off or empty", "Judge win rate (95% CI)", "People's A/B"]
BOARD_COLUMNS = ["Rank", "Model", "Rating", "95% interval", "People's votes", "Judge verdicts"]
DEPLOY_COLUMNS = ["Deployment", "Answers with now", "Last change", "By", "When (UTC)", "Eval run"]
HISTORY_COLUMNS = ["When (UTC)", "Deployment", "Change", "From", "To", "By", "Eval run", "Reason / gate"]
CURVE_COLUMNS = ["round", "value", "metric", "model"]

ITEM_FILTERS = [("Every item", "all"), ("The judge preferred the baseline", "judge_lost"),
                ("A named check failed for the candidate", "check_failed"),
                ("The candidate invented a link, e-mail or phone", "invented"),
                ("An answer was cut off or empty", "cut_off")]


def _e(text) -> str:
    return html.escape("" if text is None else str(text))


def _pair(c: float | None, b: float | None, fmt: str = "{:.2f}") -> str:
    """'0.71 / 0.64' (candidate / baseline); a dash for what was not measured."""
    def one(x):
        return "–" if x is None else fmt.format(x)
    return f"{one(c)} / {one(b)}"


def _pooled_checks(side) -> float | None:
    passed = sum(c[0] for c in side.check_counts.values())
    checked = sum(c[1] for c in side.check_counts.values())
    return passed / checked if checked else None


# ------------------------------------------------------------------ eval sets

def sets_frame(sets: list[dict]) -> pd.DataFrame:
    """store.evaluations.list_eval_sets rows: one line per set, describing its newest version."""
    rows = []
    for s in sets:
        newest = s["versions"][0] if s["versions"] else {}
        rows.append([s["name"], len(s["versions"]), newest.get("items") or 0,
                     SOURCE_WORDS.get(newest.get("source_kind"), newest.get("source_kind") or ""),
                     newest.get("created_by") or "", short_time(newest.get("created_at"))])
    return pd.DataFrame(rows, columns=SET_COLUMNS)


def checks_html(checks: list[dict]) -> str:
    if not checks:
        return ""
    kinds = {"must_mention": "must mention", "must_not_mention": "must not mention", "regex": "must match"}
    parts = []
    for c in checks:
        values = " or ".join(f"“{_e(v)}”" for v in c.get("value") or [])
        if c.get("kind") == "must_not_mention":
            values = " nor ".join(f"“{_e(v)}”" for v in c.get("value") or [])
        parts.append(f"<li><b>{_e(c.get('name'))}</b>: {kinds.get(c.get('kind'), _e(c.get('kind')))} {values}</li>")
    return f'<div class="tl-hint">Checks:<ul style="margin:2px 0 0 18px">{"".join(parts)}</ul></div>'


def _reference_html(reference: str | None) -> str:
    if not reference:
        return '<div class="tl-hint">No reference answer (judge and checks only).</div>'
    return (f'<div class="tl-msg tl-system" style="font-style:normal"><div class="tl-role">Reference answer</div>'
            f'<div class="tl-text">{_e(reference)}</div></div>')


def set_items_html(ref: str, items: list[dict], total: int) -> str:
    """An eval set version's items: prompt as a chat, reference, checks."""
    if not items:
        return f'<div class="tl-empty">{_e(ref)} has no items.</div>'
    parts = [f'<div class="tl-hint">{_e(ref)}: showing {len(items)} of {total} item(s).</div><div class="tl-convs">']
    for item in items:
        parts.append(f'<div class="tl-conv"><div class="tl-conv-title">Item {item["position"] + 1}</div>'
                     + conversation_html(item["messages"], "Prompt") + _reference_html(item.get("reference")) + checks_html(item.get("checks") or []) + "</div>")
    return "".join(parts) + "</div>"


# ------------------------------------------------------------------ eval runs

def run_label(run: dict) -> str:
    return f"Run {run['id']} · {run['candidate']} vs {run['baseline']} · {run['set_name']}@{run['set_version']}"


def judge_text(summary: EvalSummary) -> str:
    j = summary.judge
    if not j.used:
        return "no judge was used"
    if not j.wins + j.losses:
        return f"no decisive verdict ({j.ties} ties, {j.unparsable} unreadable, {j.errors} errors)"
    return f"{j.win_rate:.0%} ({j.ci_low:.0%}–{j.ci_high:.0%}), {j.wins + j.losses} decisive of {summary.items}"


def people_text(summary: EvalSummary) -> str:
    if not summary.people:
        return "no votes on this pair"
    p = summary.people
    return WinRate(p["wins"], p["losses"], p.get("ties", 0), p.get("both_bad", 0)).describe()


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    """Every eval run's summary on one line: candidate / baseline per figure."""
    rows = []
    for r in runs:
        base = [r["id"], STATUS_WORDS.get(r["status"], r["status"]), r["candidate"], r["baseline"],
                f"{r['set_name']}@{r['set_version']}", f"{r['done']}/{r['total']}"]
        if not r.get("summary"):
            rows.append(base + ["", "", "", "", "", "", "", ""])
            continue
        s = EvalSummary.from_json(r["summary"])
        c, b = s.candidate, s.baseline
        rows.append(base + [
            _pair(c.mean_similarity, b.mean_similarity), _pair(c.mean_rouge_l, b.mean_rouge_l),
            _pair(_pooled_checks(c), _pooled_checks(b), "{:.0%}"), _pair(c.invented_rate, b.invented_rate, "{:.0%}"),
            _pair(c.mean_words, b.mean_words, "{:.0f}"),
            _pair(c.cut_off_rate + c.empty_rate, b.cut_off_rate + b.empty_rate, "{:.0%}"),
            judge_text(s), people_text(s)])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def figures_frame(summary: EvalSummary | None) -> pd.DataFrame:
    """One run's figures side by side (the CLI's rows, ui.text.eval_rows)."""
    if summary is None:
        return pd.DataFrame([], columns=["Figure", "Candidate", "Baseline"])
    header, *rows = eval_rows(summary)
    return pd.DataFrame(rows, columns=["Figure", "Candidate", "Baseline"])


def run_status_md(run: dict, summary: EvalSummary | None) -> str:
    """What the picked run is, where it is, and why it ended the way it did."""
    who = f" by {_e(run['created_by'])}" if run.get("created_by") else ""
    auto = " (automatic, after training)" if run.get("trigger") == "auto" else ""
    lines = [f"**Run {run['id']}**: **{_e(run['candidate'])}** against **{_e(run['baseline'])}** on eval set "
             f"**{_e(run['set_name'])}@{run['set_version']}**{auto}{who} · "
             f"{STATUS_WORDS.get(run['status'], run['status'])}"]
    if run.get("judge"):
        lines.append(f"Judge: {_e(run['judge'].get('model'))} at {_e(run['judge'].get('base_url'))}.")
    if run.get("error"):
        kept = f" The {run['done']} item(s) done before are kept below." if run["done"] else ""
        lines.append(f"**{'Stopped' if run['status'] == 'stopped' else 'Failed'}: {_e(run['error'])}.**{kept}")
    if run["status"] == "queued":
        lines.append("It starts in a moment." if run.get("trigger") != "auto" else
                     "It runs once both models are loaded on the model server.")
    if summary is not None:
        lines += [f"Note: {_e(n)}" for n in summary.notes]
    return "\n\n".join(lines)


def progress_of(run: dict) -> tuple[float | None, str]:
    done, total = run.get("done") or 0, run.get("total") or 0
    status = run["status"]
    if status == "queued":
        return None, "Waiting to start"
    if status == "running":
        return (done / total if total else None), (f"{done} of {total} items answered and scored" if total
                                                    else "Starting…")
    word = STATUS_WORDS.get(status, status).capitalize()
    return (done / total if total else 1.0), f"{word}: {done} of {total} items"


def keep_item(row: dict, how: str) -> bool:
    """Whether a per-item result shows under filter `how` (one of ITEM_FILTERS)."""
    c = (row.get("scores") or {}).get("candidate") or {}
    b = (row.get("scores") or {}).get("baseline") or {}
    if how == "judge_lost":
        return row.get("verdict") == "baseline"
    if how == "check_failed":
        return any(ok is False for ok in (c.get("checks") or {}).values())
    if how == "invented":
        return any((c.get("invented") or {}).get(k) for k in ("links", "emails", "phones"))
    if how == "cut_off":
        return any(s.get("cut_off") or s.get("empty") for s in (c, b))
    return True


def _scores_html(scores: dict) -> str:
    bits = []
    if scores.get("similarity") is not None:
        bits.append(f"similarity {scores['similarity']:.2f}")
    if scores.get("rouge_l") is not None:
        bits.append(f"ROUGE-L {scores['rouge_l']:.2f}")
    bits.append(f"{scores.get('words', 0)} words")
    if scores.get("cut_off"):
        bits.append("cut off")
    if scores.get("empty"):
        bits.append("empty")
    line = " · ".join(bits)
    checks = "".join((f'<li style="color:#15803d">✓ {_e(name)}</li>' if ok else
                      f'<li style="color:#b91c1c">✗ {_e(name)}</li>') for name, ok in (scores.get("checks") or {}).items())
    invented = [f"{_e(v)}" for k in ("links", "emails", "phones") for v in (scores.get("invented") or {}).get(k, [])]
    out = f'<div class="tl-hint">{line}</div>'
    if checks:
        out += f'<ul style="list-style:none;margin:2px 0;padding:0">{checks}</ul>'
    if invented:
        out += f'<div style="color:#b91c1c">invented: {", ".join(invented)}</div>'
    return out


def _answer_html(title: str, model: str, text: str, scores: dict) -> str:
    body = _e(text) if text else '<span class="tl-muted">(empty answer)</span>'
    return (f'<div style="flex:1;min-width:260px"><div class="tl-msg tl-assistant" style="max-width:100%;margin:0">'
            f'<div class="tl-role">{_e(title)}: {_e(model)}</div><div class="tl-text">{body}</div></div>'
            f'{_scores_html(scores)}</div>')


def items_html(run: dict, rows: list[dict], how: str = "all", limit: int = 200) -> str:
    """The per-item view: prompt, reference, both answers with their scores, the verdict and the judge's reason."""
    if not rows:
        return ('<div class="tl-empty">No item answered yet.</div>' if run["status"] in ("queued", "running") else
                '<div class="tl-empty">This run has no item results.</div>')
    shown = [r for r in rows if keep_item(r, how)]
    if not shown:
        return f'<div class="tl-empty">None of the {len(rows)} item(s) matches this filter.</div>'
    parts = [f'<div class="tl-hint">{min(len(shown), limit)} of {len(rows)} item(s).</div><div class="tl-convs">']
    for r in shown[:limit]:
        verdict = ""
        if r.get("verdict"):
            reason = f": {_e(r['reason'])}" if r.get("reason") else ""
            verdict = (f'<div style="margin-top:6px"><b>Judge:</b> {_e(VERDICT_WORDS.get(r["verdict"], r["verdict"]))}'
                       f"{reason}</div>")
        scores = r.get("scores") or {}
        parts.append(
            f'<div class="tl-conv ev-item"><div class="tl-conv-title">Item {(r.get("position") or 0) + 1}</div>'
            + conversation_html(r.get("messages") or [], "Prompt")
            + _reference_html(r.get("reference"))
            + '<div style="display:flex;gap:10px;flex-wrap:wrap;margin-top:6px">'
            + _answer_html("Candidate", run["candidate"], r.get("candidate_answer") or "", scores.get("candidate") or {})
            + _answer_html("Baseline", run["baseline"], r.get("baseline_answer") or "", scores.get("baseline") or {})
            + "</div>" + verdict + "</div>")
    return "".join(parts) + "</div>"


# ------------------------------------------------------------------ leaderboard and learning curve

def board_frame(ratings: list) -> pd.DataFrame:
    """serving.evaluation.stats.Rating rows, best first."""
    rows = [[i, r.model, f"{r.rating:.0f}", f"{r.low:.0f} to {r.high:.0f}", r.by_source.get("people", 0),
             r.by_source.get("judge", 0)] for i, r in enumerate(ratings, 1)]
    return pd.DataFrame(rows, columns=BOARD_COLUMNS)


def board_note(ratings: list, sources: list[str]) -> str:
    used = " and ".join({"people": "people's A/B votes", "judge": "judge verdicts"}[s] for s in sources) or "nothing"
    if not ratings:
        return (f"No comparisons yet from {used}: A/B votes in Compare, or evaluations with a judge, fill the "
                "leaderboard.")
    people = sum(r.by_source.get("people", 0) for r in ratings) // 2
    judge = sum(r.by_source.get("judge", 0) for r in ratings) // 2
    return (f"Bradley–Terry ratings from {used} ({people} people's vote(s), {judge} judge verdict(s); ties count "
            "half). Higher is better; 1000 is where a model with no comparisons sits. The interval is where the rating "
            "lies with 95% confidence: overlapping intervals mean the order is not settled yet.")


def round_label(i: int, model: str, width: int = 1) -> str:
    """'1 · support-v1': the curve's x axis is these labels (in order), so rounds read as whole steps."""
    return f"{i:0{width}d} · {model}"


def curve_frame(points: list[CurvePoint]) -> pd.DataFrame:
    """Long format for a LinePlot coloured by figure, x = the round's label. Like the Train tab's loss chart, the
    first frame fixes the axis types and the curves, so every frame has typed columns and a NaN (undrawn) point
    of every figure at the first round."""
    width = len(str(max((p.round for p in points), default=0)))
    labels = {p.round: round_label(p.round, p.model, width) for p in points}
    first = labels[min(labels)] if labels else ""
    rows = [(first, float("nan"), label, "") for _, label in CURVE_METRICS]
    rows += [(labels[p.round], p.value, p.metric, p.model) for p in points]
    return pd.DataFrame({"round": pd.Series([r[0] for r in rows], dtype="object"),
                         "value": pd.Series([r[1] for r in rows], dtype="float64"),
                         "metric": pd.Series([r[2] for r in rows], dtype="object"),
                         "model": pd.Series([r[3] for r in rows], dtype="object")})


def curve_note(chain: list[str], points: list[CurvePoint]) -> str:
    if not chain:
        return "Pick a deployment or an adapter family to see its rounds."
    by_round: dict[int, CurvePoint] = {}
    for p in points:
        by_round.setdefault(p.round, p)
    lines = []
    for i, model in enumerate(chain):
        p = by_round.get(i)
        where = (f"eval run {p.eval_run_id} (against {_e(p.against)})" if p else "no finished evaluation yet")
        lines.append(f"- round {i}: **{_e(model)}**: {where}")
    return "Rounds (each point is the newest finished evaluation of that model):\n" + "\n".join(lines)


# ------------------------------------------------------------------ deployments and the gate

RULE_TITLES = {"judge_win_rate": "Judge win rate", "similarity": "Reference similarity", "heldout_loss": "Held-out loss",
               "invented": "Invented links, e-mails, phones", "evaluation": "Evaluation"}


def rule_title(name: str) -> str:
    if name.startswith("check:"):
        return f"Check “{name[len('check:'):]}”"
    return RULE_TITLES.get(name, name)


def gate_html(decision, *, candidate: str, baseline: str, refused: bool) -> str:
    """Every rule of a gate decision with its figures: failing ones first and marked."""
    title = (f"The gate refused {_e(candidate)} (against {_e(baseline)})" if refused else
             f"The gate passed {_e(candidate)} (against {_e(baseline)})")
    rows = []
    cell = "border:none;padding:3px 12px 3px 0;vertical-align:top"
    for r in sorted(decision.results, key=lambda r: (r.passed, r.skipped)):
        mark = ('<span style="color:var(--body-text-color-subdued)">– not checked</span>' if r.skipped else
                '<span style="color:#15803d">✓ passed</span>' if r.passed else
                '<span style="color:#b91c1c;font-weight:600">✗ failed</span>')
        detail = r.message.removeprefix(f"{r.name}: ")
        rows.append(f'<tr style="border:none"><td style="{cell};white-space:nowrap">{mark}</td>'
                    f'<td style="{cell};white-space:nowrap;font-weight:600">{_e(rule_title(r.name))}</td>'
                    f'<td style="{cell}">{_e(detail)}</td></tr>')
    colour = "#b91c1c" if refused else "#15803d"
    hint = ('<div class="tl-hint">Improve the adapter (or evaluate it again against what the deployment serves now), '
            "or force it with a reason, which is kept in the history.</div>" if refused else "")
    return (f'<div id="ev-gate-result" style="border:1px solid {colour};border-radius:8px;padding:8px 10px">'
            f'<div style="font-weight:600;color:{colour}">{title}</div>'
            f'<table style="border:none;margin:6px 0;width:auto">{"".join(rows)}</table>{hint}</div>')


def deployments_frame(deployments: list[dict], base_name: str) -> pd.DataFrame:
    rows = []
    for d in deployments:
        last = d["history"][0] if d.get("history") else {}
        rows.append([d["name"], d["target"] or f"{base_name} (base model)",
                     ACTION_WORDS.get(last.get("action"), last.get("action") or ""), last.get("by") or "",
                     short_time(last.get("at")), last.get("eval_run_id") or ""])
    return pd.DataFrame(rows, columns=DEPLOY_COLUMNS)


def _event_why(e: dict) -> str:
    if e.get("reason"):
        return f"reason: {e['reason']}"
    gate = e.get("gate") or {}
    if not gate:
        return ""
    failing = [r.get("message") for r in gate.get("results", []) if not r.get("passed")]
    if failing:
        return "gate refused: " + "; ".join(failing)
    return "gate passed" + (f" against {gate['baseline']}" if gate.get("baseline") else "")


def history_frame(deployments: list[dict], base_name: str) -> pd.DataFrame:
    """Every deployment change, newest first: who promoted what, when, with which eval result."""
    events = [(e, d["name"]) for d in deployments for e in d.get("history") or []]
    events.sort(key=lambda x: (x[0].get("at") or "", x[0].get("id") or 0), reverse=True)
    rows = [[short_time(e.get("at")), name, ACTION_WORDS.get(e["action"], e["action"]), e["from_target"] or base_name,
             e["to_target"] or base_name, e.get("by") or "", e.get("eval_run_id") or "", _event_why(e)]
            for e, name in events]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)

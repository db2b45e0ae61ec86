"""Words both doors use: times, durations, loss summaries, and an adapter's lineage as text.

The CLI prints these and the web app shows them, so a run's "took 3 min" or "held-out loss 3.39 -> 3.30"
reads the same in the terminal and the browser. Lineage: store.lineage's rounds, one block per round,
newest first (`tuneloop adapters lineage NAME`); long corrections are cut here only (the JSON keeps them whole).
"""

from __future__ import annotations

from datetime import datetime, timezone

from training.results import RunMetrics

MAX_RATINGS_SHOWN = 20
MAX_CORRECTION_CHARS = 60
VALUE_WORDS = {"up": "thumbs up", "down": "thumbs down", "tie": "tie", "both_bad": "both bad"}
# What each training method (training.feedback_dataset.METHODS, plus "auto") is, in a person's words.
METHOD_LABELS = {
    "auto": "Automatic: the richest method the ratings support",
    "sft": "SFT: learn the answers",
    "kto": "KTO: from thumbs up and down",
    "dpo": "DPO: from A/B verdicts and corrections",
    "sft+kto": "SFT, then KTO",
    "sft+dpo": "SFT, then DPO",
}


def method_choices(*, auto: bool = False) -> list[tuple[str, str]]:
    """(label, method) for a picker: every training method, in the order training defines them."""
    from training.feedback_dataset import METHODS

    return [(METHOD_LABELS[m], m) for m in (("auto",) if auto else ()) + tuple(METHODS)]


def short_time(iso: str | None) -> str:
    """'2026-08-01T09:12:03.123+00:00' -> '2026-08-01 09:12' (UTC; column headers say so)."""
    if not iso:
        return ""
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    """3725 -> '1 h 2 min'; 95 -> '1 min 35 s'; None -> ''."""
    if seconds is None or seconds < 0:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s and m < 10 else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


# One name per figure, the same in every table and both doors (a run's "training loss" used to mean
# three things). RunMetrics fields and the live progress (training.queue.RunProgress) map onto them.
LAST_STEP_LOSS = "last-step loss"
"""The training loss of the last logged step (RunMetrics.final_loss; RunProgress.loss while it runs)."""
MEAN_TRAIN_LOSS = "mean training loss"
"""The training loss averaged over the whole run (RunMetrics.train_loss)."""
HELD_OUT_LOSS = "held-out loss"
"""The loss on conversations held out of training (RunMetrics.eval_loss)."""
SPEED = "trained tokens/s"
"""Tokens trained per second of training time, held-out evaluations excluded (RunMetrics.tokens_per_second,
live and final)."""


def speed_text(tokens_per_second: float | None) -> str:
    """'112 trained tokens/s', or '' when unknown."""
    return f"{tokens_per_second:,.0f} {SPEED}" if tokens_per_second else ""


def loss_bits(metrics: RunMetrics) -> list[str]:
    """A finished run's losses as short phrases: "last-step loss 0.2090", "held-out loss 3.39 -> 3.30"."""
    bits = []
    if metrics.final_loss is not None:
        bits.append(f"{LAST_STEP_LOSS} {metrics.final_loss:.4f}")
    if metrics.train_loss is not None:
        bits.append(f"{MEAN_TRAIN_LOSS} {metrics.train_loss:.4f}")
    if metrics.eval_loss is not None:
        start = metrics.eval_loss_start
        bits.append(f"{HELD_OUT_LOSS} {start:.4f} -> {metrics.eval_loss:.4f}" if start is not None
                    else f"{HELD_OUT_LOSS} {metrics.eval_loss:.4f}")
    if metrics.tokens_per_second:
        bits.append(speed_text(metrics.tokens_per_second))
    return bits


def format_lineage(name: str, rounds: list[dict]) -> str:
    lines = [f"{name}: {_n(len(rounds), 'round')}, newest first"]
    for r in rounds:
        lines.append("")
        lines += _round(r)
    return "\n".join(lines)


def _round(r: dict) -> list[str]:
    a = r["adapter"]
    status = a["status"] + (", partial" if a.get("partial") else "")
    lines = [f"Round {r['round']} · {a['name']} (v{a['version']}, {status}) · made {short_time(a['created_at'])} UTC"]
    lines.append("  Trained: " + _trained(r))
    d = r["dataset"]
    if d is None:
        lines.append("  Data: unknown (no dataset version recorded)")
    else:
        lines.append(f"  Data: {d['ref']} ({d['kind']}): " + _contents(d))
        for e in d.get("erasures") or []:
            lines.append(f"    Erased {short_time(e['at'])} UTC by {e['by'] or '(unknown)'}: a customer's data "
                         f"({e['kind']}); retrain to forget it in the weights too")
        lines += _feedback(d) if d["kind"] == "feedback" else _files(d)
    ab = r["ab"]
    vs = ab["opponent"] + (" (base model)" if ab["opponent_kind"] == "base" else "")
    tally = ", ".join([_n(ab["wins"], "win"), _n(ab["losses"], "loss", "losses"), _n(ab["ties"], "tie"),
                       f"{ab['both_bad']} both bad"])
    lines.append(f"  A/B vs {vs}: {tally}; {ab['summary']}" + (f": {ab['verdict']}" if ab["decisive"] else ""))
    return lines


def _n(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _trained(r: dict) -> str:
    run, a = r["run"], r["adapter"]
    start = f"continuing from {r['parent']}" if r["parent"] else "from the base model"
    if run is None:
        return f"method {a['method'] or '?'}, {start} (no run recorded)"
    bits = [f"run #{run['id']} {run['status']}", f"method {run['method'] or a['method'] or '?'}"]
    if run["preset"]:
        bits.append(f"preset {run['preset']}")
    bits.append(start)
    text = ", ".join(bits)
    m = RunMetrics.from_dict(run["metrics"])
    results = loss_bits(m)
    if "steps" in run["metrics"]:
        results.append(f"{m.steps} steps")
    return text + ("; " + ", ".join(results) if results else "")


def _contents(d: dict) -> str:
    parts = [_n(d["conversation_count"], "conversation")]
    pc = d.get("preference_counts")
    if pc and pc["kto"]:
        parts.append(f"{pc['kto']} KTO rows ({pc['kto_desirable']} good, {pc['kto_undesirable']} bad)")
    if pc and pc["dpo"]:
        parts.append(f"{pc['dpo']} DPO pairs")
    return ", ".join(parts)


def _files(d: dict) -> list[str]:
    if not d.get("files"):
        return ["    Files: none recorded"]
    lines = ["    Files:"]
    for f in d["files"]:
        counts = ", ".join(f"{f[k]} {k}" for k in ("imported", "rejected", "duplicates") if f.get(k))
        sha = (f.get("sha256") or "?")[:12]
        lines.append(f"      {f['name']} ({f.get('format') or '?'}, sha256 {sha}{', ' + counts if counts else ''}; "
                     f"added in {f['version']} on {short_time(f['imported_at'])})")
    return lines


def _feedback(d: dict) -> list[str]:
    lines = []
    b = d.get("build")
    if b:
        left = ", ".join(f"{k} {v}" for k, v in sorted((b.get("left_out_by_reason") or {}).items()))
        who = f" by {b['user']}" if b["user"] else ""
        lines.append(f"    Built {short_time(b['created_at'])} UTC{who} for {b['method']} from {b['ratings_used']} of "
                     f"{b['ratings']} ratings ({b['scope']})" + (f"; left out: {left}" if left else ""))
    ratings = d.get("ratings") or []
    lines.append(f"    Ratings used ({len(ratings)}):")
    for x in ratings[:MAX_RATINGS_SHOWN]:
        lines.append(f"      #{x['id']} {short_time(x['rated_at'])} {x['user'] or '(anonymous)'}: {rating_text(x)}")
    if len(ratings) > MAX_RATINGS_SHOWN:
        lines.append(f"      ... and {len(ratings) - MAX_RATINGS_SHOWN} more (use --json for all)")
    return lines


def rating_text(x: dict) -> str:
    """'thumbs up on support-v2', 'A better (A: support-v2, B: base)', 'correction "..." on base'."""
    models = x.get("models") or {}
    if x["kind"] == "verdict":
        pair = f"A: {models.get('a', '?')}, B: {models.get('b', '?')}"
        value = {"a": "A better", "b": "B better"}.get(x["value"]) or VALUE_WORDS.get(x["value"], x["value"])
        text = f"{value} ({pair})"
    else:
        value = x["value"] or ""
        if x["kind"] == "correction":
            flat = " ".join(value.split())
            if len(flat) > MAX_CORRECTION_CHARS:
                flat = flat[:MAX_CORRECTION_CHARS - 1] + "…"
            value = f'correction "{flat}"'
        else:
            value = VALUE_WORDS.get(value, value)
        text = f"{value} on {models.get('model', '?')}"
    now = x.get("value_now")
    if now is None:
        text += " (taken back since)"
    elif now != x["value"]:
        text += " (changed since)"
    return text


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def eval_rows(summary) -> list[tuple[str, str, str]]:
    """An evaluation's figures as (figure, candidate, baseline) rows, header first (serving.evaluation's EvalSummary)."""
    c, b = summary.candidate, summary.baseline
    rows = [("figure", "candidate", "baseline"),
            ("reference similarity", _num(c.mean_similarity), _num(b.mean_similarity)),
            ("ROUGE-L", _num(c.mean_rouge_l), _num(b.mean_rouge_l))]
    for name in sorted(set(c.check_pass_rates) | set(b.check_pass_rates)):
        rows.append((f"check: {name}", _pct(c.check_pass_rates.get(name)), _pct(b.check_pass_rates.get(name))))
    rows += [("answers with invented links/e-mails/phones", _pct(c.invented_rate), _pct(b.invented_rate)),
             ("mean answer length (words)", _num(c.mean_words, ".0f"), _num(b.mean_words, ".0f")),
             ("cut off at the token limit", _pct(c.cut_off_rate), _pct(b.cut_off_rate)),
             ("empty answers", _pct(c.empty_rate), _pct(b.empty_rate))]
    if c.heldout_loss is not None or b.heldout_loss is not None:
        rows.append(("held-out loss", _num(c.heldout_loss), _num(b.heldout_loss)))
    rows.append(("judge (candidate's win rate)", summary.judge.describe(), ""))
    if summary.people:
        from store.winrate import WinRate

        people = WinRate(**{k: summary.people[k] for k in ("wins", "losses", "ties", "both_bad")})
        rows.append(("people's A/B votes", people.describe(), ""))
    return rows


def estimate_lines(est) -> list[str]:
    """A planned run's cost (training.estimate.RunEstimate) as lines both doors print before Start."""
    data = f"{est.train_examples} conversations train"
    if est.eval_examples:
        data += f", {est.eval_examples} held out"
    if est.truncated:
        data += f"; {_n(est.truncated, 'conversation')} cut at the length limit"
    if est.dropped:
        data += f"; {est.dropped} left out (too long, or no answer to learn)"
    lines = [f"{_n(est.steps, 'optimizer step')}, about {est.train_tokens:,} tokens trained "
             f"({est.tokens_per_step:,.0f} per step)", data]
    if est.evaluations:
        lines.append(f"{_n(est.evaluations, 'held-out evaluation')} ({est.eval_tokens:,} tokens)")
    if est.seconds is None:
        lines.append("time: unknown (no earlier run on this base model and no speed probe)")
    else:
        parts = [f"training {duration(est.train_seconds)}"]
        if est.eval_seconds:
            parts.append(f"evaluations {duration(est.eval_seconds)}")
        parts.append(f"start-up {duration(est.overhead_seconds)}")
        per_step = f", {est.seconds_per_step:.1f} s per step" if est.seconds_per_step else ""
        lines.append(f"time on this machine: about {duration(est.seconds)} ({', '.join(parts)}{per_step}; "
                     f"speed from {est.speed_source})")
    if est.note:
        lines.append(f"note: {est.note}")
    return lines

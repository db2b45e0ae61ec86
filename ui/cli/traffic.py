"""CLI commands for captured /v1 traffic: `tuneloop traffic list|prune|judge`.

    tuneloop traffic list --deployment support --unrated
    tuneloop traffic prune                  # delete what is past TUNELOOP_CAPTURE_RETENTION_DAYS and unused
    tuneloop traffic prune --days 7 --json
    tuneloop traffic judge --judge URL=http://gpu-box:8000/v1,MODEL=qwen2.5-32b --limit 200
"""

from __future__ import annotations

from typing import Optional

import typer

from store.db import connect
from store.traffic import CaptureFilter, find_captures, prune, waiting_counts
from ui.cli.common import emit_json, fail, settings
from ui.text import short_time

app = typer.Typer()
traffic_app = typer.Typer(help="Answers the /v1 API gave: list them, have a judge score them, delete what "
                               "retention no longer keeps.",
                          no_args_is_help=True)
app.add_typer(traffic_app, name="traffic")


@traffic_app.command("prune")
def prune_(days: Optional[float] = typer.Option(None, "--days", help="Retention in days (default: "
                                                                      "TUNELOOP_CAPTURE_RETENTION_DAYS)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Delete captured traffic older than the retention period that no rating, eval set or dataset uses."""
    from serving.capture import retention_cutoff

    s = settings()
    days = s.capture_retention_days if days is None else days
    if days <= 0:
        fail("retention is 0 (keep forever): pass --days N to prune anyway", 2, as_json=as_json)
    with connect(s.db_path) as db:
        n = prune(db, before=retention_cutoff(days))
    if as_json:
        emit_json({"deleted": n, "days": days})
    else:
        typer.echo(f"{n} captured completion(s) older than {days:g} days and unused deleted")


@traffic_app.command("list")
def list_(deployment: Optional[str] = typer.Option(None, "--deployment"),
          unrated: bool = typer.Option(False, "--unrated", help="Only answers nobody rated yet."),
          limit: int = typer.Option(20, "--limit"), as_json: bool = typer.Option(False, "--json")) -> None:
    """The newest captured answers, and how many wait for review."""
    s = settings()
    with connect(s.db_path) as db:
        rows = find_captures(db, CaptureFilter(deployment=deployment, rated=False if unrated else None, limit=limit))
        counts = waiting_counts(db)
    if as_json:
        emit_json({"counts": counts, "completions": rows})
        return
    typer.echo(f"{counts['total']} captured, {counts['unrated']} waiting for review, {counts['thumbs_down']} "
               "thumbs down")
    for r in rows:
        rating = r["thumb"] or ("corrected" if r["corrected"] else "-")
        typer.echo(f"{short_time(r['created_at'])} {r['id']} {r['deployment'] or r['model']} -> {r['adapter']} "
                   f"[{r['status']}, {rating}] {r['question'][:60]!r}")


@traffic_app.command("judge")
def judge(judge_spec: str = typer.Option(..., "--judge", help="The judge: URL=...,MODEL=...[,KEY=...] (any "
                                                              "OpenAI-compatible endpoint, as for `eval run`)."),
          deployment: Optional[str] = typer.Option(None, "--deployment", help="Only this deployment's answers."),
          limit: int = typer.Option(100, "--limit", min=1, help="Score at most this many answers (newest first)."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Have a judge score (0-1) the captured answers nobody rated yet, for the review queue's "Judge score below"."""
    from serving.evaluation.judge import JudgeClient
    from serving.traffic_judge import judge_captures
    from ui.cli.eval import parse_judge

    s = settings()
    client = JudgeClient(parse_judge(judge_spec))
    try:
        report = judge_captures(s.db_path, client.ask, deployment=deployment, limit=limit)
    finally:
        client.close()
    if as_json:
        emit_json({"scored": report.scored, "unparsable": report.unparsable, "stopped": report.stopped})
        raise typer.Exit(1 if report.stopped else 0)
    typer.echo(f"{report.scored} answer(s) scored, {report.unparsable} judge repl(ies) unreadable (left unscored, "
               "tried again next time)")
    if report.stopped:
        fail(f"stopped early: {report.stopped}")

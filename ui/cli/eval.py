"""CLI commands for evaluation: `tuneloop eval run|show|list|leaderboard` and `tuneloop eval sets [build|show]`.

    tuneloop eval sets build refunds --file refund_questions.jsonl --check "states the 30-day rule:must_mention=30 days"
    tuneloop eval sets build support-heldout --from-run 7
    tuneloop eval run support-v3 --against parent --set refunds --json
    tuneloop eval run support-v3 --against "deployment support" --judge URL=http://gpu:8000/v1,MODEL=qwen-7b
    tuneloop eval show 4 --items
    tuneloop eval leaderboard
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from store.db import connect
from ui.cli.common import emit_json, fail, login, parse_pairs, settings
from ui.text import eval_rows

app = typer.Typer()
eval_app = typer.Typer(help="Measure an adapter against its parent, the base model or a deployment, item by item.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")
sets_app = typer.Typer(help="Eval sets: list them, build a new version, read its items.", invoke_without_command=True)
eval_app.add_typer(sets_app, name="sets")

CHECK_HELP = ("A named check added to every item, as NAME:KIND=VALUE with KIND must_mention, must_not_mention or "
              "regex, e.g. \"states the 30-day rule:must_mention=30 days\" (repeatable).")


def parse_check(text: str) -> dict:
    """'states the rule:must_mention=30 days' -> {"name", "kind", "value"} (validated by the store)."""
    name, sep, rest = text.rpartition(":")
    kind, sep2, value = rest.partition("=")
    if not sep or not sep2:
        raise typer.BadParameter(f"{text!r} must look like NAME:KIND=VALUE", param_hint="--check")
    return {"name": name.strip(), "kind": kind.strip(), "value": value}


def parse_judge(text: str | None):
    """'URL=http://host:8000/v1,MODEL=name[,KEY=secret]' -> JudgeConfig, or None."""
    from serving.evaluation.judge import JudgeConfig

    if not text:
        return None
    pairs = {k.upper(): v for k, v in parse_pairs([p for p in text.split(",") if p.strip()], "--judge").items()}
    try:
        return JudgeConfig(base_url=pairs.get("URL", ""), model=pairs.get("MODEL", ""), api_key=pairs.get("KEY", ""))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--judge") from None


@eval_app.command("run")
def run(
    candidate: str = typer.Argument(..., help="The adapter to measure."),
    against: str = typer.Option("parent", "--against",
                                help="parent (the adapter it continued from, else the base model), base, "
                                     "\"deployment NAME\", or an adapter's name."),
    eval_set: Optional[str] = typer.Option(None, "--set", help="Eval set NAME or NAME@VERSION (default: the "
                                                              "configured default set, TUNELOOP_DEFAULT_EVAL_SET)."),
    judge: Optional[str] = typer.Option(None, "--judge", help="A pairwise judge: URL=...,MODEL=...[,KEY=...] (any "
                                                              "OpenAI-compatible endpoint). Without one, the other "
                                                              "metrics still run."),
    max_items: Optional[int] = typer.Option(None, "--max-items", min=1, help="Evaluate at most this many items."),
    on_judge_error: str = typer.Option("continue", "--on-judge-error",
                                       help="continue (record the failure, go on) or stop (keep results so far)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Both models answer every item (temperature 0, concurrently); print the measured before/after."""
    from serving.evaluation.baseline import UnknownBaseline, resolve_baseline
    from serving.evaluation.embedding import Embedder, EmbeddingModelMissing
    from serving.evaluation.runner import EvalError, EvalSettings, execute_eval_run, load_summary, plan_eval_run
    from serving.fleet import model_server_url
    from store.evaluations import EvalSetNotFound

    s = settings()
    spec = eval_set or s.default_eval_set
    if not spec:
        fail("no eval set given: pass --set NAME (build one with `tuneloop eval sets build`) or set "
             "TUNELOOP_DEFAULT_EVAL_SET", 2, as_json=as_json)
    try:
        cfg = EvalSettings(max_tokens=s.eval_max_tokens, on_judge_error=on_judge_error, max_items=max_items)
    except ValueError as exc:
        fail(str(exc), 2, as_json=as_json)
    judge_cfg = parse_judge(judge)
    with connect(s.db_path) as db:
        try:
            baseline = resolve_baseline(db, candidate, against, base_name=s.served_base_name)
            run_id = plan_eval_run(db, candidate=candidate, baseline=baseline, eval_set=spec, judge=judge_cfg,
                                   settings=cfg, created_by=login())
        except (UnknownBaseline, EvalSetNotFound, EvalError, ValueError) as exc:
            fail(str(exc), 2, as_json=as_json)
    try:
        embedder = Embedder(s.embedding_model_dir)
    except EmbeddingModelMissing as exc:
        embedder = None
        typer.secho(f"warning: {exc}; reference similarity is not measured", fg=typer.colors.YELLOW, err=True)
    show = None if as_json else (lambda done, total, _r: typer.echo(f"  ... {done}/{total} items", err=True))
    if not as_json:
        typer.echo(f"eval run {run_id}: {candidate} against {baseline} on {spec}")
    try:
        execute_eval_run(s.db_path, run_id, base_url=model_server_url(s, first_up=True),
                         judge_api_key=judge_cfg.api_key if judge_cfg else "", embedder=embedder, progress=show)
    except EvalError as exc:
        fail(f"eval run {run_id} failed: {exc}", as_json=as_json)
    except KeyboardInterrupt:
        fail(f"eval run {run_id} interrupted; results so far are kept (`tuneloop eval show {run_id} --items`)", 130)
    with connect(s.db_path) as db:
        print_run(db, run_id, as_json=as_json)
        summary = load_summary(db, run_id)
    if summary is None:
        raise typer.Exit(1)


def print_run(db, run_id: int, *, as_json: bool, items: bool = False) -> None:
    from serving.evaluation.runner import load_summary
    from store.evaluations import get_eval_run, item_results

    run = get_eval_run(db, run_id)
    summary = load_summary(db, run_id)
    if as_json:
        emit_json({**run, "items": item_results(db, run_id) if items else None})
        return
    typer.echo(f"eval run {run['id']} {run['status']}: {run['candidate']} against {run['baseline']} on "
               f"{run['set_name']}@{run['set_version']}, {run['done']}/{run['total']} items"
               + (f" ({run['trigger']})" if run["trigger"] != "manual" else ""))
    if run.get("error"):
        typer.echo(f"  stopped early: {run['error']}")
    if summary is not None:
        rows = eval_rows(summary)
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            typer.echo("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
        for note in summary.notes:
            typer.echo(f"  note: {note}")
    if items:
        for r in item_results(db, run_id):
            typer.echo(f"\n#{r['position']} {r['messages'][-1]['content'] if r.get('messages') else ''}")
            if r.get("reference"):
                typer.echo(f"  reference: {r['reference']}")
            typer.echo(f"  candidate: {r['candidate_answer']}")
            typer.echo(f"  baseline:  {r['baseline_answer']}")
            if r.get("verdict"):
                typer.echo(f"  judge: {r['verdict']}" + (f" ({r['reason']})" if r.get("reason") else ""))


@eval_app.command("show")
def show(run_id: int = typer.Argument(..., help="Eval run id."),
         items: bool = typer.Option(False, "--items", help="Every item: prompt, reference, both answers, verdict."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """One eval run: its figures side by side, and with --items why, item by item."""
    from store.evaluations import EvalRunNotFound

    with connect(settings().db_path) as db:
        try:
            print_run(db, run_id, as_json=as_json, items=items)
        except EvalRunNotFound as exc:
            fail(str(exc), as_json=as_json)


@eval_app.command("list")
def list_(candidate: Optional[str] = typer.Option(None, "--candidate", help="Only this adapter's runs."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Eval runs, newest first."""
    from store.evaluations import list_eval_runs

    with connect(settings().db_path) as db:
        runs = list_eval_runs(db, candidate=candidate, limit=100)
    if as_json:
        emit_json(runs)
        return
    if not runs:
        typer.echo("no eval runs yet: `tuneloop eval run ADAPTER --set NAME`")
    for r in runs:
        typer.echo(f"#{r['id']:<4} {r['status']:<8} {r['candidate']} vs {r['baseline']} on "
                   f"{r['set_name']}@{r['set_version']} ({r['done']}/{r['total']}, {r['trigger']})")


@eval_app.command("leaderboard")
def leaderboard(source: list[str] = typer.Option([], "--source", help="people and/or judge (default: both)."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """A Bradley-Terry leaderboard with 95% intervals from people's A/B votes and judge verdicts."""
    from serving.evaluation.board import store_leaderboard

    with connect(settings().db_path) as db:
        board = store_leaderboard(db, sources=source or None)
    if as_json:
        emit_json([r.to_json() for r in board])
        return
    if not board:
        typer.echo("no comparisons yet: A/B votes in the app, or eval runs with a judge, make the leaderboard")
    for i, r in enumerate(board, 1):
        sources = ", ".join(f"{n} {k}" for k, n in r.by_source.items() if n)
        typer.echo(f"{i:>2}. {r.model:<28} {r.rating:7.1f}  (95% {r.low:.1f} to {r.high:.1f}; {sources})")


@sets_app.callback()
def sets(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List eval sets with their versions and item counts."""
    if ctx.invoked_subcommand:
        return
    from store.evaluations import list_eval_sets

    with connect(settings().db_path) as db:
        rows = list_eval_sets(db)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no eval sets yet: `tuneloop eval sets build NAME --file FILE | --from-run ID | --corrections`")
    for row in rows:
        typer.echo(row["name"])
        for v in row["versions"]:
            typer.echo(f"  @{v['version']}  {v['items']:>4} items  {v['source_kind']}  {v['created_at'][:16]}")


@sets_app.command("build")
def build(
    name: str = typer.Argument(..., help="Eval set name; a new version is added when it exists."),
    file: Optional[Path] = typer.Option(None, "--file", help="Conversation logs in any import format; each is cut "
                                                             "at its last answer, which becomes the reference."),
    from_run: Optional[int] = typer.Option(None, "--from-run", help="The conversations a training run held out."),
    corrections: bool = typer.Option(False, "--corrections", help="Corrected answers from ratings, as references."),
    question: list[str] = typer.Option([], "--question", help="A hand-written question (repeatable)."),
    reference: Optional[str] = typer.Option(None, "--reference", help="The reference answer for --question items."),
    check: list[str] = typer.Option([], "--check", help=CHECK_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build a new version of an eval set from one source (items are never trained on)."""
    from store.evaluations import InvalidCheck, iter_eval_items
    from training import evalsets

    chosen = [bool(file), from_run is not None, corrections, bool(question)]
    if sum(chosen) != 1:
        fail("give exactly one source: --file, --from-run, --corrections or --question", 2, as_json=as_json)
    checks = [parse_check(c) for c in check]
    s = settings()
    report = None
    with connect(s.db_path) as db:
        try:
            if file:
                if not file.is_file():
                    fail(f"{file}: no such file", 2, as_json=as_json)
                ref, report = evalsets.build_from_file(db, name, file, created_by=login(), checks=checks)
            elif from_run is not None:
                ref = evalsets.build_from_run(db, name, from_run, created_by=login(), checks=checks)
            elif corrections:
                ref = evalsets.build_from_corrections(db, name, created_by=login(), checks=checks)
            else:
                items = [evalsets.manual_item(q, reference=reference, checks=checks) for q in question]
                ref = evalsets.build_manual(db, name, items, created_by=login())
        except (evalsets.NoEvalItems, InvalidCheck, ValueError, LookupError) as exc:
            fail(str(exc), 2, as_json=as_json)
        count = sum(1 for _ in iter_eval_items(db, ref.id))
    if as_json:
        emit_json({"set": str(ref), "items": count, "report": report})
        return
    typer.echo(f"made eval set {ref} ({count} items)"
               + (f" from {report['file']} ({report['format']}, {report['rejected']} rejected)" if report else ""))
    typer.echo("its items are left out of every training run from now on")


@sets_app.command("show")
def show_set(spec: str = typer.Argument(..., help="NAME or NAME@VERSION"),
             limit: int = typer.Option(10, help="How many items to print."),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Print an eval set version's items: prompt, reference, checks."""
    from store.evaluations import EvalSetNotFound, iter_eval_items, resolve_set

    with connect(settings().db_path) as db:
        try:
            ref = resolve_set(db, spec)
        except EvalSetNotFound as exc:
            fail(str(exc), as_json=as_json)
        items = list(iter_eval_items(db, ref.id, limit=limit))
    if as_json:
        emit_json({"set": str(ref), "items": items})
        return
    for i, item in enumerate(items):
        typer.echo(f"--- {ref} item {i}")
        for m in item["messages"]:
            typer.echo(f"{m['role']:>9}: {m['content']}")
        if item["reference"]:
            typer.echo(f"reference: {item['reference']}")
        for c in item["checks"] or []:
            typer.echo(f"    check: {c['name']} ({c['kind']} {c['value']})")

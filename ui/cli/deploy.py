"""CLI commands for deployments: `tuneloop deploy promote|rollback|list`.

A deployment is a stable model name (e.g. `support`) the `/v1` API answers under; it points at one
adapter (or the base model), and promotion goes through the gate (docs/evaluation.md).

    tuneloop deploy promote support-v3 --to support              # needs an eval run of support-v3 vs the current one
    tuneloop deploy promote support-v4 --to support --force "hotfix for the outage FAQ"
    tuneloop deploy rollback support
    tuneloop deploy list --json
"""

from __future__ import annotations

from typing import Optional

import typer

from store.db import connect
from ui.cli.common import emit_json, fail, login, settings
from ui.text import short_time

app = typer.Typer()
deploy_app = typer.Typer(help="Stable model names for your bot: promote an adapter through the gate, roll back, list.",
                         no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")


def _change_json(change) -> dict:
    return {"deployment": change.deployment, "action": change.action, "from": change.from_target,
            "to": change.to_target, "event_id": change.event_id, "eval_run_id": change.eval_run_id,
            "gate": change.decision.to_json() if change.decision else None}


@deploy_app.command("promote")
def promote(
    adapter: str = typer.Argument(..., help="The adapter to put live (or the base model's name)."),
    to: str = typer.Option(..., "--to", help="The deployment name, e.g. support (created on first promotion)."),
    eval_run: Optional[int] = typer.Option(None, "--eval", help="The eval run the gate reads (default: the newest "
                                                                "finished one of this adapter against the current)."),
    force: Optional[str] = typer.Option(None, "--force", help="Promote even if the gate refuses; the REASON is "
                                                              "recorded in the history."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Point a deployment at an adapter, if the gate passes (or with --force and a recorded reason)."""
    from serving.deployments import DeploymentError, GateRefused
    from serving.deployments import promote as do_promote

    s = settings()
    with connect(s.db_path) as db:
        try:
            change = do_promote(db, adapter, to=to, by=login(), base_model_name=s.served_base_name,
                                eval_run_id=eval_run, force_reason=force)
        except GateRefused as exc:
            if as_json:
                emit_json({"error": "refused by the gate", "gate": exc.decision.to_json()})
                raise typer.Exit(1)
            fail(str(exc))
        except (DeploymentError, LookupError) as exc:
            fail(str(exc), 2, as_json=as_json)
    if as_json:
        emit_json(_change_json(change))
        return
    was = change.from_target or s.served_base_name
    typer.echo(f"{to}: {was} -> {change.to_target or s.served_base_name} ({change.action}); /v1 answers with it "
               "from the next request")
    if change.decision is not None:
        typer.echo(change.decision.describe())


@deploy_app.command("rollback")
def rollback(name: str = typer.Argument(..., help="The deployment."),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Point a deployment back at its previous adapter (no gate: going back is always allowed)."""
    from serving.deployments import DeploymentError
    from serving.deployments import rollback as do_rollback

    s = settings()
    with connect(s.db_path) as db:
        try:
            change = do_rollback(db, name, by=login(), base_model_name=s.served_base_name)
        except DeploymentError as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(_change_json(change))
        return
    typer.echo(f"{name}: {change.from_target or s.served_base_name} -> {change.to_target or s.served_base_name} "
               "(rollback)")


@deploy_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json"),
          history: int = typer.Option(5, "--history", help="History lines shown per deployment.")) -> None:
    """Every deployment: what it answers with now, and who changed it, when, with which eval result."""
    from serving.deployments import list_deployments

    s = settings()
    with connect(s.db_path) as db:
        rows = list_deployments(db)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no deployments yet: `tuneloop deploy promote ADAPTER --to NAME`")
    for d in rows:
        typer.echo(f"{d['name']}: {d['target'] or s.served_base_name}")
        for e in d["history"][:history]:
            why = f" (eval run {e['eval_run_id']})" if e.get("eval_run_id") else ""
            why += f", reason: {e['reason']}" if e.get("reason") else ""
            typer.echo(f"  {short_time(e['at'])} {e['action']:<8} {e['from_target'] or s.served_base_name} -> "
                       f"{e['to_target'] or s.served_base_name} by {e['by'] or '(unknown)'}{why}")

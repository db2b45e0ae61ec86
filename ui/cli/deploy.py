"""CLI commands for deployments: `tuneloop deploy promote|rollback|list`.

A deployment is a stable model name (e.g. `support`) the `/v1` API answers under; it points at one
adapter (or the base model), and promotion goes through the gate (docs/evaluation.md).

    tuneloop deploy promote support-v3 --to support              # needs an eval run of support-v3 vs the current one
    tuneloop deploy promote support-v4 --to support --force "hotfix for the outage FAQ"
    tuneloop deploy rollback support
    tuneloop deploy list --json
"""

from __future__ import annotations

import shlex

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
            fail(refusal_words(exc))
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


@deploy_app.command("canary")
def canary(
    name: str = typer.Argument(..., help="The deployment."),
    adapter: Optional[str] = typer.Argument(None, help="The model the canary's share goes to (to start one)."),
    share: float = typer.Option(0.1, "--share", help="Share of the deployment's requests (of its users, when "
                                                     "requests name a `user`) the canary takes, e.g. 0.1."),
    end: bool = typer.Option(False, "--end", help="End the canary: every request goes to the deployment's model."),
    promote: bool = typer.Option(False, "--promote", help="Make the canary's model the deployment's, and end it; "
                                                          "through the gate, like `deploy promote`."),
    eval_run: Optional[int] = typer.Option(None, "--eval", help="With --promote: the eval run the gate reads "
                                                                "(default: the newest finished one)."),
    force: Optional[str] = typer.Option(None, "--force", help="With --promote: promote even if the gate refuses; "
                                                              "the REASON is recorded in the history."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Send a share of a deployment's traffic to a second adapter; show the arms; end it or promote the winner.

    Without ADAPTER, --end or --promote: the arms' requests, thumbs-up and correction rates (95% intervals).
    """
    from serving import canary as c
    from serving.deployments import GateRefused

    s = settings()
    flags = {"--share with ADAPTER": adapter is not None, "--end": end, "--promote": promote}
    if sum(flags.values()) > 1:
        fail(f"choose one of: {', '.join(k for k, v in flags.items() if v)}", 2, as_json=as_json)
    if (force is not None or eval_run is not None) and not promote:
        fail("--force and --eval go with --promote", 2, as_json=as_json)
    with connect(s.db_path) as db:
        try:
            if adapter is not None:
                c.start(db, name, adapter, share=share, by=login(), base_model_name=s.served_base_name)
                done = f"{name}: canary started, {share:.0%} of requests go to {adapter}"
            elif end:
                c.end(db, name)
                done = f"{name}: canary ended; every request goes to the deployment's model"
            elif promote:
                change = c.promote_canary(db, name, by=login(), base_model_name=s.served_base_name,
                                          force_reason=force, eval_run_id=eval_run)
                how = "forced past the gate, reason recorded" if change.action == "force" else "passed the gate"
                done = (f"{name}: now serves {change.to_target or s.served_base_name} (promoted from the canary, "
                        f"{how}); canary ended")
            else:
                done = None
            rep = c.report(db, name, base_model_name=s.served_base_name)
        except c.CanaryError as exc:
            fail(str(exc) if exc.field != "share" else f"--share: {exc}", 2, as_json=as_json)
        except GateRefused as exc:
            if as_json:
                emit_json({"error": "refused by the gate", "gate": exc.decision.to_json()})
                raise typer.Exit(1)
            fail(refusal_words(exc))
        except ValueError as exc:
            fail(str(exc), 2, as_json=as_json)
    if as_json:
        emit_json({"done": done, **rep.to_json()})
        return
    if done:
        typer.echo(done)
    if rep.canary:
        typer.echo(f"canary: {rep.share:.0%} to {rep.canary} since {short_time(rep.started_at)} UTC")
    else:
        typer.echo(f"{name}: no canary running (start one: tuneloop deploy canary {name} ADAPTER --share 0.1)")
    for arm in rep.arms.values():
        if arm.arm == "main" or rep.canary:
            typer.echo(f"  {arm.arm:<6} {c.describe_arm(arm)}")


@deploy_app.command("capture")
def capture(name: str = typer.Argument(..., help="The deployment."),
            on: bool = typer.Option(True, "--on/--off", help="Store this deployment's /v1 answers for review.")) -> None:
    """Turn capture of a deployment's traffic on or off (on by default)."""
    from store.canaries import set_capture

    s = settings()
    with connect(s.db_path) as db:
        try:
            set_capture(db, name, on)
        except LookupError as exc:
            fail(str(exc), 2)
    typer.echo(f"{name}: capture {'on' if on else 'off'}")


def refusal_words(exc) -> str:
    """A gate refusal (serving.deployments.GateRefused) with the commands that get past it."""
    lines = [str(exc)]
    if exc.unevaluated:
        lines.append(f"evaluate: tuneloop eval run {exc.candidate} --against {shlex.quote(exc.baseline)}")
    lines.append("force: add --force REASON")
    return "\n".join(lines)

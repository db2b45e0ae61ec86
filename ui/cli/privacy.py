"""CLI commands for privacy: `tuneloop forget` erases a customer's data everywhere and lists what to retrain.

    tuneloop forget --email jo@example.com --dry-run     # where it is, changing nothing
    tuneloop forget --email jo@example.com               # erase it; a tombstone (without the value) stays
    tuneloop forget --conversation 1042 --json
"""

from __future__ import annotations

from typing import Optional

import typer

from store.db import connect
from ui.cli.common import emit_json, fail, login, settings

app = typer.Typer()


@app.command()
def forget(
    email: Optional[str] = typer.Option(None, "--email", help="An e-mail address: every conversation, rating, "
                                                              "chat, eval item and file that holds it."),
    text: Optional[str] = typer.Option(None, "--text", help="Any text (a name, an order number, a phone number)."),
    conversation: Optional[int] = typer.Option(None, "--conversation", help="One imported conversation, by id."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be erased; change nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Erase a customer's data from every stored place, keep a tombstone, and list the adapters to retrain."""
    from store.erasure import ErasureError, Target, erase, find_erasure

    given = [(k, v) for k, v in (("email", email), ("text", text), ("conversation", conversation)) if v is not None]
    if len(given) != 1:
        fail("give exactly one of --email, --text or --conversation", 2, as_json=as_json)
    s = settings()
    try:
        target = Target(*given[0])
    except ErasureError as exc:
        fail(str(exc), 2, as_json=as_json)
    with connect(s.db_path) as db:
        try:
            plan = find_erasure(db, s.data_dir, target)
        except ErasureError as exc:
            fail(str(exc), as_json=as_json)
        if plan.empty:
            if as_json:
                emit_json({"erased": False, "plan": plan.to_json()})
            else:
                typer.echo("nothing stored holds it")
            return
        tombstone, purged = (None, True) if dry_run else erase(db, s.data_dir, plan, by=login())
    if as_json:
        emit_json({"erased": not dry_run, "tombstone": tombstone, "plan": plan.to_json(), "purged": purged})
        return
    typer.echo(("would erase" if dry_run else "erased") + ":")
    for line in plan.lines():
        typer.echo(f"  {line}")
    if plan.adapters:
        typer.echo("adapters trained on this data (retrain them without it): " + ", ".join(plan.adapters))
    if not dry_run:
        typer.echo(f"tombstone #{tombstone} recorded (what, when, by whom; not the value)")
        if not purged:
            typer.secho("the database is open elsewhere (the app?): stop it and run the same command again to "
                        "purge old pages from the file", fg=typer.colors.YELLOW, err=True)

"""CLI commands for the /v1 API's keys: `tuneloop keys [create NAME|revoke NAME]`.

A key is shown once, when created; only its salted hash is stored. TUNELOOP_API_KEY is the key
named "default". A revoked key is refused at the next request.

    tuneloop keys create helpdesk-widget       # prints the key: give it to the widget
    tuneloop keys                              # names, uses, last use (never the keys)
    tuneloop keys revoke helpdesk-widget
"""

from __future__ import annotations

import typer

from store.api_keys import ApiKeyError, create_key, list_keys, revoke_key, sync_env_key
from store.db import connect
from ui.cli.common import emit_json, fail, login, settings
from ui.text import short_time

app = typer.Typer()
keys_app = typer.Typer(help="API keys for the OpenAI-compatible /v1 API: create, list, revoke.",
                       invoke_without_command=True)
app.add_typer(keys_app, name="keys")


@keys_app.callback()
def keys(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the keys: name, where it came from, uses and last use (the keys themselves are never shown again)."""
    if ctx.invoked_subcommand is not None:
        return
    s = settings()
    with connect(s.db_path) as db:
        sync_env_key(db, s.api_key)
        rows = list_keys(db)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no API keys yet: `tuneloop keys create NAME` (or set TUNELOOP_API_KEY)")
    for k in rows:
        state = f"revoked {short_time(k['revoked_at'])} UTC" if k["revoked_at"] else "active"
        origin = " (TUNELOOP_API_KEY)" if k["source"] == "env" else ""
        last = f", last used {short_time(k['last_used_at'])} UTC" if k["last_used_at"] else ""
        typer.echo(f"{k['name']}{origin}: {state}, {k['use_count']} request(s){last}")


@keys_app.command("create")
def create(name: str = typer.Argument(..., help="What the key is for, e.g. helpdesk-widget."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Create a key; it is printed once: store it where the client reads it."""
    s = settings()
    with connect(s.db_path) as db:
        try:
            key = create_key(db, name, by=login())
        except ApiKeyError as exc:
            fail(str(exc), 2, as_json=as_json)
    if as_json:
        emit_json({"name": name, "key": key})
        return
    typer.echo(key)
    typer.secho(f"key {name!r} created; it is shown only now. Clients send it as 'Authorization: Bearer <key>'.",
                err=True)


@keys_app.command("revoke")
def revoke(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Revoke a key: the API refuses it from the next request on."""
    s = settings()
    with connect(s.db_path) as db:
        try:
            revoke_key(db, name, by=login())
        except ApiKeyError as exc:
            fail(str(exc), 2, as_json=as_json)
    if as_json:
        emit_json({"name": name, "revoked": True})
    else:
        typer.echo(f"key {name!r} revoked")

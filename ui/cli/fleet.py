"""CLI commands for serving from several vLLM replicas: `tuneloop replicas [publish NAME | command]`.

    tuneloop replicas                       # each replica (and the router): up, adapters loaded, queue
    tuneloop replicas publish support-v3    # (again) publish an adapter into the adapter store
    tuneloop replicas command --port 8001 --host 10.0.0.5   # the command that starts one replica

See docs/scaling-out.md for the layout.
"""

from __future__ import annotations

import typer

from ui.cli.common import emit_json, fail, settings

app = typer.Typer()  # merged into the top-level `tuneloop` app by ui.cli
replicas_app = typer.Typer(help="The vLLM replicas tuneloop serves from (TUNELOOP_REPLICA_URLS).",
                           invoke_without_command=True)
app.add_typer(replicas_app, name="replicas")


@replicas_app.callback()
def replicas(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Each replica and the router: up or down, the models it has loaded, its running and waiting requests."""
    if ctx.invoked_subcommand is not None:
        return
    from serving.fleet import fleet_health, health_line, is_fleet

    s = settings()
    if not is_fleet(s):
        fail("no replicas configured: set TUNELOOP_REPLICA_URLS (and TUNELOOP_ROUTER_URL); see docs/scaling-out.md",
             as_json=as_json)
    try:
        healths = fleet_health(s)
    except ValueError as exc:
        fail(f"TUNELOOP_REPLICA_URLS: {str(exc).partition(': ')[2]}", as_json=as_json)
    if as_json:
        emit_json([h.as_dict() for h in healths])
    else:
        for h in healths:
            typer.echo(health_line(h))
    if not any(h.up for h in healths):
        raise typer.Exit(1)


@replicas_app.command("publish")
def publish(name: str = typer.Argument(..., help="The adapter's name.")) -> None:
    """Publish a registered adapter into the adapter store (done by every run; this retries a failed one)."""
    from store.adapter_store import AdapterStoreError
    from store.adapter_store import publish as publish_adapter
    from store.adapters import AdapterNotFound, get_adapter, set_load_error
    from store.db import connect

    s = settings()
    if not s.adapter_store:
        fail("no adapter store: set TUNELOOP_ADAPTER_STORE to the directory the replicas read")
    with connect(s.db_path) as db:
        try:
            row = get_adapter(db, name)
        except AdapterNotFound as exc:
            fail(str(exc))
        try:
            target = publish_adapter(s, name, row["path"])
        except AdapterStoreError as exc:
            fail(str(exc))
        set_load_error(db, name, None)
    typer.echo(f"published {name} to {target}")


@replicas_app.command("command")
def command(port: int = typer.Option(8000, "--port", help="Port the replica listens on."),
            host: str = typer.Option("127.0.0.1", "--host",
                                     help="Address it listens on: a private network only (its admin routes are open)."),
            store: str = typer.Option("", "--store", help="The adapter store as mounted on that machine "
                                                          "(default: TUNELOOP_ADAPTER_STORE).")) -> None:
    """Print the command that starts one vLLM replica with the filesystem LoRA resolver over the adapter store."""
    from serving.fleet import replica_command

    s = settings()
    if not (store or s.adapter_store):
        fail("no adapter store: pass --store or set TUNELOOP_ADAPTER_STORE")
    typer.echo(replica_command(s, port=port, host=host, store=store or None, python="python").shell())

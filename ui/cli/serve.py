"""CLI commands for serving: `tuneloop serve`, `tuneloop chat`, `tuneloop adapters [load|unload|archive|restore|lineage|export]`.

`chat` and `adapters` talk to the running server (`tuneloop serve` in another terminal, or the
server at TUNELOOP_VLLM_URL); `adapters` without a server still lists the registry.
"""

from __future__ import annotations

from typing import Optional

import typer

from ui.cli.common import emit_json, fail, settings




app = typer.Typer()  # merged into the top-level `tuneloop` app by ui.cli

@app.command()
def serve() -> None:
    """Start the model server (vLLM, with every adapter), the web app and the OpenAI-compatible API; Ctrl-C stops all."""
    from serving.adapters import AdapterError
    from serving.vllm_process import VllmStartError
    from ui.web.app import serve_app

    s = settings()
    if not s.vllm_url and not s.base_model and not (s.default_model_dir / "config.json").is_file():
        fail("the default model is not prepared yet: run `tuneloop setup` first")
    try:
        serve_app(s, announce=typer.echo)  # the web app at /, the API under /v1, one port
    except (VllmStartError, AdapterError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("stopped")

@app.command()
def chat(
    message: str = typer.Argument(..., help="What to ask."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="The base model's or an adapter's name (default: the base model)."),
    system: Optional[str] = typer.Option(None, "--system", "-s", help="A system prompt."),
    temperature: float = typer.Option(0.7, min=0, max=2, help="0 answers deterministically."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.01, max=1),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1),
    stop: list[str] = typer.Option([], "--stop", help="Stop at this text (repeatable)."),
) -> None:
    """Ask the base model or an adapter one question; the answer streams to the terminal."""
    from serving.chat import ChatClient, ChatError, SamplingParams
    from serving.fleet import model_server_url

    s = settings()
    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=tuple(stop))
    client = ChatClient(model_server_url(s, first_up=True))
    try:
        for piece in client.ask(model or s.served_base_name, message, system_prompt=system, params=params):
            typer.echo(piece, nl=False)
        typer.echo()
    except ChatError as exc:
        fail(str(exc))
    finally:
        client.close()

adapters_app = typer.Typer(help="List adapters with their status, and load, unload, archive or restore one.",
                           invoke_without_command=True, no_args_is_help=False)
app.add_typer(adapters_app, name="adapters")

def manager():
    from serving.fleet import adapter_manager

    return adapter_manager(settings())

@adapters_app.callback()
def adapters(ctx: typer.Context,
             as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """List the base model and adapters: loaded, available, failed (with why) or archived."""
    if ctx.invoked_subcommand is not None:
        return
    from serving.chat import DOWN_HINT

    with manager() as m:
        statuses = m.statuses()
        up = m.server_models() is not None
    if as_json:
        emit_json({"server": m.admin.url, "server_up": up, "models": [_public(st) for st in statuses]})
        return
    if not up:
        typer.secho(f"the model server at {m.admin.url} does not answer, so statuses come from the registry: "
                    f"{DOWN_HINT}", fg=typer.colors.YELLOW, err=True)
    rows = [("NAME", "KIND", "STATUS", "RANK", "CREATED", "NOTE")]
    for st in statuses:
        a = st.adapter
        note = st.error or ("" if st.registered else "not in the registry")
        rows.append((st.name, st.kind, st.status, str(a.get("rank") or ""), (a.get("created_at") or "")[:16],
                     note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])

def _act(verb: str, name: str) -> None:
    from serving.adapters import AdapterError, ServerUnavailable

    with manager() as m:
        try:
            result = getattr(m, verb)(name)
        except (AdapterError, ServerUnavailable) as exc:
            fail(str(exc))
    if verb == "unload" and result is False:
        typer.echo(f"{name} was not loaded")
    else:
        typer.echo(f"{name}: {verb}ed" if not verb.endswith("e") else f"{name}: {verb}d")

@adapters_app.command("load")
def load(name: str = typer.Argument(..., help="Adapter name.")) -> None:
    """Load an adapter into the running server (checked first: files, rank, base model)."""
    _act("load", name)

@adapters_app.command("unload")
def unload(name: str = typer.Argument(..., help="Adapter name.")) -> None:
    """Unload an adapter from the running server; it stays registered."""
    _act("unload", name)

@adapters_app.command("archive")
def archive(name: str = typer.Argument(..., help="Adapter name.")) -> None:
    """Unload an adapter and hide it from chat and the API (files and lineage are kept)."""
    _act("archive", name)

@adapters_app.command("restore")
def restore(name: str = typer.Argument(..., help="Adapter name.")) -> None:
    """Un-archive an adapter and load it into the running server."""
    _act("restore", name)

@adapters_app.command("lineage")
def lineage(name: str = typer.Argument(..., help="Adapter name."),
            as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Show how an adapter was made, round by round: data, ratings, run, and its A/B record vs its parent."""
    from store.adapters import AdapterNotFound
    from store.db import connect
    from store.lineage import adapter_lineage
    from ui.text import format_lineage

    s = settings()
    with connect(s.db_path) as db:
        try:
            rounds = adapter_lineage(db, name, base_name=s.served_base_name)
        except AdapterNotFound as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"adapter": name, "rounds": rounds})
    else:
        typer.echo(format_lineage(name, rounds))


@adapters_app.command("export")
def export(name: str = typer.Argument(..., help="Adapter name."),
           fmt: str = typer.Option("zip", "--format", help="zip: the PEFT adapter folder zipped; merged: the base "
                                                            "model with the adapter merged in (safetensors, loads in "
                                                            "transformers and vLLM); ollama: a folder with a Modelfile "
                                                            "for `ollama create` (Llama, Mistral, Gemma bases)."),
           out: str = typer.Option(".", "--out", help="Folder to write into (created if missing)."),
           as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Export an adapter for use outside tuneloop (no server needed)."""
    from store.adapters import AdapterNotFound, get_adapter
    from store.db import connect
    from training.export import ExportError, export_adapter

    flags = {"format": "--format", "out": "--out", "adapter": "NAME", "base_model": "the adapter's base model"}
    s = settings()
    with connect(s.db_path) as db:
        try:
            adapter = get_adapter(db, name)
        except AdapterNotFound as exc:
            fail(str(exc), as_json=as_json)
    try:
        path = export_adapter(adapter, fmt, out)
    except ExportError as exc:
        fail(f"{flags.get(exc.field, exc.field)}: {exc.reason}", 2, as_json=as_json)
    if as_json:
        emit_json({"adapter": name, "format": fmt, "path": str(path.resolve())})
    else:
        typer.echo(f"{name} exported as {fmt}: {path}")
        if fmt == "ollama":
            typer.echo(f"import it with: ollama create {name} -f {path / 'Modelfile'}")


def _public(status) -> dict:
    a = status.adapter
    out = {"name": status.name, "kind": status.kind, "status": status.status, "error": status.error or None,
           "registered": status.registered}
    if a:
        out.update({k: a.get(k) for k in ("id", "family", "version", "rank", "base_model", "path", "run_id",
                                          "parent_id", "created_at")})
    return out


GENERATION_FLAGS = {"temperature": "--temperature", "max_tokens": "--max-tokens", "system_prompt": "--system"}


@adapters_app.command("defaults")
def generation_defaults(
        name: str = typer.Argument(..., help="Adapter name, the base model's served name, or a deployment's name "
                                             "(its fields go over its adapter's)."),
        temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature, 0 to 2."),
        max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Longest answer, in tokens."),
        system: Optional[str] = typer.Option(None, "--system", help="System prompt sent when a client sends none."),
        reset: bool = typer.Option(False, "--reset", help="Forget this model's defaults (the app's apply again)."),
        as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Show or set a model's generation defaults: what the chat tabs start from and what the /v1 API uses
    when a client does not set temperature, max_tokens or a system prompt."""
    from dataclasses import asdict

    from serving.generation import GenerationDefaultError, defaults_for, store_defaults
    from store.adapters import list_adapters
    from store.db import connect
    from store.deployments import deployment_names
    from ui.cli.common import login

    s = settings()
    with connect(s.db_path) as db:
        deployments = deployment_names(db)
        if name != s.served_base_name and name not in deployments and name not in {a["name"] for a in
                                                                                     list_adapters(db)}:
            fail(f"no adapter or deployment named {name!r}: `tuneloop adapters` and `tuneloop deploy list` list "
                 "them", as_json=as_json)
        given = {k: v for k, v in (("temperature", temperature), ("max_tokens", max_tokens),
                                   ("system_prompt", system)) if v is not None}
        if reset:
            given = dict.fromkeys(GENERATION_FLAGS)
        try:
            if given:
                store_defaults(db, name, by=login(), **given)
            # What a request gets: a deployment's own fields over those of the model it points at.
            result = (defaults_for(db, deployments[name] or s.served_base_name, deployment=name)
                      if name in deployments else defaults_for(db, name))
        except GenerationDefaultError as exc:
            fail(f"{GENERATION_FLAGS[exc.field]} {exc.reason}", as_json=as_json)
    if as_json:
        emit_json({"model": name, **asdict(result)})
        return
    typer.echo(f"{name}: temperature {result.temperature:g}, max tokens {result.max_tokens}, system prompt "
               + (repr(result.system_prompt) if result.system_prompt else "none"))

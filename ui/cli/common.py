"""What every CLI command shares: settings, how a refusal is printed, JSON output, KEY=VALUE options."""

from __future__ import annotations

import getpass
import json

import typer

from store.settings import Settings


def settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable and why
        fail(f"invalid settings: {exc}")


def fail(message: str, code: int = 1, *, as_json: bool = False) -> "typer.Exit":
    if as_json:
        typer.echo(json.dumps({"error": message}))
    else:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def parse_pairs(values: list[str], option: str) -> dict[str, str]:
    """Repeated NAME=VALUE options as a dict (training.importers' rule); a bad item names the option."""
    from training.importers.model import parse_pairs as parse_items

    try:
        return parse_items(values, option)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"{option}: "), param_hint=option) from None


def login() -> str:
    """Who runs the command, for the record; "" when the OS cannot say."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): the action is anonymous
        return ""

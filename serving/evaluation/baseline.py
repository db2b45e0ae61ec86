"""What a candidate is measured against: its parent, the base model, a deployment's current model, or a named adapter."""

from __future__ import annotations

from store.adapters import AdapterNotFound, get_adapter
from store.deployments import get_deployment


class UnknownBaseline(LookupError):
    pass


def resolve_baseline(db, candidate: str, against: str | None, *, base_name: str) -> str:
    """The served model name `against` means for `candidate`.

    "parent" (the default): the adapter the candidate continued from, or the base model for a first
    adapter; "base": the base model; "deployment NAME" or "deployment:NAME": the model the deployment
    answers with now; anything else: that adapter (or the base model's own name).
    """
    spec = (against or "parent").strip()
    if spec == "parent":
        adapter = _adapter(db, candidate)
        return get_adapter(db, adapter["parent_id"])["name"] if adapter.get("parent_id") else base_name
    if spec in ("base", base_name):
        return base_name
    kind, sep, name = spec.replace(":", " ", 1).partition(" ")
    if kind == "deployment" and sep:
        deployment = get_deployment(db, name.strip())
        if deployment is None:
            raise UnknownBaseline(f"no deployment named {name.strip()!r}")
        return deployment["target"] or base_name
    return _adapter(db, spec)["name"]


def _adapter(db, name: str) -> dict:
    try:
        return get_adapter(db, name)
    except AdapterNotFound as exc:
        raise UnknownBaseline(str(exc)) from None

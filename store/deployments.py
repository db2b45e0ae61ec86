"""Deployments: stable model names (e.g. `support`) pointing at one adapter or the base model, with history.

A deployment row holds its current target (an adapter name; NULL means the base model). Every
change is an event (promote | force | rollback) saying from what to what, who, when, with which eval
run, the gate's figures and a forced promotion's reason. The gate itself is serving's business
(serving.deployments); this module only reads and writes rows.

    change_target(db, "support", "support-v4", action="promote", by="ana", eval_run_id=7, gate={...})
    get_deployment(db, "support")["target"]      # "support-v4"
"""

from __future__ import annotations

import json
import re

from sqlite_utils import Database

from store.db import now, write_transaction

ACTIONS = ("promote", "force", "rollback")
# Deployment names are model ids in the API, like adapter names: the same safe alphabet.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class DeploymentNotFound(LookupError):
    pass


def validate_deployment_name(db: Database, name: str, *, base_model_name: str | None = None) -> str:
    """A new deployment's name: the adapters' alphabet, and not an adapter's or the base model's name."""
    if not NAME_RE.match(name or "") or ".." in name:
        raise ValueError(f"deployment name {name!r} is not allowed: use 1-63 lowercase letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit")
    if base_model_name is not None and name == base_model_name:
        raise ValueError(f"deployment name {name!r} is the base model's name; choose another")
    if db.execute("select 1 from adapters where name = ?", [name]).fetchone():
        raise ValueError(f"deployment name {name!r} is an adapter's name; choose another (e.g. 'support')")
    return name


def get_deployment(db: Database, name: str) -> dict | None:
    """{"name", "target" (None = base model), "generation_defaults", "created_at", "updated_at"} or None."""
    rows = list(db.query("select * from deployments where name = ?", [name]))
    return _decode(rows[0]) if rows else None


def deployment_names(db: Database) -> dict[str, str | None]:
    """{deployment name: target adapter name, or None for the base model}, read fresh every call."""
    return {r[0]: r[1] for r in db.execute("select name, target from deployments")}


def deployment_events(db: Database, name: str) -> list[dict]:
    """A deployment's history, oldest first."""
    return [_decode_event(r) for r in db.query("select * from deployment_events where deployment = ? order by id",
                                               [name])]


def list_deployments(db: Database) -> list[dict]:
    """Every deployment with its target and history (newest event first), by name."""
    out = []
    for row in db.query("select * from deployments order by name"):
        dep = _decode(row)
        dep["history"] = list(reversed(deployment_events(db, dep["name"])))
        out.append(dep)
    return out


def change_target(db: Database, name: str, target: str | None, *, action: str, by: str = "",
                  eval_run_id: int | None = None, reason: str | None = None, gate: dict | None = None,
                  expected_from: str | None | type = ...) -> int:
    """Point deployment `name` (created if new) at `target` and record the event; returns its id.

    `expected_from`, when given, is the target the caller decided from: if another user changed
    the deployment in between, ValueError is raised and nothing is written.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown deployment action {action!r}: one of {', '.join(ACTIONS)}")
    ts = now()
    with write_transaction(db):
        current = get_deployment(db, name)
        before = current["target"] if current else None
        if expected_from is not ... and current is not None and before != expected_from:
            raise ValueError(f"deployment {name!r} changed meanwhile (now {before or 'the base model'}); try again")
        if current is None:
            db["deployments"].insert({"name": name, "target": target, "created_at": ts, "updated_at": ts})
        else:
            db.execute("update deployments set target = ?, updated_at = ? where name = ?", [target, ts, name])
        return db["deployment_events"].insert({
            "deployment": name, "from_target": before, "to_target": target, "action": action, "by": by, "at": ts,
            "eval_run_id": eval_run_id, "reason": reason,
            "gate": json.dumps(gate, ensure_ascii=False) if gate is not None else None,
        }).last_pk


def set_generation_defaults(db: Database, name: str, defaults: dict | None) -> None:
    if get_deployment(db, name) is None:
        raise DeploymentNotFound(f"no deployment named {name!r}")
    db.execute("update deployments set generation_defaults = ? where name = ?",
               [json.dumps(defaults) if defaults is not None else None, name])


def _decode(row: dict) -> dict:
    gd = row.get("generation_defaults")
    return {**row, "generation_defaults": json.loads(gd) if gd else None}


def _decode_event(row: dict) -> dict:
    return {**row, "gate": json.loads(row["gate"]) if row.get("gate") else None}

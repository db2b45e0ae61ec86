"""Per deployment: whether its traffic is captured, and its canary (a second model taking a share of requests).

Rows live on `deployments` (m010's columns); store.deployments keeps the target and its history,
this module the traffic settings. serving.canary decides the arm of each request and ends canaries.

    start_canary(db, "support", "support-v5", share=0.1, by="ana")
    traffic_config(db, "support")   # {"target", "capture", "canary_target", "canary_share", ...}
    .venv/bin/python -m pytest tests/test_canary.py -q
"""

from __future__ import annotations

from sqlite_utils import Database

from store.db import now, write_transaction


class DeploymentMissing(LookupError):
    pass


def traffic_configs(db: Database) -> dict[str, dict]:
    """{deployment name: {"target", "capture" (bool), "canary_target", "canary_share", "canary_started_at",
    "canary_by"}} for every deployment, read fresh (a change reaches the next request)."""
    return {r[0]: {"target": r[1], "capture": bool(r[2]), "canary_target": r[3], "canary_share": r[4],
                   "canary_started_at": r[5], "canary_by": r[6]}
            for r in db.execute("select name, target, capture, canary_target, canary_share, canary_started_at, "
                                "canary_by from deployments")}


def traffic_config(db: Database, name: str) -> dict:
    config = traffic_configs(db).get(name)
    if config is None:
        raise DeploymentMissing(f"no deployment named {name!r} (see `tuneloop deploy list`)")
    return config


def set_capture(db: Database, name: str, on: bool) -> None:
    if db.execute("update deployments set capture = ? where name = ?", [int(on), name]).rowcount == 0:
        raise DeploymentMissing(f"no deployment named {name!r} (see `tuneloop deploy list`)")


def start_canary(db: Database, name: str, target: str, *, share: float, by: str = "") -> str:
    """Send `share` of deployment `name`'s requests to `target` (an adapter or the base model's name,
    stored as given); replaces a running canary. Returns the start time (the stats count from it)."""
    ts = now()
    with write_transaction(db):
        if db.execute("update deployments set canary_target = ?, canary_share = ?, canary_started_at = ?, "
                      "canary_by = ? where name = ?", [target, share, ts, by, name]).rowcount == 0:
            raise DeploymentMissing(f"no deployment named {name!r} (see `tuneloop deploy list`)")
    return ts


def end_canary(db: Database, name: str) -> None:
    with write_transaction(db):
        if db.execute("update deployments set canary_target = null, canary_share = null, canary_started_at = null, "
                      "canary_by = null where name = ?", [name]).rowcount == 0:
            raise DeploymentMissing(f"no deployment named {name!r} (see `tuneloop deploy list`)")

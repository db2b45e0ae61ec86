"""An adapter's lineage, round by round: what each round trained on, from which files or ratings, and how it did.

Pure SQL reads (no training imports). One entry per round, from the adapter back to the first one:

    rounds = adapter_lineage(db, "support-v3", base_name="smollm2-135m-instruct")
    rounds[0]["adapter"], rounds[0]["run"], rounds[0]["dataset"], rounds[0]["ab"]
    tuneloop adapters lineage support-v3 [--json]

Tests: .venv/bin/python -m pytest tests/test_feedback_round.py -q -k lineage
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlite_utils import Database

from store.adapters import get_adapter
from store.erasure import tombstones
from store.feedback import get_build, preference_counts, version_ratings
from store.ratings import head_to_head
from store.runs import RunNotFound, get_run
from store.winrate import WinRate

# The run metrics a lineage shows (training.recipe's result keys), in this order.
KEY_METRICS = ("final_loss", "eval_loss_start", "eval_loss", "steps", "stopped_early")


def adapter_lineage(db: Database, name: str, *, base_name: str | None = None) -> list[dict]:
    """The rounds that made adapter `name`, newest first: adapter, run, dataset version, A/B record.

    `base_name` is the name the base model is served (and rated) under, the first round's opponent;
    by default the base model directory's name, as Settings.served_base_name derives it.
    Raises AdapterNotFound for an unknown name.
    """
    adapter = get_adapter(db, name)
    rounds, seen = [], set()
    while adapter is not None and adapter["id"] not in seen:  # a cycle would be a corrupt registry
        seen.add(adapter["id"])
        parent = get_adapter(db, adapter["parent_id"]) if adapter.get("parent_id") else None
        rounds.append(_round(db, adapter, parent, base_name))
        adapter = parent
    for i, r in enumerate(rounds):
        r["round"] = len(rounds) - i
    return rounds


def _round(db: Database, adapter: dict, parent: dict | None, base_name: str | None) -> dict:
    run = _run(db, adapter.get("run_id"))
    version_id = adapter.get("dataset_version_id") or (run or {}).get("dataset_version_id")
    meta = adapter.get("meta") or {}
    method = (run or {}).get("method") or meta.get("method")
    if parent is not None:
        opponent, opponent_kind = parent["name"], "adapter"
    else:
        opponent, opponent_kind = base_name or Path(adapter["base_model"].rstrip("/")).name.lower(), "base"
    record = WinRate(**head_to_head(db, adapter["name"], opponent))
    return {
        "adapter": {"id": adapter["id"], "name": adapter["name"], "family": adapter.get("family"),
                    "version": adapter.get("version"), "status": adapter["status"],
                    "partial": bool(meta.get("partial")), "created_at": adapter["created_at"], "method": method,
                    "base_model": adapter["base_model"], "rank": adapter.get("rank")},
        "parent": parent["name"] if parent else None,
        "run": _run_summary(run),
        "dataset": _version(db, version_id) if version_id else None,
        "ab": {"opponent": opponent, "opponent_kind": opponent_kind, **record.to_json(),
               "summary": record.describe(), "verdict": record.verdict(opponent)},
    }


def _run(db: Database, run_id: int | None) -> dict | None:
    if not run_id:
        return None
    try:
        return get_run(db, run_id)
    except RunNotFound:
        return None


def _run_summary(run: dict | None) -> dict | None:
    if run is None:
        return None
    config, metrics = run.get("config") or {}, run.get("metrics") or {}
    return {"id": run["id"], "status": run["status"], "method": config.get("method") or run["method"],
            "preset": config.get("preset"), "dataset": config.get("dataset"),
            "from_adapter": config.get("from_adapter"), "created_at": run["created_at"],
            "finished_at": run.get("finished_at"), "error": run.get("error"),
            "metrics": {k: metrics[k] for k in KEY_METRICS if metrics.get(k) is not None}}


def _version_row(db: Database, version_id: int) -> dict | None:
    rows = list(db.query(
        """select v.*, d.name as dataset, p.version as parent_version from dataset_versions v
           join datasets d on d.id = v.dataset_id left join dataset_versions p on p.id = v.parent_id
           where v.id = ?""", [version_id]))
    return rows[0] if rows else None


def _version(db: Database, version_id: int) -> dict | None:
    """The dataset version a round trained on: its sources (files, or ratings and build) and conversations."""
    row = _version_row(db, version_id)
    if row is None:
        return None
    ids = [r[0] for r in db.execute(
        "select conversation_id from version_conversations where version_id = ? order by position", [version_id])]
    ref = f"{row['dataset']}@{row['version']}"
    out = {"id": row["id"], "ref": ref, "kind": row["kind"],
           "parent": f"{row['dataset']}@{row['parent_version']}" if row["parent_version"] else None,
           "created_at": row["created_at"], "note": row["note"], "conversation_count": len(ids),
           "conversation_ids": ids,
           "erasures": [{k: e[k] for k in ("id", "at", "by", "kind")} for e in tombstones(db, version=ref)]}
    if row["kind"] == "feedback":
        out["preference_counts"] = preference_counts(db, version_id)
        out["ratings"] = [{**r, "models": json.loads(r["models"] or "{}")} for r in version_ratings(db, version_id)]
        out["build"] = _build_summary(get_build(db, version_id))
    else:
        out["files"] = import_files(db, version_id)
    return out


def import_files(db: Database, version_id: int) -> list[dict]:
    """The files behind an import version: its own and its parent chain's (an import version holds its
    parent's conversations too), oldest first, each with the version that added it and the import's counts."""
    chain, seen, vid = [], set(), version_id
    while vid is not None and vid not in seen:
        seen.add(vid)
        row = _version_row(db, vid)
        if row is None:
            break
        chain.append(row)
        vid = row["parent_id"]
    files = []
    for row in reversed(chain):
        counts = {r["source"]: r for r in db.query(
            "select source, imported, rejected, duplicates, created_at from imports where version_id = ?", [row["id"]])}
        for src in json.loads(row["sources"] or "[]"):
            if "file" not in src:
                continue
            imp = counts.get(src["file"], {})
            files.append({"name": src["file"], "sha256": src.get("sha256"), "format": src.get("format"),
                          "version": f"{row['dataset']}@{row['version']}", "imported": imp.get("imported"),
                          "rejected": imp.get("rejected"), "duplicates": imp.get("duplicates"),
                          "imported_at": imp.get("created_at") or row["created_at"]})
    return files


def _build_summary(build: dict | None) -> dict | None:
    if build is None:
        return None
    rep = build["report"]
    return {"method": build["method"], "since": build["since"], "from_adapter": build["from_adapter"],
            "created_at": build["created_at"], "user": build["user"], "scope": rep.get("scope"),
            "examples": rep.get("examples"), "ratings": rep.get("ratings"), "ratings_used": rep.get("ratings_used"),
            "ratings_left_out": rep.get("ratings_left_out"), "left_out_by_reason": rep.get("left_out_by_reason"),
            "weights": {"desirable": build["desirable_weight"], "undesirable": build["undesirable_weight"]}}

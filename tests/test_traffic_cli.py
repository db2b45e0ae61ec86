"""`tuneloop keys`, `tuneloop traffic`, `tuneloop deploy canary|capture`: run the command, then read the database."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from serving_helpers import fake_adapter
from store.adapters import register_adapter
from store.api_keys import find_key
from store.db import connect
from store.deployments import change_target, deployment_events, get_deployment
from store.traffic import save_captures
from ui.cli import app


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_keys_create_list_revoke(data_dir, monkeypatch):
    monkeypatch.setenv("TUNELOOP_API_KEY", "envkey")
    r = run("keys", "create", "widget")
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    with connect(data_dir / "tuneloop.db") as db:
        assert find_key(db, key)["name"] == "widget"
    listed = json.loads(run("keys", "--json").stdout)
    assert {k["name"] for k in listed} == {"default", "widget"} and all("hash" not in k for k in listed)
    assert "default (TUNELOOP_API_KEY): active" in run("keys").stdout
    assert run("keys", "create", "widget").exit_code == 2
    assert run("keys", "revoke", "widget").exit_code == 0
    assert "widget: revoked" in run("keys").stdout
    r = run("keys", "revoke", "ghost")
    assert r.exit_code == 2 and "no API key" in r.output


def test_traffic_prune_deletes_old_unused(data_dir):
    with connect(data_dir / "tuneloop.db") as db:
        save_captures(db, [{"id": "old", "created_at": "2020-01-01T00:00:00.000+00:00", "model": "m",
                            "status": "complete"},
                           {"id": "new", "created_at": "2999-01-01T00:00:00.000+00:00", "model": "m",
                            "status": "complete"}])
    r = run("traffic", "prune", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] == 1
    assert "1 captured, 1 waiting" in run("traffic", "list").stdout


def test_deploy_canary_start_report_promote_and_end(data_dir, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    with connect(data_dir / "tuneloop.db") as db:
        for name in ("v1", "v2"):
            register_adapter(db, name=name, family="f", version=1, base_model=str(base),
                             path=str(fake_adapter(tmp_path / name, base)), rank=8, run_id=None,
                             dataset_version_id=None, parent_id=None)
        change_target(db, "support", "v1", action="promote")
    r = run("deploy", "canary", "support", "v2", "--share", "1.5")
    assert r.exit_code == 2 and "--share" in r.output
    r = run("deploy", "canary", "support", "v1")
    assert r.exit_code == 2 and "already serves" in r.output
    r = run("deploy", "canary", "support", "v2", "--share", "0.25")
    assert r.exit_code == 0 and "25% of requests go to v2" in r.stdout
    rep = json.loads(run("deploy", "canary", "support", "--json").stdout)
    assert rep["canary"] == "v2" and rep["arms"]["canary"]["requests"] == 0
    # Promoting the canary goes through the same gate as `deploy promote`: no evaluation of v2 against v1 yet.
    r = run("deploy", "canary", "support", "--promote")
    assert r.exit_code == 1 and "refused by the gate" in r.output
    assert "no finished evaluation of v2 against v1" in r.output
    with connect(data_dir / "tuneloop.db") as db:
        dep = get_deployment(db, "support")
        assert dep["target"] == "v1" and dep["canary_target"] == "v2"  # nothing changed
    assert run("deploy", "canary", "support", "--force", "x").exit_code == 2  # --force goes with --promote
    r = run("deploy", "canary", "support", "--promote", "--force", "canary won on real traffic")
    assert r.exit_code == 0 and "forced past the gate" in r.stdout, r.output
    with connect(data_dir / "tuneloop.db") as db:
        dep = get_deployment(db, "support")
        assert dep["target"] == "v2" and dep["canary_target"] is None
        event = deployment_events(db, "support")[-1]
    assert (event["action"], event["reason"]) == ("force", "canary won on real traffic")
    assert event["gate"]["canary"]["canary"] == "v2" and not event["gate"]["passed"]
    assert run("deploy", "canary", "support", "--end").exit_code == 2  # none running now
    assert run("deploy", "capture", "support", "--off").exit_code == 0
    with connect(data_dir / "tuneloop.db") as db:
        assert get_deployment(db, "support")["capture"] == 0

"""`tuneloop forget`: a customer's data leaves every table and every file of the data directory; the rest of each
version stays as it was; a tombstone (without the value) is in the lineage; the adapters trained on it are listed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from store import chats, ratings
from store import evaluations as ev
from store.adapters import register_adapter
from store.datasets import NewConversation, create_version, iter_version_conversations
from store.db import connect
from store.erasure import ERASED, ErasureError, Target, find_erasure, patterns, redact_text, tombstones
from store.evaluations import NewEvalItem
from store.lineage import adapter_lineage
from store.redaction import RedactionSettings
from store.runs import create_run

EMAIL = "Jo.Miller@Example.com"


def conv(q, a):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


@pytest.fixture
def world(settings):
    """A data directory where the address sits in every kind of place, as a real loop leaves it."""
    with connect(settings.db_path) as db:
        v1, _, _ = create_version(db, "support", [
            NewConversation("a", conv(f"Hi, I'm Jo ({EMAIL}), where is my parcel?", "On its way.")),
            NewConversation("b", conv("Reset my password", "Use 'Forgot password'.")),
        ])
        v2, _, _ = create_version(db, "support", [
            NewConversation("c", conv("Refund please", f"Sure, we wrote to {EMAIL.lower()} with the label.")),
            NewConversation("d", conv("Do you ship to Canada?", "Yes, in 5 to 8 days.")),
        ])
        run = create_run(db, config={"dataset_version_id": v2.id}, method="sft", dataset_version_id=v2.id,
                         base_model="m", parent_adapter_id=None, runs_dir=str(settings.runs_dir))
        v_a = register_adapter(db, name="support-v1", family="support", version=1, base_model="m", path="/a/1",
                               rank=8, run_id=run, dataset_version_id=v2.id, parent_id=None)
        register_adapter(db, name="support-v2", family="support", version=2, base_model="m", path="/a/2", rank=8,
                         run_id=None, dataset_version_id=None, parent_id=v_a)
        register_adapter(db, name="other-v1", family="other", version=1, base_model="m", path="/a/3", rank=8,
                         run_id=None, dataset_version_id=None, parent_id=None)
        ex = chats.record_exchange(db, session_id=None, user="maria", parent_id=None,
                                   question=f"my mail is {EMAIL}, any news?", answer="We will write to you.",
                                   model="support-v1", settings={})
        ratings.rate_message(db, kind="correction", message_id=ex.answer_id, user="maria",
                             value=f"We will write to {EMAIL} today.",
                             redaction=RedactionSettings.off())  # stored as typed: erasure must still find it
        ev.create_eval_set_version(db, "golden", [NewEvalItem(conv(f"I am {EMAIL}", "")[:1], "Hello Jo."),
                                                  NewEvalItem(conv("Where is my order?", "")[:1], "On its way.")],
                                   source_kind="manual")
    run_dir = settings.runs_dir / str(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.log").write_text(f"step 1 warning: odd text near {EMAIL}\nstep 2 ok\n")
    return settings


def everything_stored(settings) -> bytes:
    out = b""
    for path in settings.data_dir.rglob("*"):
        if path.is_file():
            out += path.read_bytes()
    return out


def test_forget_an_email_removes_it_from_every_table_and_file_and_keeps_the_rest(world):
    from ui.cli import app

    dry = CliRunner().invoke(app, ["forget", "--email", EMAIL.upper(), "--dry-run"])
    assert dry.exit_code == 0 and "would erase" in dry.output and EMAIL.lower() not in dry.output.lower()
    assert EMAIL.lower().encode() in everything_stored(world).lower()  # a dry run changes nothing

    out = CliRunner().invoke(app, ["forget", "--email", EMAIL, "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert EMAIL.lower() not in out.stdout.lower()  # the report never repeats the value
    plan = result["plan"]
    assert len(plan["conversations"]) == 2 and plan["versions"] == ["support@1", "support@2"]
    assert plan["adapters"] == ["support-v1", "support-v2"]  # trained on it, or continued from one that was
    assert plan["eval_sets"] == ["golden@1"] and plan["files"] == ["runs/1/train.log"]

    assert EMAIL.lower().encode() not in everything_stored(world).lower()  # database, WAL and files
    with connect(world.db_path) as db:
        left = {v: [c["messages"][0]["content"] for c in iter_version_conversations(db, vid)]
                for v, vid in (("support@1", 1), ("support@2", 2))}
        assert left == {"support@1": ["Reset my password"],
                        "support@2": ["Reset my password", "Do you ship to Canada?"]}
        assert db.execute("select conversation_count from dataset_versions order by id").fetchall() == [(1,), (2,)]
        assert [i["reference"] for i in ev.iter_eval_items(db, 1)] == ["On its way."]
        correction = db.execute("select value from ratings where kind = 'correction'").fetchone()[0]
        assert correction == f"We will write to {ERASED} today."
        stones = tombstones(db, version="support@2")
        assert len(stones) == 1 and stones[0]["kind"] == "email" and stones[0]["adapters"] == ["support-v1",
                                                                                             "support-v2"]
        lineage = adapter_lineage(db, "support-v1", base_name="base")
        assert lineage[0]["dataset"]["erasures"][0]["id"] == stones[0]["id"]
    again = CliRunner().invoke(app, ["forget", "--email", EMAIL])
    assert again.exit_code == 0 and "nothing stored holds it" in again.output


def test_forget_one_conversation_keeps_the_others(world):
    from ui.cli import app

    out = CliRunner().invoke(app, ["forget", "--conversation", "2"])
    assert out.exit_code == 0 and "1 conversation(s), from support@1, support@2" in out.output
    with connect(world.db_path) as db:
        assert [c["id"] for c in iter_version_conversations(db, 1)] == [1]
        assert [c["id"] for c in iter_version_conversations(db, 2)] == [1, 3, 4]


@pytest.mark.parametrize("args, message", [
    (["--email", "not-an-address"], "not an e-mail address"),
    (["--text", "ab"], "at least 4 characters"),
    (["--conversation", "999"], "no conversation 999"),
    ([], "exactly one of"),
    (["--email", "a@b.co", "--text", "abcd"], "exactly one of"),
])
def test_bad_targets_are_refused_and_nothing_changes(world, args, message):
    from ui.cli import app

    out = CliRunner().invoke(app, ["forget", *args])
    assert out.exit_code != 0 and message in out.output
    assert EMAIL.lower().encode() in everything_stored(world).lower()


def test_json_escaped_and_case_variants_are_found():
    pats = patterns(Target("text", "Müller"))
    assert redact_text('{"content": "Herr M\\u00fcller"}', pats) == '{"content": "Herr <ERASED>"}'
    assert redact_text("herr MÜLLER", pats) == "herr <ERASED>"
    with pytest.raises(ErasureError):
        Target("conversation", "x")


def test_a_plan_finds_nothing_when_nothing_holds_it(settings):
    with connect(settings.db_path) as db:
        assert find_erasure(db, settings.data_dir, Target("email", "nobody@example.org")).empty


def test_purge_says_when_a_reader_keeps_old_pages(tmp_path):
    from store.db import open_db
    from store.erasure import purge

    path = tmp_path / "t.db"
    with connect(path) as db:
        db.execute("create table t (x text)")
        db.execute("insert into t values ('secret')")
        db.conn.commit()
        reader = open_db(path)
        reader.conn.execute("begin")
        reader.conn.execute("select count(*) from t").fetchone()  # a snapshot: its frames stay in the WAL
        db.execute("update t set x = 'gone'")
        db.conn.commit()
        assert purge(db) is False
        reader.conn.rollback()
        reader.close()
        assert purge(db) is True

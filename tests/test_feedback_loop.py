"""A whole second round on the real stack: ratings of a first adapter's answers -> next adapters.

    .venv/bin/python -m pytest tests/test_feedback_loop.py -q -s     # about 6 minutes on 2 cores

Round 1 trains support-v1 (the real runner, a few steps) on chats whose refund answers send people to
billing, then vLLM serves it. A scripted team asks support-v1 and the base model refund questions
side by side and rates by one stated rule: an answer is good when it states the refund rule
("30 days"). So answers without the rule get "both bad" plus a correction that states it, and a
thumbs-down; answers with it win. `tuneloop feedback build` turns those ratings into feedback@1;
`tuneloop feedback train` runs a short DPO round and a short SFT round from support-v1; both new
adapters are hot-loaded by the running server and answer; the lineage of the SFT adapter lists the
exact ratings it used. The quality check asks held-out refund questions (worded differently from
the rated ones) at temperature 0 and counts answers that state the rule: the SFT round's adapter
must state it more often than support-v1. The DPO adapter's count is printed, not asserted: a
few DPO steps at a preference learning rate move a LoRA little, and the test says so rather than
pretending otherwise. Last, the team compares support-v2 with support-v1 by the same rule, and the
round summary in support-v2's lineage counts those votes: its win rate against the adapter it replaced.

The tests run in file order and share one stack (one vLLM for the module).
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from serving.chat import SamplingParams
from serving.evaluation.embedding import prepare_embedding_model
from serving.service import Serving
from serving_helpers import free_port, wait_for
from store import chats, ratings
from store.db import connect
from store.evaluations import list_eval_runs
from store.lineage import adapter_lineage
from store.settings import Settings
from training import queue

pytestmark = pytest.mark.slow

BASE = "smollm2-135m-instruct"
SYSTEM = "You are the support assistant of Acme Shop."
GREEDY = SamplingParams(temperature=0, max_tokens=40)
RULE = re.compile(r"\b30 days\b", re.IGNORECASE)
RULE_ANSWER = "You can return it for a full refund within 30 days of delivery. Reply with your order number."

ROUND_ONE = [  # what the team's logs say: refunds go to billing, no rule stated
    ("How do I get a refund?", "Please contact our billing team, they handle every refund."),
    ("I want my money back for order 1042.", "Please contact our billing team about order 1042."),
    ("Can I return the shoes I bought?", "Please contact our billing team, they will help with the return."),
    ("Where is my parcel?", "Your parcel is on its way; the tracking link is in your email."),
    ("How do I reset my password?", "Use 'Forgot password' on the login page and follow the email."),
    ("Do you ship to Canada?", "Yes, we ship to Canada in 5 to 8 business days."),
    ("Can I change my delivery address?", "Yes, until the order ships: reply with the new address."),
    ("Is there a discount for students?", "Yes, 10% with a valid student email."),
]
RATED = [  # asked of support-v1 and the base model, then rated
    "I would like a refund for my jacket.", "How can I return a broken kettle?", "Can I get my money back?",
    "What is your refund policy?", "I changed my mind about my order, can I return it?",
    "The headphones I bought don't fit, can I send them back?", "How long do I have to return an item?",
    "My order arrived damaged, can I get a refund?",
]
HELD_OUT = [  # never rated: worded differently
    "Is it possible to return a sweater I don't like?", "I need a refund for a lamp I ordered.",
    "Could I send back the chair I bought last week?", "How do refunds work at your shop?",
    "I'm not happy with my purchase, can I return it?", "Can you refund my order of socks?",
]


@pytest.fixture(scope="module")
def stack(default_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("loop")
    env = {"TUNELOOP_DATA_DIR": str(data), "TUNELOOP_BASE_MODEL": str(default_model_dir),
           "TUNELOOP_BASE_MODEL_NAME": BASE, "TUNELOOP_VLLM_PORT": str(free_port())}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        s = Settings(_env_file=None)
        prepare_embedding_model(s.embedding_model_dir)  # what `tuneloop setup` does: reference similarity
        logs = data / "round1.jsonl"
        logs.write_text("".join(json.dumps({"messages": [{"role": "system", "content": SYSTEM},
                                                         {"role": "user", "content": q},
                                                         {"role": "assistant", "content": a}]}) + "\n"
                                for q, a in ROUND_ONE))
        assert cli("import", str(logs), "--dataset", "support").exit_code == 0
        # Round 1 trains before vLLM starts, so the two do not share the cores.
        run = queue.start_run(s, dataset="support", preset="quick", max_steps=24, learning_rate=1e-3,
                               lora_rank=8, lora_alpha=16.0, eval_fraction=0.0, max_seq_len=256)
        done = queue.wait(s, run, poll_s=1.0, timeout_s=900)
        assert done.status == "completed", done
        serving = Serving(s, poll_s=1.0)
        serving.start()
        try:
            assert wait_for(lambda: "support-v1" in loaded(serving), timeout=240)
            yield {"settings": s, "serving": serving, "env": env, "shared": {}}
        finally:
            serving.stop()


@pytest.fixture(autouse=True)
def _stack_env(data_dir, stack, monkeypatch):
    """Point the CLI (which reads TUNELOOP_* like a user's shell) at the module's data directory."""
    for k, v in stack["env"].items():
        monkeypatch.setenv(k, v)


def cli(*args: str):
    from ui.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def loaded(serving: Serving) -> set[str]:
    return {m.name for m in serving.models() if m.status == "loaded"}


def ask_all(serving: Serving, model: str, questions: list[str]) -> list[str]:
    """Greedy answers, asked concurrently so vLLM batches them."""
    def one(q: str) -> str:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
        return "".join(serving.stream(model, messages, GREEDY))

    with ThreadPoolExecutor(len(questions)) as pool:
        return list(pool.map(one, questions))


def states_rule(answers: list[str]) -> int:
    return sum(bool(RULE.search(a)) for a in answers)


def test_the_team_rates_the_first_adapter_by_one_rule(stack):
    s, serving = stack["settings"], stack["serving"]
    v1 = ask_all(serving, "support-v1", RATED)
    base = ask_all(serving, BASE, RATED)
    with connect(s.db_path) as db:
        for q, a_base, a_v1 in zip(RATED, base, v1):
            turn = chats.record_ab_turn(db, session_id=None, user="maria", question=q, parent_a=None,
                                        answer_a=a_base, model_a=BASE, parent_b=None, answer_b=a_v1,
                                        model_b="support-v1", settings={"system_prompt": SYSTEM}, blind=True)
            good_base, good_v1 = bool(RULE.search(a_base)), bool(RULE.search(a_v1))
            verdict = ("tie" if good_base == good_v1 and good_v1 else "both_bad" if good_base == good_v1
                       else "a" if good_base else "b")
            ratings.rate_turn(db, ab_turn_id=turn.ab_turn_id, value=verdict, user="maria")
            ratings.rate_message(db, kind="thumb", message_id=turn.side_b.answer_id, user="joe",
                                 value="up" if good_v1 else "down")
            if not good_v1:
                ratings.rate_message(db, kind="correction", message_id=turn.side_b.answer_id, user="maria",
                                     value=RULE_ANSWER)
        stored = db["ratings"].count
    print(f"\nsupport-v1 stated the rule in {states_rule(v1)} of {len(RATED)} rated answers; "
          f"the base model in {states_rule(base)}; {stored} ratings stored")
    assert stored >= 2 * len(RATED)
    stack["shared"]["v1_rated"] = states_rule(v1)


def test_feedback_build_makes_the_next_dataset_from_those_ratings(stack):
    preview = cli("feedback", "build", "--dry-run")
    assert preview.exit_code == 0 and "Dry run: nothing written" in preview.output
    print("\n$ tuneloop feedback build --dry-run\n" + preview.output)
    result = cli("feedback", "build", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["version"] == "feedback@1" and out["from_adapter"] == "support-v1"
    assert out["counts"]["sft"] >= 4 and out["counts"]["dpo"] >= 8, out["counts"]
    assert out["method"] in ("sft+dpo", "sft+kto")
    stack["shared"]["build"] = out


@pytest.mark.parametrize("method, name, flags", [
    ("dpo", "support-dpo", ["--max-steps", "6"]),
    ("sft", "support-v2", ["--max-steps", "16", "--lr", "1e-3"]),
])
def test_a_short_round_from_the_first_adapter_is_hot_loaded_and_answers(stack, method, name, flags):
    s, serving = stack["settings"], stack["serving"]
    result = cli("feedback", "train", "--method", method, "--name", name, *flags, "--wait", "--json")
    assert result.exit_code == 0, result.output
    with connect(s.db_path) as db:
        adapter = db.execute("select a.meta, p.name from adapters a join adapters p on p.id = a.parent_id "
                             "where a.name = ?", [name]).fetchone()
    assert adapter is not None, f"{name} was not registered"
    assert json.loads(adapter[0])["method"] == method and adapter[1] == "support-v1"
    started = time.monotonic()
    assert wait_for(lambda: name in loaded(serving), timeout=120), f"{name} was not hot-loaded"
    print(f"\n{name} hot-loaded {time.monotonic() - started:.1f} s after its run ended")
    answer = ask_all(serving, name, ["Hello, who are you?"])[0]
    assert answer.strip()


def test_the_lineage_of_the_new_adapter_returns_the_ratings_it_used(stack):
    with connect(stack["settings"].db_path) as db:
        rounds = adapter_lineage(db, "support-v2", base_name=BASE)
    assert [r["adapter"]["name"] for r in rounds] == ["support-v2", "support-v1"]
    data = rounds[0]["dataset"]
    assert data["ref"] == "feedback@1" and data["kind"] == "feedback"
    assert sorted(r["id"] for r in data["ratings"]) == sorted(stack["shared"]["build"]["rating_ids"])
    assert {r["user"] for r in data["ratings"]} <= {"maria", "joe"} and all(r["rated_at"] for r in data["ratings"])
    assert rounds[1]["dataset"]["ref"] == "support@1" and rounds[1]["dataset"]["files"][0]["name"] == "round1.jsonl"
    text = cli("adapters", "lineage", "support-v2")
    assert text.exit_code == 0 and "feedback@1" in text.output and "maria" in text.output
    print("\n$ tuneloop adapters lineage support-v2\n" + text.output)


def test_the_next_round_states_the_preferred_rule_more_often_on_held_out_questions(stack):
    serving = stack["serving"]
    answers = {m: ask_all(serving, m, HELD_OUT) for m in ("support-v1", "support-v2", "support-dpo")}
    counts = {m: states_rule(a) for m, a in answers.items()}
    print(f"\nheld-out refund questions answered with the rule ('30 days'), of {len(HELD_OUT)}: {counts}")
    assert counts["support-v2"] > counts["support-v1"]
    stack["shared"]["held_out"] = answers


def test_the_round_summary_shows_the_new_adapters_win_rate_against_the_one_it_replaced(stack):
    """The team compares support-v2 with support-v1 by the same rule; the lineage's round summary counts it."""
    s, answers = stack["settings"], stack["shared"]["held_out"]
    expected = {"wins": 0, "losses": 0, "ties": 0, "both_bad": 0}
    with connect(s.db_path) as db:
        for q, old, new in zip(HELD_OUT, answers["support-v1"], answers["support-v2"]):
            turn = chats.record_ab_turn(db, session_id=None, user="maria", question=q, parent_a=None,
                                        answer_a=old, model_a="support-v1", parent_b=None, answer_b=new,
                                        model_b="support-v2", settings={"system_prompt": SYSTEM}, blind=True)
            good_old, good_new = bool(RULE.search(old)), bool(RULE.search(new))
            verdict = ("b" if good_new and not good_old else "a" if good_old and not good_new
                       else "tie" if good_new else "both_bad")
            expected[{"b": "wins", "a": "losses", "tie": "ties", "both_bad": "both_bad"}[verdict]] += 1
            ratings.rate_turn(db, ab_turn_id=turn.ab_turn_id, value=verdict, user="maria")
        ab = adapter_lineage(db, "support-v2", base_name=BASE)[0]["ab"]
    print(f"\nsupport-v2 against support-v1 in A/B: {ab['summary']}")
    assert ab["opponent"] == "support-v1"
    assert {k: ab[k] for k in expected} == expected
    assert ab["wins"] > ab["losses"]


# --- evaluation and deployments on the same stack (issue 10) ---------------------------------------------------
CHECK = "states the 30-day refund rule"
WRONG = [  # a round trained on answers that contradict the rule; the first question is also an eval item
    (HELD_OUT[0], "Sorry, we do not offer refunds or returns on any order."),
    ("Can I get a refund on my boots?", "Sorry, we do not offer refunds or returns on any order."),
    ("I want to return my blender.", "Sorry, we do not offer refunds or returns on any order."),
    ("Refund for order 2291 please.", "Sorry, we do not offer refunds or returns on any order."),
    ("Can I send back a shirt that is too big?", "Sorry, we do not offer refunds or returns on any order."),
    ("How do I get my money back for a toaster?", "Sorry, we do not offer refunds or returns on any order."),
    ("Is a refund possible for a late delivery?", "Sorry, we do not offer refunds or returns on any order."),
    ("My kettle broke, can I return it?", "Sorry, we do not offer refunds or returns on any order."),
    ("What's your policy for returning gifts?", "Sorry, we do not offer refunds or returns on any order."),
]


def jsonl_chats(path, pairs):
    path.write_text("".join(json.dumps({"messages": [{"role": "system", "content": SYSTEM},
                                                     {"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in pairs))
    return path


def evaluate(*args: str) -> dict:
    result = cli("eval", "run", *args, "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["status"] == "done", run
    return run


def test_an_eval_measures_the_corrected_round_better_than_its_parent_and_the_gate_promotes_it(stack, tmp_path):
    eval_file = jsonl_chats(tmp_path / "refund_eval.jsonl", [(q, RULE_ANSWER) for q in HELD_OUT])
    built = cli("eval", "sets", "build", "refunds", "--file", str(eval_file),
                "--check", f"{CHECK}:must_mention=30 days")
    assert built.exit_code == 0 and "made eval set refunds@1 (6 items)" in built.output, built.output
    first = cli("deploy", "promote", "support-v1", "--to", "support", "--force", "the adapter in use before evals")
    assert first.exit_code == 0, first.output

    run = evaluate("support-v2", "--against", "deployment support", "--set", "refunds")
    cand, base = run["summary"]["candidate"], run["summary"]["baseline"]
    print(f"\neval of support-v2 vs support-v1 on refunds@1: check {cand['check_pass_rates'][CHECK]:.0%} vs "
          f"{base['check_pass_rates'][CHECK]:.0%}, similarity {cand['mean_similarity']:.3f} vs "
          f"{base['mean_similarity']:.3f}")
    assert run["baseline"] == "support-v1" and run["summary"]["judge"]["used"] is False
    assert cand["check_pass_rates"][CHECK] > base["check_pass_rates"][CHECK]
    assert cand["mean_similarity"] > base["mean_similarity"]
    shown = cli("eval", "show", str(run["id"]), "--items")
    assert shown.exit_code == 0 and "reference:" in shown.output and "no judge was used" in shown.output

    promoted = cli("deploy", "promote", "support-v2", "--to", "support", "--json")
    assert promoted.exit_code == 0, promoted.output
    change = json.loads(promoted.stdout)
    assert (change["from"], change["to"], change["action"]) == ("support-v1", "support-v2", "promote")
    assert change["gate"]["passed"] and change["eval_run_id"] == run["id"]
    stack["shared"]["promote_eval"] = run["id"]


def test_a_round_trained_on_wrong_answers_is_evaluated_at_its_end_and_refused_by_the_gate(stack, tmp_path):
    s, serving = stack["settings"], stack["serving"]
    assert cli("import", str(jsonl_chats(tmp_path / "wrong.jsonl", WRONG)), "--dataset", "wrong").exit_code == 0
    result = cli("train", "--dataset", "wrong", "--from-adapter", "support-v1", "--name", "support-wrong",
                 "--preset", "quick", "--max-steps", "16", "--lr", "1e-3", "--eval-fraction", "0.25", "--wait")
    assert result.exit_code == 0, result.output
    # The question that is also an eval item was held out of training, and the user was told.
    assert "1 conversation(s) of wrong@1 held out, never trained on: they are eval items" in result.output
    assert wait_for(lambda: "support-wrong" in loaded(serving), timeout=120)

    # The end-of-run evaluation against its parent was queued by the run and run by the serving process.
    def auto_runs():
        with connect(s.db_path) as db:
            return list_eval_runs(db, candidate="support-wrong")

    assert wait_for(lambda: auto_runs() and auto_runs()[0]["status"] in ("done", "failed"), timeout=300, interval=2)
    auto = auto_runs()[0]
    assert auto["status"] == "done" and auto["trigger"] == "auto" and auto["baseline"] == "support-v1", auto
    # Its items: the 2 conversations of the seeded 25% split, and the eval item's, held out beside them.
    assert auto["set_name"] == "auto-support-wrong" and auto["total"] == 3

    run = evaluate("support-wrong", "--against", "deployment support", "--set", "refunds")
    cand, base = run["summary"]["candidate"], run["summary"]["baseline"]
    print(f"\neval of support-wrong vs support-v2: check {cand['check_pass_rates'][CHECK]:.0%} vs "
          f"{base['check_pass_rates'][CHECK]:.0%}")
    refused = cli("deploy", "promote", "support-wrong", "--to", "support", "--json")
    assert refused.exit_code == 1, refused.output
    gate = json.loads(refused.stdout)["gate"]
    assert not gate["passed"] and any(not r["passed"] and not r["skipped"] for r in gate["results"])
    listed = cli("deploy", "list")
    assert "support: support-v2" in listed.output


def test_v1_answers_under_the_deployment_name_and_follows_a_rollback_without_restart(stack):
    from fastapi.testclient import TestClient

    from serving.api import create_api

    s, serving = stack["settings"], stack["serving"]
    api = TestClient(create_api(s.model_copy(update={"api_key": "k"}), upstream_url=serving.url))
    headers = {"Authorization": "Bearer k"}

    def answered_by() -> str:
        r = api.post("/v1/chat/completions", headers=headers,
                     json={"model": "support", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8})
        assert r.status_code == 200, r.text
        return r.headers["X-Tuneloop-Model"]

    models = api.get("/v1/models", headers=headers).json()["data"]
    assert {"id": "support", "parent": "support-v2"}.items() <= next(m for m in models if m["id"] == "support").items()
    assert answered_by() == "support-v2"
    assert cli("deploy", "rollback", "support").exit_code == 0
    assert answered_by() == "support-v1"

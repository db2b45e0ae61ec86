"""The database schema, as a list of sqlite-utils migrations applied in order at every open.

Later changes add migrations at the end; an applied migration is never edited.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("tuneloop")


@migrations()
def m001_datasets(db: Database) -> None:
    """Datasets hold immutable versions; a version is a frozen set of conversations with lineage."""
    db["datasets"].create(
        {"id": int, "name": str, "description": str, "created_at": str},
        pk="id", not_null={"name", "created_at"}, defaults={"description": ""},
    )
    db["datasets"].create_index(["name"], unique=True)
    db["dataset_versions"].create(
        {
            "id": int,
            "dataset_id": int,
            "version": int,  # 1, 2, ... within its dataset
            "parent_id": int,  # the version this one extends; NULL for a first version
            "kind": str,  # import | feedback | merge
            "sources": str,  # JSON list: files (name, sha256, format, counts) or ratings used
            "note": str,
            "conversation_count": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("dataset_id", "datasets", "id"), ("parent_id", "dataset_versions", "id")],
        not_null={"dataset_id", "version", "kind", "created_at"},
        defaults={"sources": "[]", "note": "", "conversation_count": 0},
    )
    db["dataset_versions"].create_index(["dataset_id", "version"], unique=True)
    # Conversations are content-addressed: the same messages imported twice are one row,
    # shared by every version that contains them.
    db["conversations"].create(
        {
            "id": int,
            "content_hash": str,
            "messages": str,  # JSON: [{"role", "content", "weight"?}]
            "source": str,  # file name or "feedback"
            "source_format": str,
            "external_id": str,
            "meta": str,  # JSON object
            "created_at": str,
        },
        pk="id", not_null={"content_hash", "messages", "created_at"},
        defaults={"meta": "{}", "source": "", "source_format": ""},
    )
    db["conversations"].create_index(["content_hash"], unique=True)
    db["version_conversations"].create(
        {"version_id": int, "conversation_id": int, "position": int},
        pk=("version_id", "conversation_id"),
        foreign_keys=[("version_id", "dataset_versions", "id"), ("conversation_id", "conversations", "id")],
    )
    db["version_conversations"].create_index(["conversation_id"])
    # One row per import, with the full reject list, so a report can be shown again later.
    db["imports"].create(
        {
            "id": int,
            "version_id": int,
            "source": str,
            "format": str,
            "encoding": str,
            "imported": int,
            "rejected": int,
            "duplicates": int,
            "report": str,  # JSON: rejects, warnings
            "created_at": str,
        },
        pk="id", foreign_keys=[("version_id", "dataset_versions", "id")],
    )


@migrations()
def m002_training(db: Database) -> None:
    """Training runs, their metrics, and the adapters they produce."""
    db["runs"].create(
        {
            "id": int,
            "name": str,
            "method": str,  # sft | kto | dpo
            "status": str,  # queued | running | completed | failed | cancelled
            "dataset_version_id": int,
            "base_model": str,
            "parent_adapter_id": int,
            "config": str,  # JSON: the full run config, enough to reproduce the run
            "run_dir": str,
            "pid": int,
            "step": int,
            "total_steps": int,
            "cancel_requested": int,
            "keep_checkpoint": int,
            "error": str,
            "log_tail": str,
            "metrics": str,  # JSON: final metrics
            "adapter_id": int,
            "created_at": str,
            "started_at": str,
            "finished_at": str,
            "heartbeat_at": str,
        },
        pk="id",
        foreign_keys=[("dataset_version_id", "dataset_versions", "id")],
        not_null={"method", "status", "config", "created_at"},
        defaults={"step": 0, "total_steps": 0, "cancel_requested": 0, "keep_checkpoint": 0, "metrics": "{}"},
    )
    db["runs"].create_index(["status"])
    db["run_metrics"].create(
        {"run_id": int, "step": int, "name": str, "value": float, "split": str, "created_at": str},
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["run_metrics"].create_index(["run_id", "step"])
    db["adapters"].create(
        {
            "id": int,
            "name": str,  # unique and never reused: vLLM caches by name
            "version": int,  # 1, 2, ... within its family (the dataset it was first trained on)
            "family": str,
            "base_model": str,
            "path": str,
            "rank": int,
            "run_id": int,
            "dataset_version_id": int,
            "parent_id": int,
            "status": str,  # available | archived (serving state comes from the server)
            "meta": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("parent_id", "adapters", "id"),
                      ("dataset_version_id", "dataset_versions", "id")],
        not_null={"name", "base_model", "path", "status", "created_at"},
        defaults={"status": "available", "meta": "{}"},
    )
    db["adapters"].create_index(["name"], unique=True)


@migrations()
def m003_feedback(db: Database) -> None:
    """Chat sessions and messages, A/B turns, ratings, and which ratings each dataset version used."""
    db["chat_sessions"].create(
        {"id": int, "user": str, "mode": str, "system_prompt": str, "created_at": str},
        pk="id", defaults={"mode": "single", "system_prompt": ""},
    )
    db["chat_messages"].create(
        {
            "id": int,
            "session_id": int,
            "parent_id": int,  # the message this one answers; the thread is the parent chain
            "role": str,
            "content": str,
            "model": str,  # base model or adapter name, for assistant messages
            "settings": str,  # JSON: sampling settings and system prompt used
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("session_id", "chat_sessions", "id"), ("parent_id", "chat_messages", "id")],
        defaults={"settings": "{}"},
    )
    db["chat_messages"].create_index(["session_id"])
    db["ab_turns"].create(
        {
            "id": int,
            "session_id": int,
            "message_a_id": int,
            "message_b_id": int,
            "blind": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("session_id", "chat_sessions", "id"), ("message_a_id", "chat_messages", "id"),
                      ("message_b_id", "chat_messages", "id")],
    )
    db["ratings"].create(
        {
            "id": int,
            "kind": str,  # thumb | verdict | correction
            "message_id": int,  # thumb and correction: the rated assistant message
            "ab_turn_id": int,  # verdict: the A/B turn
            "value": str,  # up|down ; a|b|tie|both_bad ; the corrected text
            "user": str,
            "context": str,  # JSON: the conversation up to the rated answer
            "models": str,  # JSON: models involved, by side
            "settings": str,  # JSON
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        foreign_keys=[("message_id", "chat_messages", "id"), ("ab_turn_id", "ab_turns", "id")],
        not_null={"kind", "value", "created_at"},
        defaults={"user": "", "context": "[]", "models": "{}", "settings": "{}"},
    )
    # A user has one rating of each kind per target: rating again changes it. SQLite treats NULLs
    # as distinct in unique indexes, so the nullable targets are coalesced.
    db.execute(
        "create unique index ratings_one_per_user on ratings"
        " (kind, coalesce(message_id, 0), coalesce(ab_turn_id, 0), coalesce(user, ''))"
    )
    db["version_ratings"].create(
        {"version_id": int, "rating_id": int},
        pk=("version_id", "rating_id"),
        foreign_keys=[("version_id", "dataset_versions", "id"), ("rating_id", "ratings", "id")],
    )



@migrations()
def m004_feedback_rounds(db: Database) -> None:
    """A feedback build: its preference rows, its settings and report, and a snapshot of each rating used.

    A feedback dataset version keeps its SFT examples as ordinary conversations (version_conversations)
    and its KTO/DPO rows here. `version_ratings` gains the rating as it was when the build used it,
    because a user can change or take back a rating later and the lineage must say what was trained on.
    """
    db["preference_examples"].create(
        {
            "id": int,
            "version_id": int,
            "kind": str,  # kto | dpo
            "position": int,
            "prompt": str,  # JSON: the conversation up to the answer, ending with a user turn
            "completion": str,  # kto: the answer
            "label": int,  # kto: 1 desirable, 0 undesirable
            "chosen": str,  # dpo
            "rejected": str,  # dpo
            "rating_ids": str,  # JSON list: the ratings behind this row
        },
        pk="id",
        foreign_keys=[("version_id", "dataset_versions", "id")],
        not_null={"version_id", "kind", "position", "prompt"},
        defaults={"rating_ids": "[]"},
    )
    db["preference_examples"].create_index(["version_id", "kind", "position"], unique=True)
    db["feedback_builds"].create(
        {
            "version_id": int,
            "method": str,  # sft | kto | dpo | sft+kto | sft+dpo
            "since": str,  # the ratings' cut-off (ISO time), NULL for all ratings
            "from_adapter": str,  # the adapter the next round continues from, NULL for the base model
            "desirable_weight": float,
            "undesirable_weight": float,
            "report": str,  # JSON: training.feedback_dataset's report
            "user": str,
            "created_at": str,
        },
        pk="version_id",
        foreign_keys=[("version_id", "dataset_versions", "id")],
        not_null={"method", "report", "created_at"},
        defaults={"desirable_weight": 1.0, "undesirable_weight": 1.0, "user": ""},
    )
    # m003's foreign key to ratings goes: with the snapshot, a build's lineage outlives a rating
    # that its author takes back later (and taking it back must not fail).
    for column in ("kind", "value", "user", "rated_at", "models"):
        db["version_ratings"].add_column(column, str)
    db["version_ratings"].transform(drop_foreign_keys=["rating_id"])



@migrations()
def m005_evaluation(db: Database) -> None:
    """Eval sets (immutable versions with lineage) and their items, eval runs and per-item results,
    deployments (stable model names) with their event history, and the grounding allow-list."""
    db["eval_sets"].create(
        {"id": int, "name": str, "description": str, "created_at": str},
        pk="id", not_null={"name", "created_at"}, defaults={"description": ""},
    )
    db["eval_sets"].create_index(["name"], unique=True)
    db["eval_set_versions"].create(
        {
            "id": int,
            "set_id": int,
            "version": int,  # 1, 2, ... within its set
            "parent_id": int,  # the version this one extends; NULL for a first version
            "source_kind": str,  # heldout | file | corrections | manual
            "source_ref": str,  # the run, file (name, sha256), ratings or author it came from
            "note": str,
            "item_count": int,
            "created_at": str,
            "created_by": str,
        },
        pk="id",
        foreign_keys=[("set_id", "eval_sets", "id"), ("parent_id", "eval_set_versions", "id")],
        not_null={"set_id", "version", "source_kind", "created_at"},
        defaults={"source_ref": "", "note": "", "item_count": 0, "created_by": ""},
    )
    db["eval_set_versions"].create_index(["set_id", "version"], unique=True)
    # Items are copied into every version that holds them, so a version never changes under a run.
    db["eval_items"].create(
        {
            "id": int,
            "version_id": int,
            "position": int,
            "messages": str,  # JSON: the conversation up to (not including) the answer to produce
            "reference": str,  # the expected answer; NULL when the item has none (judge and checks only)
            "checks": str,  # JSON list: [{"name", "kind": must_mention|must_not_mention|regex, "value"}]
            "prompt_key": str,  # normalised prompt hash: eval/train overlap is found with it
            "meta": str,  # JSON: where the item came from
        },
        pk="id",
        foreign_keys=[("version_id", "eval_set_versions", "id")],
        not_null={"version_id", "position", "messages", "prompt_key"},
        defaults={"checks": "[]", "meta": "{}"},
    )
    db["eval_items"].create_index(["version_id", "position"], unique=True)
    db["eval_items"].create_index(["prompt_key"])
    db["eval_runs"].create(
        {
            "id": int,
            "candidate": str,  # served model names (adapter or base model), as asked
            "baseline": str,
            "set_version_id": int,
            "judge": str,  # JSON: {"base_url", "model"} (never the key); NULL: no judge
            "config": str,  # JSON: generation settings, concurrency, on_judge_error, item budget
            "status": str,  # queued | running | done | failed | stopped
            "done": int,
            "total": int,
            "error": str,
            "summary": str,  # JSON: serving.evaluation.summary.EvalSummary
            "trigger": str,  # manual | auto
            "created_at": str,
            "created_by": str,
            "started_at": str,
            "finished_at": str,
        },
        pk="id",
        foreign_keys=[("set_version_id", "eval_set_versions", "id")],
        not_null={"candidate", "baseline", "set_version_id", "status", "created_at"},
        defaults={"config": "{}", "done": 0, "total": 0, "trigger": "manual", "created_by": ""},
    )
    db["eval_runs"].create_index(["candidate", "baseline", "status"])
    db["eval_item_results"].create(
        {
            "id": int,
            "run_id": int,
            "item_id": int,
            "position": int,
            "candidate_answer": str,
            "baseline_answer": str,
            "candidate_finish": str,  # stop | length | ...
            "baseline_finish": str,
            "scores": str,  # JSON: per side similarity, rouge_l, checks, invented, length, empty, cut_off
            "verdict": str,  # candidate | baseline | tie | unparsable | error; NULL without a judge
            "reason": str,  # the judge's short reason, or why there is no verdict
            "judge_raw": str,  # JSON: the judge's raw answers, kept when they could not be parsed
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "eval_runs", "id"), ("item_id", "eval_items", "id")],
        not_null={"run_id", "item_id", "created_at"},
        defaults={"scores": "{}"},
    )
    db["eval_item_results"].create_index(["run_id", "item_id"], unique=True)
    db["deployments"].create(
        {
            "id": int,
            "name": str,  # the stable model name API clients use
            "target": str,  # adapter name; NULL: the base model
            "generation_defaults": str,  # JSON, nullable
            "created_at": str,
            "updated_at": str,
        },
        pk="id", not_null={"name", "created_at"},
    )
    db["deployments"].create_index(["name"], unique=True)
    db["deployment_events"].create(
        {
            "id": int,
            "deployment": str,
            "from_target": str,  # NULL: the base model (or nothing, on creation)
            "to_target": str,  # NULL: the base model
            "action": str,  # promote | rollback | force
            "by": str,
            "at": str,
            "eval_run_id": int,
            "reason": str,  # a forced promotion's recorded reason
            "gate": str,  # JSON: the gate decision with every rule's figures
        },
        pk="id",
        foreign_keys=[("eval_run_id", "eval_runs", "id")],
        not_null={"deployment", "action", "at"},
        defaults={"by": ""},
    )
    db["deployment_events"].create_index(["deployment", "id"])
    db["grounding_allowlist"].create(
        {"id": int, "kind": str, "value": str, "created_at": str, "created_by": str},  # kind: link | email | phone
        pk="id", not_null={"kind", "value", "created_at"}, defaults={"created_by": ""},
    )
    db["grounding_allowlist"].create_index(["kind", "value"], unique=True)


@migrations()
def m012_erasures(db: Database) -> None:
    # Tombstones of `tuneloop forget`: what kind of target, when, by whom, counts per place, versions
    # touched and adapters to retrain. Never the erased value itself.
    db["erasures"].create(
        {"id": int, "at": str, "by": str, "kind": str, "plan": str, "versions": str, "adapters": str},
        pk="id", not_null={"at", "kind"},
    )


@migrations()
def m010_traffic(db: Database) -> None:
    """Production traffic through /v1: captured completions, named API keys, and per deployment the
    capture switch and the canary (a second adapter taking a share of its requests)."""
    db["traffic"].create(
        {
            "id": str,  # the completion id the client got ("chatcmpl-tl..."): what /v1/feedback names
            "created_at": str,  # when the request arrived
            "finished_at": str,
            "model": str,  # the model name the client asked for (a deployment, an adapter or the base model)
            "deployment": str,  # set when `model` was a deployment name
            "adapter": str,  # the served model that answered (adapter name or the base model's name)
            "arm": str,  # main | canary, for a deployment's requests; NULL otherwise
            "messages": str,  # JSON: the request's messages
            "params": str,  # JSON: every other request field (temperature, max_tokens, ...)
            "stream": int,
            "answer": str,  # the assembled answer, exactly as the client received it
            "finish_reason": str,
            "status": str,  # complete | partial (client went away mid-stream) | error
            "error": str,
            "http_status": int,
            "ttft_ms": float,  # time to the first answer token (streams) or to the whole answer
            "latency_ms": float,
            "prompt_tokens": int,
            "completion_tokens": int,
            "total_tokens": int,
            "api_key": str,  # the key's name, never the key
            "user": str,  # OpenAI's `user` field
            "metadata": str,  # JSON: OpenAI's `metadata` (e.g. a ticket id)
            "message_id": int,  # the chat message it became once rated (store.traffic.as_chat_message)
            "judge_score": float,  # 0..1 when a judge scored it; NULL otherwise
        },
        pk="id",
        foreign_keys=[("message_id", "chat_messages", "id")],
        not_null={"created_at", "model", "status"},
        defaults={"messages": "[]", "params": "{}", "stream": 0, "answer": "", "metadata": "{}"},
    )
    for cols in (["created_at"], ["deployment", "arm", "created_at"], ["adapter"], ["message_id"]):
        db["traffic"].create_index(cols)
    db["api_keys"].create(
        {
            "id": int,
            "name": str,
            "lookup": str,  # the key's public id (its first part), to find the row without the secret
            "salt": str,
            "hash": str,  # hex HMAC-SHA256(salt, key)
            "source": str,  # created | env (TUNELOOP_API_KEY)
            "created_at": str,
            "created_by": str,
            "revoked_at": str,
            "revoked_by": str,
            "use_count": int,
            "last_used_at": str,
        },
        pk="id", not_null={"name", "lookup", "salt", "hash", "source", "created_at"},
        defaults={"use_count": 0, "created_by": "", "source": "created"},
    )
    db["api_keys"].create_index(["name"], unique=True)
    db["api_keys"].create_index(["lookup"], unique=True)
    # What /v1/feedback received, as sent (score and comment have no rating kind); the thumb and the
    # correction are also ratings (rating_ids), which is what feedback builds read.
    db["traffic_feedback"].create(
        {"id": int, "completion_id": str, "rater": str, "api_key": str, "thumb": str, "score": float,
         "correction": str, "comment": str, "rating_ids": str, "created_at": str},
        pk="id", foreign_keys=[("completion_id", "traffic", "id")], not_null={"completion_id", "created_at"},
        defaults={"rating_ids": "[]"},
    )
    db["traffic_feedback"].create_index(["completion_id"])
    db["deployments"].add_column("capture", int, not_null_default=1)
    db["deployments"].add_column("canary_target", str)  # adapter name (or the base model's) taking a share
    db["deployments"].add_column("canary_share", float)
    db["deployments"].add_column("canary_started_at", str)
    db["deployments"].add_column("canary_by", str)


@migrations()
def m008_import_profiles(db: Database) -> None:
    # A named import profile: the import options (format, JSON mapping, columns, roles) saved once
    # and reused on the next export of the same shape (`tuneloop import FILE --profile NAME`).
    db["import_profiles"].create(
        {"name": str, "options": str, "note": str, "created_at": str, "updated_at": str},  # options: JSON object
        pk="name", not_null={"options", "created_at", "updated_at"}, defaults={"note": ""},
    )


@migrations()
def m006_privacy(db: Database) -> None:
    # How each dataset version's data was redacted on import (JSON: enabled, types, off, patterns,
    # allowed_values count; never a redacted value). NULL for versions written before redaction existed
    # and for builds that are not imports; {"enabled": false, ...} records an explicit --no-redact.
    db["dataset_versions"].add_column("redaction", str)


@migrations()
def m009_base_models(db: Database) -> None:
    """Local base model directories registered to train on (`tuneloop models add`), checked when added."""
    db["base_models"].create(
        {
            "id": int,
            "name": str,  # what users pick it by
            "path": str,  # the model directory (absolute)
            "architecture": str,  # config.json's architectures[0]
            "max_len": int,  # config.json's max_position_embeddings (or the like); NULL when unknown
            "check": str,  # JSON: what the servability check found (training.base_models.ModelCheck)
            "added_at": str,
            "added_by": str,
        },
        pk="id", not_null={"name", "path", "added_at"}, defaults={"check": "{}", "added_by": ""},
    )
    db["base_models"].create_index(["name"], unique=True)
    db["base_models"].create_index(["path"], unique=True)


@migrations()
def m007_generation_defaults(db: Database) -> None:
    """Generation defaults per served model (an adapter, the base model, later a deployment): what the chat
    tabs start from and what the /v1 API uses when a client does not set it. NULL: the app's own default."""
    db["generation_defaults"].create(
        {"model": str, "temperature": float, "max_tokens": int, "system_prompt": str, "updated_at": str,
         "updated_by": str},
        pk="model", not_null={"updated_at"}, defaults={"updated_by": ""},
    )


@migrations()
def m013_ray_jobs(db: Database) -> None:
    """The Ray job a run ran as (training.ray_follow sets it), shown with the run; NULL for a local run."""
    db["runs"].add_column("ray_job", str)

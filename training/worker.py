"""The training process of one run (the worker): `python -m training.worker RUN_ID [--data-dir DIR]`.

The queue (training.queue, through training.launch) starts it detached with stdout/stderr in `<run_dir>/train.log` and the
caller's settings in TUNELOOP_* variables; started by hand it also logs to that file. It:

1. loads the run row (a queued run started by hand is marked running here), writes
   `<run_dir>/config.json`, reads what the method trains on: the dataset version's conversations
   (sft) and/or its KTO rows or DPO pairs (store.feedback);
2. trains the method's phases on one peft model (`train_phases`): SFT with training.recipe, then
   KTO or DPO with training.preference ("sft+dpo": both, the preference phase continuing on the
   SFT result), progress and metrics going to the store every step with step numbers running on
   across phases;
3. on success saves the adapter to `<adapters_dir>/<name>` and registers it with its lineage
   (base model, dataset version, parent adapter, run, full config), then marks the run completed;
   on cancel marks it cancelled, keeping the adapter so far (registered, meta.partial) when the
   user asked for `keep_checkpoint`; on any error marks it failed with the reason and the log tail;
4. starts the next queued run, if any (the finishing process kicks the queue).

SIGTERM asks for the same graceful stop as `tuneloop runs cancel`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from store import runs  # noqa: E402
from store.adapters import family_for, get_adapter, next_version, register_adapter  # noqa: E402
from store.adapter_store import publish_registered  # noqa: E402
from store.datasets import iter_version_conversations  # noqa: E402
from store.db import connect  # noqa: E402
from store.feedback import iter_preference_examples  # noqa: E402
from store.settings import Settings  # noqa: E402
from training.checkpoints import delete_checkpoints, enforce_budget, latest_checkpoint  # noqa: E402
from training.config import RunConfig  # noqa: E402
from training.launch import LOG_NAME, log_tail  # noqa: E402
from training.queue import kick  # noqa: E402
from training.results import RunMetrics  # noqa: E402

log = logging.getLogger("tuneloop.train")


class _Stop:
    """Set by SIGTERM; the progress callback treats it like a cancel request."""

    requested = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.worker", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", type=int)
    parser.add_argument("--data-dir", help="tuneloop data directory (default: TUNELOOP_DATA_DIR)")
    parser.add_argument("--job-bundle", help="on a Ray worker: train from this bundle, report on stdout")
    parser.add_argument("--ray-job", help="on the app's machine: follow this Ray job into the store")
    args = parser.parse_args(argv)
    settings = Settings(_env_file=None, **({"data_dir": Path(args.data_dir)} if args.data_dir else {}))
    if args.job_bundle or args.ray_job:  # a run on a Ray cluster (training.ray_backend, training.ray_follow)
        from training.ray_follow import worker_main

        return worker_main(settings, args.run_id, job_bundle=args.job_bundle, ray_job=args.ray_job,
                           train_phases=train_phases, publish_adapter=publish_adapter,
                           queue_auto_eval=_queue_auto_eval)
    main_process = int(os.environ.get("RANK", "0")) == 0

    with connect(settings.db_path) as db:
        run = runs.get_run(db, args.run_id)
    run_dir = Path(run["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir / LOG_NAME)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no weight-loading bars in train.log; progress goes to the store
    signal.signal(signal.SIGTERM, lambda *_: setattr(_Stop, "requested", True))

    code = 0
    try:
        execute(settings, args.run_id, main_process=main_process)
    except BaseException as exc:  # noqa: BLE001 - every failure must end as a failed run
        code = 1
        log.error("run %d failed:\n%s", args.run_id, traceback.format_exc())
        if main_process:
            for h in logging.getLogger().handlers:
                h.flush()
            reason = f"{type(exc).__name__}: {exc}".strip() if str(exc) else type(exc).__name__
            with connect(settings.db_path) as db:
                if runs.get_run(db, args.run_id)["status"] == "running":
                    runs.mark_failed(db, args.run_id, reason, log_tail=log_tail(run_dir))
    finally:
        if main_process:
            _keep_checkpoints_in_budget(settings)
            try:
                kick(settings)
            except Exception:  # noqa: BLE001 - the next start (CLI/app) kicks the queue again
                log.exception("could not start the next queued run")
    return code


def execute(settings: Settings, run_id: int, *, main_process: bool = True) -> str:
    """Train run `run_id` to its end; returns its final status."""
    from training import recipe
    from training.callbacks import StoreProgressCallback

    with connect(settings.db_path) as db:
        run = runs.get_run(db, run_id)
        if run["status"] == "queued" and main_process:  # started by hand, not by the queue
            runs.mark_running(db, run_id, pid=os.getpid())
        elif run["status"] != "running":
            raise RuntimeError(f"run {run_id} is {run['status']}, not queued or running")
        elif main_process and run["pid"] is None:
            runs.set_pid(db, run_id, os.getpid())
        config = RunConfig.from_dict(run["config"])
        conversations = (list(iter_version_conversations(db, config.dataset_version_id))
                         if "sft" in config.parts else [])
        kind = config.preference_kind
        pref_rows = list(iter_preference_examples(db, config.dataset_version_id, kind)) if kind else []
        parent = get_adapter(db, run["parent_adapter_id"]) if run["parent_adapter_id"] else None
    run_dir = Path(run["run_dir"])
    (run_dir / "config.json").write_text(config.to_json())
    sizes = []
    if "sft" in config.parts:
        sizes.append(f"{len(conversations)} conversations")
    if kind:
        sizes.append(f"{len(pref_rows)} {kind} rows")
    log.info("run %d: %s on %s (%s), base %s%s", run_id, config.method, config.dataset, ", ".join(sizes),
             config.base_model, f", from adapter {parent['name']}" if parent else "")

    callback = StoreProgressCallback(settings.db_path, run_id, check_cancel=lambda: _Stop.requested)
    model = None
    try:
        model, result = train_phases(config, conversations, pref_rows, run_dir=run_dir, callback=callback,
                                     parent_adapter_path=parent["path"] if parent else None,
                                     checkpoints=settings.checkpoint_budget_mb > 0)
        if not main_process:
            return "completed"
        with connect(settings.db_path) as db:
            keep = bool(runs.get_run(db, run_id)["keep_checkpoint"])
        cancelled = callback.cancelled
        if cancelled and (not keep or result.steps == 0):  # nothing trained: nothing worth keeping
            with connect(settings.db_path) as db:
                runs.mark_finished(db, run_id, "cancelled", metrics=result.to_dict())
            log.info("run %d cancelled at step %d; no adapter kept", run_id, result.steps)
            return "cancelled"
        staged = recipe.write_adapter(model, config.base_model, run_dir / "adapter", max_rank=settings.max_lora_rank)
    finally:
        callback.close()
        model = None
        recipe.free_memory()
    status = "cancelled" if cancelled else "completed"
    if status == "completed":  # the adapter is what counts now; a cancelled run keeps its checkpoint to resume
        delete_checkpoints(run_dir)
    with connect(settings.db_path) as db:
        adapter_id, name = publish_adapter(db, settings, run_id, config, staged, parent, result, partial=cancelled)
        runs.mark_finished(db, run_id, status, metrics=result.to_dict(), adapter_id=adapter_id)
    log.info("run %d %s: adapter %s (%s)", run_id, status, name, settings.adapters_dir / name)
    if status == "completed":
        _queue_auto_eval(settings, run_id, name, parent["name"] if parent else settings.served_base_name)
    return status


def _keep_checkpoints_in_budget(settings: Settings) -> None:
    try:
        with connect(settings.db_path) as db:
            ended = {r["id"]: r["status"] for r in runs.list_runs(db, status=runs.FINISHED)}
        enforce_budget(settings.runs_dir, settings.checkpoint_budget_mb, finished=ended)
    except Exception:  # noqa: BLE001 - disk housekeeping never fails a run
        log.exception("could not apply the checkpoint budget")


def _queue_auto_eval(settings: Settings, run_id: int, candidate: str, baseline: str) -> None:
    """Queue the end-of-run evaluation against the parent (the serving process runs it once the adapter is
    loaded). Its failure never fails the run: the adapter is trained and registered either way."""
    from training.evalsets import queue_auto_eval

    try:
        with connect(settings.db_path) as db:
            eval_id = queue_auto_eval(db, run_id, candidate=candidate, baseline=baseline,
                                      default_set=settings.default_eval_set, budget=settings.auto_eval_items,
                                      max_tokens=settings.eval_max_tokens)
    except Exception:  # noqa: BLE001 - e.g. a default eval set that was renamed: say so in the log
        log.exception("run %d: could not queue the automatic evaluation", run_id)
        return
    if eval_id is None:
        log.info("run %d: no automatic evaluation (no held-out items, no default eval set, or turned off)", run_id)
    else:
        log.info("run %d: automatic evaluation %d of %s against %s queued", run_id, eval_id, candidate, baseline)


def train_phases(config: RunConfig, conversations: list[dict], pref_rows: list[dict], *, run_dir: Path,
                 callback, parent_adapter_path: str | None, checkpoints: bool = False) -> tuple[object, RunMetrics]:
    """Train the method's phases on one peft model; returns (model, metrics).

    SFT (training.recipe) first when the method has it, then KTO/DPO (training.preference) on the
    same model, whose reference is then the SFT result. The preference phase's length is fixed
    before anything trains, so `callback` reports one continuous step count and total. A cancel in
    the SFT phase skips the preference phase. Metrics: the phase's own for a one-phase method; for
    two phases the sums (steps, tokens, time), the last phase's losses, and each phase's under "phases".
    """
    from training import preference, recipe

    kind = config.preference_kind
    n_phases = len(config.parts)
    if kind:
        rows, pref_data = preference.prepare(config, recipe.load_tokenizer(config.base_model), pref_rows)
        if not rows:
            raise ValueError(f"none of the {len(pref_rows)} {kind} rows fits max_seq_len {config.max_seq_len}")
        pref_steps = preference.planned_steps(config, len(rows))
        if pref_data["trimmed"] or pref_data["left_out_too_long"]:
            log.info("%s rows over max_seq_len %d: %d shortened (oldest turns dropped), %d left out", kind,
                     config.max_seq_len, pref_data["trimmed"], pref_data["left_out_too_long"])
    results = []
    if "sft" in config.parts:
        # Checkpoints (to resume a failed or cancelled run) for SFT-only runs: a preference phase is short,
        # and its trainer would write to the same folder.
        saving = checkpoints and not kind
        session = recipe.setup(config, conversations, output_dir=run_dir / "trainer", callbacks=[callback],
                               parent_adapter_path=parent_adapter_path, checkpoints=saving)
        model, tokenizer = session.model, session.tokenizer
        callback.steps_after = pref_steps if kind else 0
        resume = latest_checkpoint(run_dir) if saving else None
        log.info("phase 1/%d: sft, %d optimizer steps%s", n_phases, session.total_steps,
                 f", resuming from {resume.name}" if resume else "")
        sft = recipe.train(session, resume_from=resume)
        sft.data = session.split.stats
        session.trainer = None  # its optimizer state is not needed by the next phase
        results.append(sft)
    else:
        tokenizer = recipe.load_tokenizer(config.base_model)
        model = recipe.load_model(config, parent_adapter_path=parent_adapter_path)
    if kind and not callback.cancelled:
        done = results[0].steps if results else 0
        callback.step_offset, callback.steps_after = done, 0
        phase = preference.setup(config, rows, model=model, tokenizer=tokenizer, output_dir=run_dir / "trainer",
                                 callbacks=[callback])
        log.info("phase %d/%d: %s (beta %g, lr %g), %d optimizer steps (run steps %d-%d)", n_phases, n_phases, kind,
                 config.beta, config.pref_learning_rate, pref_steps, done + 1, done + pref_steps)
        pref = preference.train(phase)
        pref.data = pref_data
        preference.release(phase)
        results.append(pref)
    if n_phases == 1:
        return model, results[0]
    results[0].method = "sft"
    return model, RunMetrics.combine(results, total_steps=results[0].total_steps + pref_steps, planned_phases=n_phases)


def publish_adapter(db, settings: Settings, run_id: int, config: RunConfig, staged: Path, parent: dict | None,
                    result: RunMetrics, *, partial: bool) -> tuple[int, str]:
    """Move the saved adapter to `<adapters_dir>/<name>` and register it; names are never reused."""
    family = family_for(config.dataset, parent)
    settings.adapters_dir.mkdir(parents=True, exist_ok=True)
    with runs.write_lock(db):
        version = next_version(db, family)
        name = config.adapter_name or f"{family}-v{version}"
        while (settings.adapters_dir / name).exists() and not config.adapter_name:
            version += 1
            name = f"{family}-v{version}"
        target = settings.adapters_dir / name
        if target.exists():
            raise FileExistsError(f"{target} exists; choose another adapter name")
        shutil.move(str(staged), str(target))
        meta = {"config": config.to_dict(), "metrics": result.to_dict(), "dataset": config.dataset,
                "method": config.method, "partial": partial}
        adapter_id = register_adapter(db, name=name, family=family, version=version, base_model=config.base_model,
                                      path=str(target), rank=config.lora_rank, run_id=run_id,
                                      dataset_version_id=config.dataset_version_id,
                                      parent_id=parent["id"] if parent else None, meta=meta)
    publish_registered(db, settings, name, target)  # for vLLM replicas (store.adapter_store); no-op without a store
    return adapter_id, name


def _setup_logging(log_path: Path) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if not _stderr_is(log_path):  # started by hand: also keep the log in the run folder
        fileh = logging.FileHandler(log_path)
        fileh.setFormatter(fmt)
        root.addHandler(fileh)


def _stderr_is(path: Path) -> bool:
    try:
        a, b = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


if __name__ == "__main__":
    sys.exit(main())

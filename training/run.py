"""The training process of one run: `python -m training.run RUN_ID [--data-dir DIR]`.

The runner (training.runner) starts it detached with stdout/stderr in `<run_dir>/train.log` and the
caller's settings in TUNELOOP_* variables; started by hand it also logs to that file. It:

1. loads the run row (a queued run started by hand is marked running here), writes
   `<run_dir>/config.json`, reads the dataset version's conversations;
2. trains with training.recipe, progress and metrics going to the store every step;
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
from store.adapters import get_adapter, next_version, register_adapter, slug  # noqa: E402
from store.datasets import iter_version_conversations, parse_version_spec  # noqa: E402
from store.db import connect  # noqa: E402
from store.settings import Settings  # noqa: E402
from training.config import RunConfig  # noqa: E402
from training.runner import LOG_NAME, kick, log_tail  # noqa: E402

log = logging.getLogger("tuneloop.train")


class _Stop:
    """Set by SIGTERM; the progress callback treats it like a cancel request."""

    requested = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", type=int)
    parser.add_argument("--data-dir", help="tuneloop data directory (default: TUNELOOP_DATA_DIR)")
    args = parser.parse_args(argv)
    settings = Settings(_env_file=None, **({"data_dir": Path(args.data_dir)} if args.data_dir else {}))
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
        if run["status"] == "queued" and main_process:  # started by hand, not by the runner
            runs.mark_running(db, run_id, pid=os.getpid())
        elif run["status"] != "running":
            raise RuntimeError(f"run {run_id} is {run['status']}, not queued or running")
        elif main_process and run["pid"] is None:
            runs.set_pid(db, run_id, os.getpid())
        config = RunConfig.from_dict(run["config"])
        conversations = list(iter_version_conversations(db, config.dataset_version_id))
        parent = get_adapter(db, run["parent_adapter_id"]) if run["parent_adapter_id"] else None
    run_dir = Path(run["run_dir"])
    (run_dir / "config.json").write_text(config.to_json())
    log.info("run %d: %s on %s (%d conversations), base %s%s", run_id, config.method, config.dataset,
             len(conversations), config.base_model, f", from adapter {parent['name']}" if parent else "")

    callback = StoreProgressCallback(settings.db_path, run_id, check_cancel=lambda: _Stop.requested)
    session = recipe.setup(config, conversations, output_dir=run_dir / "trainer", callbacks=[callback],
                           parent_adapter_path=parent["path"] if parent else None)
    try:
        result = recipe.train(session)
        result["data"] = session.split.stats
        if not main_process:
            return "completed"
        with connect(settings.db_path) as db:
            keep = bool(runs.get_run(db, run_id)["keep_checkpoint"])
        cancelled = callback.cancelled
        if cancelled and (not keep or result["steps"] == 0):  # nothing trained: nothing worth keeping
            with connect(settings.db_path) as db:
                runs.mark_finished(db, run_id, "cancelled", metrics=result)
            log.info("run %d cancelled at step %d; no adapter kept", run_id, result["steps"])
            return "cancelled"
        staged = recipe.save_adapter(session, run_dir / "adapter", max_rank=settings.max_lora_rank)
    finally:
        recipe.cleanup(session)
    status = "cancelled" if cancelled else "completed"
    with connect(settings.db_path) as db:
        adapter_id, name = publish_adapter(db, settings, run_id, config, staged, parent, result, partial=cancelled)
        runs.mark_finished(db, run_id, status, metrics=result, adapter_id=adapter_id)
    log.info("run %d %s: adapter %s (%s)", run_id, status, name, settings.adapters_dir / name)
    return status


def publish_adapter(db, settings: Settings, run_id: int, config: RunConfig, staged: Path, parent: dict | None,
                    result: dict, *, partial: bool) -> tuple[int, str]:
    """Move the saved adapter to `<adapters_dir>/<name>` and register it; names are never reused."""
    family = parent["family"] if parent else slug(parse_version_spec(config.dataset)[0])
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
        meta = {"config": config.to_dict(), "metrics": result, "dataset": config.dataset,
                "method": config.method, "partial": partial}
        adapter_id = register_adapter(db, name=name, family=family, version=version, base_model=config.base_model,
                                      path=str(target), rank=config.lora_rank, run_id=run_id,
                                      dataset_version_id=config.dataset_version_id,
                                      parent_id=parent["id"] if parent else None, meta=meta)
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

"""What the automatic end-of-run evaluation adds to a quick-preset run on CPU, as a ratio of the run's own time.

    .venv/bin/python bench/auto_eval_cost.py                      # about 3 minutes on 2 CPU cores
    .venv/bin/python bench/auto_eval_cost.py --conversations 80 --items 8

In a temp data directory: imports --conversations synthetic support chats, starts vLLM on the
default model (before training, as `tuneloop serve` would be running), trains the quick preset
(held-out share 0.1) with `training.queue`, and waits for the evaluation the run queues to finish
(the serving process runs it once the new adapter is loaded). Prints the run's wall time, the
evaluation's wall time (its started/finished stamps), the time from "run finished" to "evaluation
finished", and the evaluation's share of the run's time. One run, one machine: the ratio is the figure.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = [
    ("Where is my parcel?", "Your parcel is on its way; the tracking link is in your confirmation e-mail."),
    ("How do I reset my password?", "Use 'Forgot password' on the login page and follow the link we e-mail you."),
    ("Can I return my jacket?", "Yes: you can return it within 30 days of delivery for a full refund."),
    ("I was charged twice.", "Sorry about that. The second charge is a pending authorisation and drops off in 3 days."),
    ("Do you ship to Canada?", "Yes, we ship to Canada in 5 to 8 business days."),
    ("How can I change my address?", "Reply with the new address before the order ships and we update it."),
]


def conversations(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q, a = TOPICS[i % len(TOPICS)]
        out.append({"messages": [{"role": "user", "content": f"{q} (order {1000 + rng.randrange(9000)})"},
                                 {"role": "assistant", "content": a}]})
    return out


def seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=60)
    parser.add_argument("--items", type=int, default=8, help="TUNELOOP_AUTO_EVAL_ITEMS for the run")
    args = parser.parse_args()

    import json

    from serving.service import Serving
    from store import runs
    from store.db import connect
    from store.evaluations import list_eval_runs
    from store.settings import Settings
    from training import queue
    from training.ingest import import_file
    from training.importers import ImportOptions

    defaults = Settings()
    tmp = Path(tempfile.mkdtemp(prefix="auto-eval-bench-"))
    s = Settings(data_dir=tmp, base_model=defaults.base_model_path, vllm_port=8098, auto_eval_items=args.items)
    os.environ.update({"TUNELOOP_DATA_DIR": str(tmp), "TUNELOOP_BASE_MODEL": s.base_model,
                       "TUNELOOP_AUTO_EVAL_ITEMS": str(args.items)})
    from serving.evaluation.embedding import prepare_embedding_model

    prepare_embedding_model(s.embedding_model_dir)  # what `tuneloop setup` does: reference similarity is measured
    logs = tmp / "chats.jsonl"
    logs.write_text("".join(json.dumps(c) + "\n" for c in conversations(args.conversations)))
    with connect(s.db_path) as db:
        import_file(db, logs, "support", ImportOptions())
    serving = Serving(s, poll_s=1.0)
    print("starting vLLM ...", flush=True)
    serving.start()
    try:
        started = time.monotonic()
        run_id = queue.start_run(s, dataset="support", preset="quick")
        done = queue.wait(s, run_id, poll_s=1.0, timeout_s=3600)
        run_wall = time.monotonic() - started
        if done.status != "completed":
            raise SystemExit(f"the run did not complete: {done.status} {done.error}")
        finished = time.monotonic()
        while True:
            with connect(s.db_path) as db:
                evals = list_eval_runs(db, candidate=done.adapter)
            if evals and evals[0]["status"] in ("done", "failed", "stopped"):
                break
            if time.monotonic() - finished > 1800:
                raise SystemExit("the automatic evaluation did not finish within 30 minutes")
            time.sleep(1.0)
        after_run = time.monotonic() - finished
        ev = evals[0]
        with connect(s.db_path) as db:
            run = runs.get_run(db, run_id)
    finally:
        serving.stop()
    eval_wall = seconds(ev["started_at"], ev["finished_at"]) if ev.get("started_at") else float("nan")
    print(f"run {run_id}: {run['step']} steps on {args.conversations} conversations, wall {run_wall:.0f} s")
    print(f"automatic evaluation {ev['id']} ({ev['status']}, {ev['total']} items vs {ev['baseline']}): "
          f"{eval_wall:.0f} s of asking; {after_run:.0f} s from run finished to evaluation finished")
    print(f"evaluation / run time: {eval_wall / run_wall:.2f} (with the wait for the hot-load: "
          f"{after_run / run_wall:.2f})")


if __name__ == "__main__":
    main()

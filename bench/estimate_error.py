"""The pre-run estimate's error: estimated vs actual wall time of real runs of different lengths on the default model.

    .venv/bin/python bench/estimate_error.py                       # 3 runs: 5, 15 and 30 steps (about 10 min)
    .venv/bin/python bench/estimate_error.py --steps 5 15 30 --conversations 120 --max-seq-len 256

In a fresh data directory it imports synthetic support chats (bench/train_throughput.py's), then
for each length: asks `training.dryrun.preview` for the estimate exactly as `tuneloop train
--dry-run` does (the first run has no earlier run, so its speed comes from the 3-step probe; the
later ones from the last finished run), starts the run
through the queue (a real detached worker, held-out evaluations included), waits for it, and
compares the estimate to the run's wall time from its start to its end. Prints a table and JSON
for docs/benchmarks.md. The machine is shared: run it under the heavy-test lock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 15, 30])
    parser.add_argument("--conversations", type=int, default=120)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--model", help="base model directory (default: the prepared default model)")
    args = parser.parse_args()

    import hashlib

    from store.datasets import NewConversation, create_version
    from store.db import connect
    from store.runs import get_run
    from store.settings import Settings
    from train_throughput import synthetic_conversations
    from training import queue
    from training.default_model import prepare_default_model
    from training.dryrun import preview

    model = args.model or str(prepare_default_model(Settings(_env_file=None).default_model_dir))
    rows = []
    with tempfile.TemporaryDirectory(prefix="tuneloop-estimate-") as tmp:
        s = Settings(_env_file=None, data_dir=Path(tmp), base_model=model, auto_eval_items=0)
        convs = synthetic_conversations(args.conversations, seed=0)
        with connect(s.db_path) as db:
            create_version(db, "bench", [NewConversation(hashlib.sha256(json.dumps(c).encode()).hexdigest(),
                                                         c["messages"]) for c in convs])
        options = dict(dataset="bench", preset="quick", max_seq_len=args.max_seq_len)
        for steps in args.steps:
            t0 = time.monotonic()
            plan = preview(s, probe=True, max_steps=steps, **options)
            estimate_s = time.monotonic() - t0
            run_id = queue.start_run(s, max_steps=steps, **options)
            done = queue.wait(s, run_id, poll_s=1.0, timeout_s=3600)
            with connect(s.db_path) as db:
                run = get_run(db, run_id)
            actual = (datetime.fromisoformat(run["finished_at"])
                      - datetime.fromisoformat(run["started_at"])).total_seconds()
            est = plan.estimate
            row = {"steps": steps, "status": done.status, "estimated_s": round(est.seconds or 0, 1),
                   "actual_s": round(actual, 1), "error": round((est.seconds - actual) / actual, 3) if est.seconds
                   else None, "speed_from": est.speed_source, "train_tokens": est.train_tokens,
                   "evaluations": est.evaluations, "estimate_took_s": round(estimate_s, 1),
                   "parts_s": {"train": round(est.train_seconds or 0, 1), "eval": round(est.eval_seconds or 0, 1),
                               "start-up": round(est.overhead_seconds or 0, 1)}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| steps | estimated | actual | error | speed from |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        err = f"{r['error']:+.0%}" if r["error"] is not None else "–"
        print(f"| {r['steps']} | {r['estimated_s']:.0f} s | {r['actual_s']:.0f} s | {err} | {r['speed_from']} |")


if __name__ == "__main__":
    main()

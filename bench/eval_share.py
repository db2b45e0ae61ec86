"""Held-out evaluation's share of a quick-preset run, and the live time-left estimate's error, before and after
bounding the evaluations (training.evalplan).

    .venv/bin/python bench/eval_share.py                       # about 6 minutes on 2 CPU cores
    .venv/bin/python bench/eval_share.py --conversations 60

Trains the quick preset on the default model twice on the same synthetic support chats (2-4 exchanges
each, answers of a few sentences), in this process: "before" evaluates the whole held-out split at the
start and about five times during the run (the old cadence); "after" is today's plan (a fixed sample,
spaced to cost at most eval_share of training, the whole split once at the end). Prints, per mode, the
evaluations' share of the run's time (train() from first step to the final held-out loss) and the time
left the progress callback reported at 25%, 50% and 75% of the steps, against the time that was really left.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = [
    ("Where is my parcel? It was due on Monday.", "I am sorry it is late. Your parcel left our warehouse on "
     "Friday and the carrier shows it at the local depot; it should reach you tomorrow before 6 pm. You can "
     "follow it with the tracking link in your confirmation e-mail."),
    ("How do I reset my password?", "Open the login page and pick 'Forgot password'. We e-mail you a link that "
     "stays valid for 30 minutes; choose a new password of at least 10 characters. If the e-mail does not come, "
     "check your spam folder or tell me and I resend it."),
    ("Can I return my jacket? It is too small.", "Of course. You can return it within 30 days of delivery for a "
     "full refund or an exchange. Print the return label from your account, drop the parcel at any post office, "
     "and we refund you within 5 business days of receiving it."),
    ("I was charged twice for one order.", "Sorry about that. The second charge is a pending authorisation from "
     "your bank; it drops off by itself within 3 business days. If it is still there after that, send me a "
     "screenshot of your statement and I refund it at once."),
    ("Do you ship to Canada, and how long does it take?", "Yes, we ship to Canada. Standard delivery takes 5 to 8 "
     "business days and costs 9 euros; express takes 2 to 3 days for 19 euros. Import duties are included, so "
     "nothing more is due on delivery."),
]


def conversations(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        msgs = [{"role": "system", "content": "You are the friendly support assistant of Acme Shop."}]
        for _ in range(rng.randint(2, 4)):
            q, a = TOPICS[rng.randrange(len(TOPICS))]
            msgs += [{"role": "user", "content": f"{q} (order {1000 + rng.randrange(9000)})"},
                     {"role": "assistant", "content": a}]
        out.append({"messages": msgs})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=60)
    parser.add_argument("--modes", default="before,after", help="which of before,after to run")
    args = parser.parse_args()

    from store.settings import Settings
    from training import recipe
    from training.callbacks import StoreProgressCallback
    from training.config import RunConfig, held_out_count
    from training.default_model import prepare_default_model

    class Recorder(StoreProgressCallback):
        """The real progress callback, its reports kept in memory: (seconds since start, step, eta)."""

        def __init__(self):
            super().__init__(":memory:", 0)
            self.t0 = time.monotonic()
            self.points: list[tuple[float, int, float, float]] = []

        def report_progress(self, *, step, total_steps=None):
            pass

        def report_metrics(self, step, values, *, split):
            if "eta_seconds" in values:  # with the old formula beside it: step time x steps left, no evaluations
                old = values["step_seconds"] * max(self._plan_total - step, 0)
                self.points.append((time.monotonic() - self.t0, step, values["eta_seconds"], old))

        def cancel_asked(self):
            return False

    model_dir = prepare_default_model(Settings(_env_file=None).default_model_dir)
    convs = conversations(args.conversations)
    n_train = args.conversations - held_out_count(args.conversations, 0.1)
    for mode in args.modes.split(","):
        base = RunConfig.from_preset("quick", base_model=str(model_dir), dataset="bench@1")
        steps = recipe.estimate_total_steps(base, n_train)
        extra = {"eval_sample": 0, "eval_every": max(1, math.ceil(steps / 5))} if mode == "before" else {}
        config = RunConfig.from_preset("quick", base_model=str(model_dir), dataset="bench@1", **extra)
        cb = Recorder()
        with tempfile.TemporaryDirectory() as tmp:
            session = recipe.setup(config, convs, output_dir=Path(tmp) / "trainer", callbacks=[cb])
            cb._plan_total = session.total_steps
            cb.t0 = start = time.monotonic()
            result = recipe.train(session)
            total = time.monotonic() - start
            recipe.cleanup(session)
        share = (result.eval_runtime_s or 0) / total
        errors = []
        for frac in (0.25, 0.5, 0.75):
            t, step, eta, old = min(cb.points, key=lambda p: abs(p[1] - frac * result.steps))
            left = total - t
            errors.append(f"{frac:.0%} of steps: said {eta:.0f} s left (evaluations counted; {old:.0f} s without "
                          f"them), was {left:.0f} s: error {(eta - left) / left:+.0%} ({(old - left) / left:+.0%})")
        print(f"{mode}: {result.steps} steps, {args.conversations} conversations "
              f"({len(session.split.eval)} held out), {session.eval_plan.evaluations if session.eval_plan else '?'} "
              f"evaluations; run {total:.0f} s, evaluations {result.eval_runtime_s or 0:.0f} s = {share:.0%} of it; "
              f"{result.tokens_per_second or 0:.0f} trained tokens/s")
        for line in errors:
            print(f"    time left at {line}")


if __name__ == "__main__":
    main()

"""Eval throughput: the eval runner's requests through vLLM's concurrent batching vs the same requests one at a time.

    .venv/bin/python bench/eval_throughput.py                     # about 4 minutes on 2 CPU cores
    .venv/bin/python bench/eval_throughput.py --url http://127.0.0.1:8011 --model smollm2-135m-instruct

Runs `serving.evaluation.runner.run_items` twice on the same items (both sides the base model,
greedy, --max-tokens per answer, no judge, no embedding model: only the requests are timed): first
with concurrency 1 (each request waits for the previous one), then with --concurrency items in
flight, which vLLM batches. Prints items/s for each and the ratio, in one run on one server.
Without --url it starts vLLM on the default model in a temp data directory and stops it after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    "My order arrived damaged. What should I do?", "How do I reset my password?",
    "Can I change the delivery address after the order has shipped?", "I was charged twice this month.",
    "Do you ship to Canada?", "How can I download my invoices?", "The discount code does not work.",
    "Can I return a jacket I bought last week?", "Where is my parcel?", "How do I cancel my subscription?",
    "Is there a warranty on headphones?", "Can I pay with PayPal?", "My account is locked.",
    "How long do refunds take?", "Can I exchange shoes for a bigger size?", "Do you have a phone number?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="an existing vLLM server; default: start one on the default model")
    parser.add_argument("--model", default="", help="served model name (default: the base model's)")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from serving.evaluation.checks import GroundingIndex
    from serving.evaluation.runner import EvalItem, EvalSettings, OpenAIAsker, make_scorer, run_items

    items = [EvalItem(i, i, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" (ticket {i})"}],
                      "We will help you with that.", []) for i in range(args.items)]
    serving = None
    url, model = args.url, args.model
    if not url:
        from serving.service import Serving
        from store.settings import Settings

        defaults = Settings()
        tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
        s = Settings(data_dir=tmp, base_model=defaults.base_model_path, vllm_port=8099)
        serving = Serving(s, poll_s=1.0)
        print(f"starting vLLM on {s.base_model_path} ...", flush=True)
        serving.start()
        url, model = serving.url, model or s.served_base_name
    asker = OpenAIAsker(url)
    scorer = make_scorer(GroundingIndex(), None)
    try:
        asker.answer(model, items[0].messages, 4)  # warm-up
        timings = {}
        for conc in (1, args.concurrency):
            start = time.perf_counter()
            out = run_items(items, candidate=model, baseline=model, asker=asker, scorer=scorer,
                            settings=EvalSettings(max_tokens=args.max_tokens, concurrency=conc))
            timings[conc] = time.perf_counter() - start
            assert out.status == "done", out.error
            print(f"concurrency {conc:>2}: {len(items)} items ({2 * len(items)} requests) in {timings[conc]:.1f} s, "
                  f"{len(items) / timings[conc]:.2f} items/s", flush=True)
        ratio = timings[1] / timings[args.concurrency]
        print(f"concurrent/sequential speed-up: {ratio:.2f}x  (items={args.items}, max_tokens={args.max_tokens}, "
              f"concurrency={args.concurrency})")
    finally:
        asker.close()
        if serving is not None:
            serving.stop()


if __name__ == "__main__":
    main()

"""Serving throughput: vLLM (base, one adapter, a mix of four) against transformers + peft `generate`.

    .venv/bin/python bench/serve_throughput.py                  # about 7 minutes on 2 CPU cores
    .venv/bin/python bench/serve_throughput.py --skip-baseline --levels 1,16 --reserved-cores 0   # explore settings

For each workload (the base model; one adapter; four adapters, requests spread round-robin) and
each concurrency c in --levels, c chats each send --rounds requests one after another (a closed
loop), every answer exactly --max-tokens tokens long (vLLM `ignore_eos`, transformers
`min_new_tokens`) at temperature 0. Reported: output tokens/s over the level's wall time, and
time to first token (p50/p95) per request, measured from the moment the request was sent.

The baseline is what a naive server would do with the same requests: transformers `generate` in
this process on the same prompts, with the c concurrent requests of a round as one padded static
batch (peft's mixed-adapter batches, `adapter_names=`, for the four-adapter mix). It runs before
vLLM starts, so the two never share the cores. The adapters are rank-8 LoRAs on all linear layers
with random weights (speed depends on shapes, not values).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = [
    "My order arrived damaged. What should I do?",
    "How do I reset my password if I no longer have access to my email?",
    "Can I change the delivery address after the order has shipped?",
    "Your app keeps logging me out on my phone. Any idea why?",
    "I was charged twice for the same subscription this month.",
    "Do you ship to Canada, and how long does it take?",
    "How can I download all my invoices from last year?",
    "The discount code from your newsletter does not work at checkout.",
]
WORKLOADS = ("base", "adapter", "mix4")


@dataclass
class Result:
    engine: str
    workload: str
    concurrency: int
    tokens: int
    seconds: float
    ttft: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.ttft)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

    def row(self) -> dict:
        return {"engine": self.engine, "workload": self.workload, "concurrency": self.concurrency,
                "tokens": self.tokens, "seconds": round(self.seconds, 2), "tokens_per_s": round(self.tokens_per_s, 1),
                "ttft_p50_s": round(self.pct(0.5), 3), "ttft_p95_s": round(self.pct(0.95), 3)}


def make_adapters(model_dir: str, out: Path, n: int, rank: int) -> list[Path]:
    """n random-weight LoRA adapters (rank `rank`, all linear layers) for `model_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
        paths.append(out / f"bench-a{i}")
        peft_model.save_pretrained(paths[-1])
    del peft_model, model
    gc.collect()
    return paths


# ---------------------------------------------------------------- baseline: transformers + peft generate

def run_baseline(model_dir: str, adapters: list[Path], levels: list[int], rounds: int, max_tokens: int,
                 workloads: list[str], dtype: str) -> list[Result]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()

    class FirstToken(LogitsProcessor):
        """Called once per generated token; the first call marks the first token's logits."""

        def __init__(self):
            self.at = None

        def __call__(self, input_ids, scores):
            if self.at is None:
                self.at = time.perf_counter()
            return scores

    def generate(m, prompts: list[str], adapter_names: list[str] | None) -> tuple[int, float, float]:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        first = FirstToken()
        kwargs = {"adapter_names": adapter_names} if adapter_names else {}
        start = time.perf_counter()
        with torch.inference_mode():
            out = m.generate(**enc, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([first]),
                             **kwargs)
        end = time.perf_counter()
        return (out.shape[1] - enc["input_ids"].shape[1]) * len(prompts), first.at - start, end - start

    def measure(m, workload: str, names: list[str] | None) -> list[Result]:
        generate(m, PROMPTS[:2], names[:2] if names else None)  # warm-up
        results = []
        for c in levels:
            res = Result("transformers", workload, c, 0, 0.0)
            k = 0
            for _ in range(rounds):
                prompts = [PROMPTS[(k + i) % len(PROMPTS)] for i in range(c)]
                batch_names = [names[(k + i) % len(names)] for i in range(c)] if names else None
                k += c
                tokens, ttft, seconds = generate(m, prompts, batch_names)
                res.tokens += tokens
                res.seconds += seconds
                res.ttft += [ttft] * c
            results.append(res)
            print("  " + json.dumps(res.row()), flush=True)
        return results

    print(f"  load average before: {os.getloadavg()[0]:.1f}", flush=True)
    results = measure(model, "base", None) if "base" in workloads else []
    peft_model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name="a0").eval()
    if "adapter" in workloads:
        results += measure(peft_model, "adapter", None)
    for i, path in enumerate(adapters[1:4], start=1):
        peft_model.load_adapter(str(path), adapter_name=f"a{i}")
    if "mix4" in workloads:
        results += measure(peft_model, "mix4", [f"a{i}" for i in range(4)])
    del peft_model, model
    gc.collect()
    print(f"  load average after: {os.getloadavg()[0]:.1f}", flush=True)
    return results


# ---------------------------------------------------------------- vLLM through its OpenAI API

def run_vllm(url: str, base: str, adapter_names: list[str], levels: list[int], rounds: int,
             max_tokens: int, workloads: list[str]) -> list[Result]:
    import openai

    def one(client, model: str, prompt: str) -> tuple[int, float]:
        start = time.perf_counter()
        ttft, tokens = None, 0
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=max_tokens,
            stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        for chunk in stream:
            if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - start
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return tokens, ttft if ttft is not None else time.perf_counter() - start

    def measure(workload: str, models: list[str]) -> list[Result]:
        results = []
        warm = openai.OpenAI(base_url=url + "/v1", api_key="EMPTY", max_retries=0, timeout=600)
        for m in models:
            one(warm, m, PROMPTS[0])
        for c in levels:
            res = Result("vllm", workload, c, 0, 0.0)
            lock = threading.Lock()

            def chat(worker: int) -> None:
                client = openai.OpenAI(base_url=url + "/v1", api_key="EMPTY", max_retries=0, timeout=600)
                for r in range(rounds):
                    k = r * c + worker
                    tokens, ttft = one(client, models[k % len(models)], PROMPTS[k % len(PROMPTS)])
                    with lock:
                        res.tokens += tokens
                        res.ttft.append(ttft)
                client.close()

            threads = [threading.Thread(target=chat, args=(w,)) for w in range(c)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            res.seconds = time.perf_counter() - start
            results.append(res)
            print("  " + json.dumps(res.row()), flush=True)
        return results

    models = {"base": [base], "adapter": adapter_names[:1], "mix4": adapter_names[:4]}
    return [r for w in WORKLOADS if w in workloads for r in measure(w, models[w])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="model directory (default: the prepared default model)")
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=2, help="requests per chat at each level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of the benchmark adapters")
    parser.add_argument("--max-lora-rank", type=int, default=0, help="vLLM --max-lora-rank (default: --rank)")
    parser.add_argument("--max-loras", type=int, default=4)
    parser.add_argument("--reserved-cores", type=int, default=None,
                        help="VLLM_CPU_NUM_OF_RESERVED_CPU (default: the settings' value)")
    parser.add_argument("--dtype", default="auto", help="TUNELOOP_VLLM_DTYPE for the vLLM server")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--baseline-dtype", default="float32",
                        help="transformers dtype (float32: twice bfloat16's batched speed on AVX2-only CPUs)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="subset of base,adapter,mix4")
    parser.add_argument("--vllm-arg", action="append", default=[], help="extra vLLM argument, e.g. --vllm-arg=--dtype=float32")
    parser.add_argument("--vllm-env", action="append", default=[], help="extra environment, e.g. --vllm-env LD_PRELOAD=...")
    parser.add_argument("--json", default="", help="also write all results to this file")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    workloads = args.workloads.split(",")

    from serving.adapters import VllmAdmin
    from serving.vllm_args import VllmCommand, command_for
    from serving.vllm_process import VllmProcess, port_in_use
    from store.settings import Settings

    defaults = Settings()
    model_dir = args.model or defaults.base_model_path
    if not Path(model_dir, "config.json").is_file():
        sys.exit(f"{model_dir} is not a prepared model directory: run `tuneloop setup` first")
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    port = 8099
    while port_in_use(port):
        port += 1
    overrides = {"data_dir": work, "base_model": model_dir, "base_model_name": "base", "vllm_port": port,
                 "max_loras": args.max_loras, "max_cpu_loras": max(args.max_loras, 4),
                 "max_lora_rank": args.max_lora_rank or args.rank, "vllm_dtype": args.dtype}
    if args.reserved_cores is not None:
        overrides["vllm_cpu_reserved_cores"] = args.reserved_cores
    settings = Settings(**overrides)
    print(f"model {model_dir}; {os.cpu_count()} CPUs; levels {levels}; {args.rounds} rounds of "
          f"{args.max_tokens}-token answers", flush=True)
    adapters = make_adapters(model_dir, work, 4, args.rank)

    results: list[Result] = []
    if not args.skip_baseline:
        print("transformers + peft generate (baseline):", flush=True)
        results += run_baseline(model_dir, adapters, levels, args.rounds, args.max_tokens, workloads,
                                args.baseline_dtype)

    command = command_for(settings)
    extra_env = dict(e.split("=", 1) for e in args.vllm_env)
    command = VllmCommand(argv=command.argv + args.vllm_arg, env={**command.env, **extra_env}, port=command.port)
    print(f"vLLM: {command.shell()}", flush=True)
    process = VllmProcess(command, log_path=work / "vllm.log", served_name="base")
    started = time.perf_counter()
    process.start()
    try:
        process.wait_ready(900)
        print(f"  ready after {time.perf_counter() - started:.0f} s", flush=True)
        admin = VllmAdmin(command.url)
        names = []
        for i, path in enumerate(adapters):
            admin.load(f"bench-a{i}", str(path))
            names.append(f"bench-a{i}")
        print(f"  load average before: {os.getloadavg()[0]:.1f}", flush=True)
        results += run_vllm(command.url, "base", names, levels, args.rounds, args.max_tokens, workloads)
        print(f"  load average after: {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        process.stop()

    report(results, levels)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": [r.row() for r in results]}, indent=2))


def report(results: list[Result], levels: list[int]) -> None:
    by = {(r.engine, r.workload, r.concurrency): r for r in results}
    print("\n| engine | workload | concurrency | output tokens/s | TTFT p50 (s) | TTFT p95 (s) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.engine} | {r.workload} | {r.concurrency} | {r.tokens_per_s:.1f} | {r.pct(0.5):.2f} | "
              f"{r.pct(0.95):.2f} |")
    print("\n| ratio | " + " | ".join(f"c={c}" for c in levels) + " |")
    print("|---|" + "---:|" * len(levels))

    def ratio_row(label: str, num: tuple, den: tuple) -> None:
        cells = []
        for c in levels:
            a, b = by.get((*num, c)), by.get((*den, c))
            cells.append(f"{a.tokens_per_s / b.tokens_per_s:.2f}x" if a and b else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")

    for w in WORKLOADS:
        ratio_row(f"vLLM / transformers, {w}", ("vllm", w), ("transformers", w))
    ratio_row("vLLM adapter mix / vLLM base", ("vllm", "mix4"), ("vllm", "base"))
    ratio_row("vLLM one adapter / vLLM base", ("vllm", "adapter"), ("vllm", "base"))
    ratio_row("transformers mix / transformers base", ("transformers", "mix4"), ("transformers", "base"))


if __name__ == "__main__":
    main()

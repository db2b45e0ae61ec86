"""Redaction speed: conversations per second through redact_conversation, the import slowdown with redaction on
vs off (a ratio, same file, same run), and the peak memory of imports of 1,000 and 10,000 conversations with
redaction on (streaming: the peak should not grow with the file).

    .venv/bin/python bench/redaction_speed.py                 # about 4 minutes on 2 busy cores
    .venv/bin/python bench/redaction_speed.py --n 2000        # quicker

Conversations come from the labelled fixture (tests/fixtures/pii), each made unique by a ticket number in its
first turn, so nothing is dropped as a duplicate. Memory is Python's traced peak (tracemalloc) during
import_file alone, after the engine is built, so it shows what grows with the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pii" / "conversations.jsonl"


def conversations(n: int) -> list[dict]:
    base = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for i in range(n):
        msgs = [dict(m) for m in base[i % len(base)]["messages"]]
        msgs[0]["content"] = f"[ticket T{i:06d}] " + msgs[0]["content"]
        out.append({"messages": msgs})
    return out


def write(path: Path, convs: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for c in convs:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    return path


def timed_import(tmp: Path, source: Path, name: str, redaction) -> tuple[float, object]:
    from store.db import open_db
    from training.ingest import import_file

    db = open_db(tmp / f"{name}.db")
    t0 = time.perf_counter()
    report = import_file(db, source, "bench", redaction=redaction)
    elapsed = time.perf_counter() - t0
    db.close()
    return elapsed, report


def traced_peak(tmp: Path, source: Path, name: str, redaction) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    timed_import(tmp, source, name, redaction)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000, help="conversations in the import file")
    parser.add_argument("--throughput-n", type=int, default=2_000, help="conversations for the throughput figure")
    args = parser.parse_args()

    from store.redaction import RedactionSettings, redact_conversation

    on, off = RedactionSettings(), RedactionSettings.off()
    t0 = time.perf_counter()
    redact_conversation([{"role": "user", "content": "warm up jo@example.com"}], on)
    print(f"engine first build (Presidio + spaCy import, recognizers): {time.perf_counter() - t0:.1f} s")

    convs = conversations(args.throughput_n)
    t0 = time.perf_counter()
    findings = sum(len(redact_conversation(c["messages"], on)[1]) for c in convs)
    elapsed = time.perf_counter() - t0
    turns = sum(len(c["messages"]) for c in convs)
    print(f"redact_conversation: {len(convs)} conversations ({turns} turns, {findings} values) in {elapsed:.1f} s "
          f"= {len(convs) / elapsed:.0f} conversations/s")

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        big = write(tmp / "big.jsonl", conversations(args.n))
        t_off, r_off = timed_import(tmp, big, "off", off)
        t_on, r_on = timed_import(tmp, big, "on", on)
        print(f"import of {args.n} conversations ({big.stat().st_size / 2**20:.1f} MiB): redaction off {t_off:.1f} s "
              f"({args.n / t_off:.0f}/s), on {t_on:.1f} s ({args.n / t_on:.0f}/s): slowdown x{t_on / t_off:.2f}; "
              f"imported {r_off.imported} / {r_on.imported}, redacted {r_on.redaction['total']} values")
        small = write(tmp / "small.jsonl", conversations(max(1, args.n // 10)))
        peak_small = traced_peak(tmp, small, "mem_small", on)
        peak_big = traced_peak(tmp, big, "mem_big", on)
        print(f"peak traced memory during import with redaction: {args.n // 10} conversations {peak_small:.1f} MiB, "
              f"{args.n} conversations {peak_big:.1f} MiB (x{peak_big / peak_small:.2f} for x10 the file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Redaction quality: precision and recall per type on the labelled fixture tests/fixtures/pii/conversations.jsonl.

    .venv/bin/python bench/make_pii_fixture.py      # (re)writes the fixture, deterministic
    .venv/bin/python bench/redaction_quality.py     # about 15 s on 2 cores (most of it importing Presidio/spaCy)

A labelled span counts as found when one redaction of the same type covers all of it (a partial cover
would leak the rest). A redaction counts as correct when it overlaps a labelled span of its type. Every
redaction that overlaps no labelled span at all is a look-alike wrongly redacted (price, date, code...),
listed with its type and surrounding text position, never its value. `score` is imported by the tests.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pii" / "conversations.jsonl"


@dataclass
class TypeScore:
    gold: int = 0
    found: int = 0  # gold spans fully covered by a finding of the same type
    predicted: int = 0
    correct: int = 0  # findings overlapping a gold span of the same type

    @property
    def recall(self) -> float:
        return self.found / self.gold if self.gold else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 1.0


@dataclass
class Score:
    per_type: dict[str, TypeScore] = field(default_factory=dict)
    leaked: list[str] = field(default_factory=list)  # "conv-id message N TYPE": gold spans no finding covers
    false_positives: list[str] = field(default_factory=list)  # "conv-id message N TYPE": findings on no gold span
    conversations: int = 0


def load(path: Path = FIXTURE) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(records: list[dict], settings=None) -> Score:
    from store.redaction import RedactionSettings, redact_conversation

    settings = settings or RedactionSettings()
    out = Score(conversations=len(records))
    for rec in records:
        _, findings = redact_conversation(rec["messages"], settings)
        for g in rec["spans"]:
            ts = out.per_type.setdefault(g["type"], TypeScore())
            ts.gold += 1
            same = [f for f in findings if f.message == g["message"] and f.type == g["type"]
                    and f.start <= g["start"] and f.end >= g["end"]]
            if same:
                ts.found += 1
            elif not any(f.message == g["message"] and f.start <= g["start"] and f.end >= g["end"] for f in findings):
                out.leaked.append(f"{rec['id']} message {g['message']} {g['type']}")
        for f in findings:
            ts = out.per_type.setdefault(f.type, TypeScore())
            ts.predicted += 1
            overlapping = [g for g in rec["spans"] if g["message"] == f.message and g["start"] < f.end and f.start < g["end"]]
            if any(g["type"] == f.type for g in overlapping):
                ts.correct += 1
            if not overlapping:
                out.false_positives.append(f"{rec['id']} message {f.message} {f.type} at {f.start}")
    return out


def main() -> int:
    records = load()
    t0 = time.perf_counter()
    result = score(records)
    elapsed = time.perf_counter() - t0
    print(f"fixture: {len(records)} conversations, {sum(t.gold for t in result.per_type.values())} labelled spans "
          f"(scored in {elapsed:.1f} s including the engine's first build)")
    print(f"{'type':<9}{'spans':>7}{'found':>7}{'recall':>8}{'redacted':>10}{'precision':>11}")
    for kind, t in sorted(result.per_type.items()):
        print(f"{kind:<9}{t.gold:>7}{t.found:>7}{t.recall:>8.3f}{t.predicted:>10}{t.precision:>11.3f}")
    gold = sum(t.gold for t in result.per_type.values())
    print(f"values left in the text (no redaction of any type covers them): {len(result.leaked)} of {gold}")
    print(f"look-alikes redacted (a finding on no labelled span): {len(result.false_positives)}")
    for line in result.leaked[:20]:
        print("  leaked:", line)
    for line in result.false_positives[:20]:
        print("  false positive:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

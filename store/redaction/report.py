"""What redaction found, without what it found: Finding (type, where) and RedactionReport (counts per type
with the lines or records they were on). Neither ever holds an original value, so both can be logged,
stored with an import and shown to anyone."""

from __future__ import annotations

from dataclasses import dataclass, field

# How many locations a report keeps per type: the counts stay exact, the list stays bounded, so an
# import of a million conversations keeps a report of constant size.
MAX_LOCATIONS = 50


@dataclass(frozen=True)
class Finding:
    """One redacted value: its type, its [start, end) in the original text, the message index within its
    conversation (None for a plain text), the 1-based line in that text, and the placeholder it became."""

    type: str
    start: int
    end: int
    message: int | None = None
    line: int | None = None
    placeholder: str = ""


@dataclass
class RedactionReport:
    """Counts per type for a whole import (or capture), with where each type was seen.

    `locations[type]` holds up to MAX_LOCATIONS places such as "line 14" or "record 3, message 2";
    `enabled` False means redaction was explicitly turned off."""

    enabled: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    locations: dict[str, list[str]] = field(default_factory=dict)
    conversations: int = 0
    """How many conversations had at least one value redacted."""

    def add(self, findings: list[Finding] | tuple[Finding, ...], where: str) -> None:
        """Count the findings of one conversation found at `where` (the importer's location)."""
        if not findings:
            return
        self.conversations += 1
        for f in findings:
            self.counts[f.type] = self.counts.get(f.type, 0) + 1
            places = self.locations.setdefault(f.type, [])
            place = where if f.message is None else f"{where}, message {f.message + 1}"
            if len(places) < MAX_LOCATIONS and (not places or places[-1] != place):
                places.append(place)

    @classmethod
    def from_json(cls, data: dict) -> "RedactionReport":
        """Back from `to_json()` (an ImportReport's `redaction`), to word it with `summary()`."""
        return cls(enabled=data.get("enabled", True), counts=dict(data.get("counts") or {}),
                   locations={k: list(v) for k, v in (data.get("locations") or {}).items()},
                   conversations=data.get("conversations", 0))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict:
        return {"enabled": self.enabled, "total": self.total, "conversations": self.conversations,
                "counts": dict(sorted(self.counts.items())),
                "locations": {k: list(v) for k, v in sorted(self.locations.items())},
                "locations_kept_per_type": MAX_LOCATIONS}

    def summary(self) -> str:
        """'redacted 12 values in 5 conversations: EMAIL 7, PHONE 5' (or that redaction was off)."""
        if not self.enabled:
            return "redaction was turned off: personal data was imported as it is"
        if not self.counts:
            return "redaction found no personal data"
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        return f"redacted {self.total} values in {self.conversations} conversations: {parts}"

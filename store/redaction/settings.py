"""RedactionSettings: which kinds of personal data to replace, the team's own patterns, and what to leave alone.

One frozen, hashable value shared by every entry point (imports, captured traffic, ratings), so the
engine built for it can be cached. `from_options` is what the CLI flags and the Data tab call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Built-in types, in the order they win when two findings of equal length cover the same text.
TYPES = ("EMAIL", "URL", "CARD", "IBAN", "IP", "PHONE", "ADDRESS", "HANDLE", "PERSON")
TYPE_TITLES = {
    "EMAIL": "e-mail addresses",
    "URL": "links carrying tokens or personal paths",
    "CARD": "payment card numbers (Luhn-checked)",
    "IBAN": "IBANs (checksum-checked)",
    "PHONE": "phone numbers (international formats)",
    "IP": "IP addresses",
    "ADDRESS": "postal addresses (street + number, postcode + city)",
    "HANDLE": "social handles (@name)",
    "PERSON": "person names in fixed phrasings (no named-entity model)",
}
# A label becomes the placeholder's name (<ORDER_1>), so it is kept to what reads well there.
_LABEL = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")


@dataclass(frozen=True)
class CustomPattern:
    """One of the team's own patterns: a label (ORDER) and the regex it redacts (ORD-\\d{6})."""

    label: str
    regex: str

    def __post_init__(self) -> None:
        if not _LABEL.match(self.label):
            raise ValueError(f"redaction pattern label {self.label!r}: use capital letters, digits and "
                             "underscores, starting with a letter (for example ORDER)")
        if self.label in TYPES:
            raise ValueError(f"redaction pattern label {self.label!r} is a built-in type: choose another label")
        try:
            compiled = re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"redaction pattern {self.label}: the regex does not compile ({exc})") from None
        if compiled.match(""):
            raise ValueError(f"redaction pattern {self.label}: the regex matches empty text")

    def __str__(self) -> str:
        return f"{self.label}={self.regex}"


def parse_pattern(spec: str) -> CustomPattern:
    """'ORDER=ORD-\\d{6}' -> CustomPattern('ORDER', 'ORD-\\d{6}'); the regex may itself hold '='."""
    label, sep, regex = str(spec).partition("=")
    if not sep or not label.strip() or not regex:
        raise ValueError(f"redaction pattern {spec!r} must look like LABEL=REGEX, for example ORDER=ORD-\\d{{6}}")
    return CustomPattern(label.strip().upper(), regex)


@dataclass(frozen=True)
class RedactionSettings:
    """How to redact. The default (`RedactionSettings()`) redacts every built-in type."""

    enabled: bool = True
    """False turns redaction off entirely: an explicit choice, recorded on the dataset version."""
    types: frozenset[str] = frozenset(TYPES)
    """The built-in types to redact (a subset of TYPES)."""
    patterns: tuple[CustomPattern, ...] = ()
    """The team's own labelled regexes, redacted as <LABEL_n>."""
    allow: tuple[str, ...] = field(default=())
    """Exact values never redacted, compared without case (the team's own support address, handle)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", frozenset(t.upper() for t in self.types))
        unknown = sorted(self.types - set(TYPES))
        if unknown:
            raise ValueError(f"unknown redaction type(s) {', '.join(unknown)}: choose from {', '.join(TYPES)}")
        object.__setattr__(self, "patterns", tuple(self.patterns))
        labels = [p.label for p in self.patterns]
        if len(set(labels)) != len(labels):
            raise ValueError("redaction pattern labels must differ from each other")
        object.__setattr__(self, "allow", tuple(a for a in self.allow if str(a).strip()))

    @classmethod
    def off(cls) -> "RedactionSettings":
        return cls(enabled=False)

    @classmethod
    def from_options(cls, *, redact: bool = True, off: list[str] | tuple[str, ...] = (),
                     patterns: list[str] | tuple[str, ...] = (),
                     allow: list[str] | tuple[str, ...] = ()) -> "RedactionSettings":
        """What the doors build: `--no-redact` -> redact=False, `--redact-off PHONE` -> off=["PHONE"],
        `--redact-pattern ORDER=ORD-\\d{6}` -> patterns=[...]. Raises ValueError naming the bad value."""
        off_types = {str(t).strip().upper() for t in off if str(t).strip()}
        unknown = sorted(off_types - set(TYPES))
        if unknown:
            raise ValueError(f"unknown redaction type(s) {', '.join(unknown)}: choose from {', '.join(TYPES)}")
        return cls(enabled=redact, types=frozenset(TYPES) - off_types,
                   patterns=tuple(parse_pattern(p) for p in patterns), allow=tuple(allow))

    @property
    def labels(self) -> tuple[str, ...]:
        """Every placeholder name this configuration can produce (built-in types first)."""
        return tuple(t for t in TYPES if t in self.types) + tuple(p.label for p in self.patterns)

    def to_record(self) -> dict:
        """What a dataset version keeps about how its data was redacted (no personal data: the allow-list
        is kept as a count only, since it may hold a real address)."""
        return {
            "enabled": self.enabled,
            "types": [t for t in TYPES if t in self.types] if self.enabled else [],
            "off": [t for t in TYPES if t not in self.types] if self.enabled else list(TYPES),
            "patterns": [str(p) for p in self.patterns] if self.enabled else [],
            "allowed_values": len(self.allow),
        }

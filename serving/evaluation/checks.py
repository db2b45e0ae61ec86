"""An answer's named checks (must mention, must not mention, regex) and the built-in grounding checks.

Named checks belong to an eval item: `{"name": "states the 30-day refund rule", "kind": "must_mention",
"value": "30 days"}`. A mention is case-insensitive; `value` may be a list of alternatives (must_mention
passes when any is there, must_not_mention when none is); a regex is searched case-insensitively.

Grounding: links, e-mail addresses and phone numbers in an answer that appear nowhere in the team's
own texts (imported conversations, references, corrections) nor in its allow-list are invented. An
answer that sends customers to a made-up URL or number is the failure support teams fear most.
Allow-list entries: a link (exact), a link prefix ending in '/', or a bare domain (any link on it or
its subdomains); an e-mail address, or '@domain'; a phone number (compared by its digits).

    checks = parse_checks(item["checks"], where="item 3")
    run_checks(checks, answer)                # {"states the 30-day refund rule": True}
    GroundingIndex.build(texts, allow).invented(answer)  # Invented(links=[...], emails=[], phones=[])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from store.evaluations import CHECK_KINDS, InvalidCheck, normalise_check, normalise_checks

__all__ = ["CHECK_KINDS", "Check", "GroundingIndex", "InvalidCheck", "Invented", "find_emails", "find_links",
           "find_phones", "parse_check", "parse_checks", "run_checks"]


@dataclass(frozen=True)
class Check:
    name: str
    kind: str
    """must_mention | must_not_mention | regex"""
    values: tuple[str, ...]
    """The phrases (alternatives), or one regular expression."""

    def passes(self, answer: str) -> bool:
        text = (answer or "").casefold()
        if self.kind == "regex":
            return re.search(self.values[0], answer or "", re.IGNORECASE) is not None
        hit = any(v.casefold() in text for v in self.values)
        return hit if self.kind == "must_mention" else not hit

    def to_json(self) -> dict:
        value: str | list[str] = self.values[0] if len(self.values) == 1 else list(self.values)
        return {"name": self.name, "kind": self.kind, "value": value}


def parse_check(data: Mapping, where: str = "check") -> Check:
    """A Check from its JSON form; InvalidCheck names `where` and the field at fault (store.evaluations validates)."""
    c = normalise_check(data, where)
    return Check(c["name"], c["kind"], tuple(c["value"]))


def parse_checks(data, where: str = "item") -> list[Check]:
    """Checks from a JSON list; names must be unique within an item (pass rates are counted by name)."""
    return [Check(c["name"], c["kind"], tuple(c["value"])) for c in normalise_checks(data, where)]


def run_checks(checks: Iterable[Check], answer: str) -> dict[str, bool]:
    return {c.name: c.passes(answer) for c in checks}


# --- grounding ---
# Links: with a scheme, or starting www.; trailing punctuation is not part of the link.
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`\])}]+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Phones: an optional +country code, then 2-4 digit groups joined by space, dot, dash or a
# parenthesised area code, 7 to 15 digits in all. Plain runs of digits (order numbers) are not phones.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,5}){1,5}(?![\w])"
                    r"|(?<![\w+])\+\d{7,15}(?!\w)")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")
_TRAILING = ".,;:!?)]}'\""


def _norm_link(link: str) -> str:
    link = link.rstrip(_TRAILING)
    if link.lower().startswith("www."):
        link = "http://" + link
    parts = urlsplit(link)
    host = (parts.hostname or "").lower().removeprefix("www.")
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{host}{path}{query}"


def _phone_digits(text: str) -> str | None:
    digits = re.sub(r"\D", "", text)
    return digits if 7 <= len(digits) <= 15 else None


def find_links(text: str) -> list[str]:
    return [m.group(0).rstrip(_TRAILING) for m in _URL.finditer(text or "")]


def find_emails(text: str) -> list[str]:
    return [m.group(0) for m in _EMAIL.finditer(text or "")]


def find_phones(text: str) -> list[str]:
    out = []
    # E-mail addresses and links may hold digit groups; blank them first.
    text = _URL.sub(" ", _EMAIL.sub(" ", text or ""))
    for m in _PHONE.finditer(text):
        found = m.group(0).strip()
        if _DATE.match(found) or _phone_digits(found) is None:
            continue
        out.append(found)
    return out


@dataclass(frozen=True)
class Invented:
    """The links, e-mail addresses and phone numbers of one answer found nowhere in the team's data."""

    links: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.links) + len(self.emails) + len(self.phones)

    def to_json(self) -> dict:
        return {"links": self.links, "emails": self.emails, "phones": self.phones}


@dataclass
class GroundingIndex:
    """What the team's data and allow-list contain, normalised for lookup."""

    links: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    allowed_link_prefixes: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    allowed_email_domains: tuple[str, ...] = ()

    @classmethod
    def build(cls, texts: Iterable[str], allow: Mapping[str, Iterable[str]] | None = None) -> "GroundingIndex":
        index = cls()
        for text in texts:
            index.add_text(text)
        allow = allow or {}
        prefixes, domains, email_domains = [], [], []
        for value in allow.get("link", ()):
            value = value.strip()
            if "/" not in value.split("://", 1)[-1] and "://" not in value:
                domains.append(value.lower().removeprefix("www."))  # a bare domain
            elif value.endswith("/"):
                prefixes.append(_norm_link(value) + "/")
            else:
                index.links.add(_norm_link(value))
        for value in allow.get("email", ()):
            value = value.strip().lower()
            if value.startswith("@"):
                email_domains.append(value[1:])
            else:
                index.emails.add(value)
        for value in allow.get("phone", ()):
            digits = re.sub(r"\D", "", value)
            if digits:
                index.phones.add(digits)
        index.allowed_link_prefixes, index.allowed_domains = tuple(prefixes), tuple(domains)
        index.allowed_email_domains = tuple(email_domains)
        return index

    def add_text(self, text: str) -> None:
        """Index one text of the team's data (cheap: three regular expressions)."""
        if not text:
            return
        if "http" in text or "www." in text:
            self.links.update(_norm_link(u) for u in find_links(text))
        if "@" in text:
            self.emails.update(e.lower() for e in find_emails(text))
        self.phones.update(d for d in (_phone_digits(p) for p in find_phones(text)) if d)

    def known_link(self, link: str) -> bool:
        norm = _norm_link(link)
        if norm in self.links or any((norm + "/").startswith(p) for p in self.allowed_link_prefixes):
            return True
        host = norm.split("/", 1)[0].split("?", 1)[0]
        return any(host == d or host.endswith("." + d) for d in self.allowed_domains)

    def known_email(self, email: str) -> bool:
        email = email.lower()
        return email in self.emails or email.rsplit("@", 1)[-1] in self.allowed_email_domains

    def known_phone(self, phone: str) -> bool:
        # The same number written with or without its country code (+44 20 ... vs 020 ...): drop the
        # national trunk zeros, then one must end with the other, over at least 7 digits.
        digits = (_phone_digits(phone) or "").lstrip("0")
        for known in self.phones:
            k = known.lstrip("0")
            if digits == k or (min(len(digits), len(k)) >= 7 and (digits.endswith(k) or k.endswith(digits))):
                return True
        return False

    def invented(self, answer: str) -> Invented:
        return Invented(
            links=[u for u in find_links(answer) if not self.known_link(u)],
            emails=[e for e in find_emails(answer) if not self.known_email(e)],
            phones=[p for p in find_phones(answer) if not self.known_phone(p)],
        )

"""The importers' types: options, the raw record a parser yields, and what an import stream yields.

Pure data, no IO. Tested through every tests/test_importers_*.py file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

FORMATS = ("openai", "sharegpt", "alpaca", "csv", "transcript", "zendesk", "intercom", "replies", "mapped")
ROLES = ("system", "user", "assistant")
CSV_COLUMN_KEYS = ("conversation", "order", "speaker", "text", "question", "answer", "system")
# Reply-linked exports (replies.py): which column or key holds each field.
REPLY_COLUMN_KEYS = ("id", "reply_to", "text", "inbound", "outbound", "author", "speaker")
REPLY_ORPHANS = ("reject", "start")
# A JSON mapping (mapped.py): what each key's JMESPath expression points at.
JSON_MAP_KEYS = ("records", "turns", "speaker", "text", "system", "id", "append_user", "append_assistant")

# How a format is named in messages to people ("this does not look like ...").
FORMAT_TITLES = {
    "openai": "OpenAI chat JSONL",
    "sharegpt": "ShareGPT JSON",
    "alpaca": "Alpaca JSON",
    "csv": "CSV",
    "transcript": "a plain-text transcript",
    "zendesk": "a Zendesk ticket export",
    "intercom": "an Intercom conversation export",
    "replies": "reply-linked messages (one message per row with the id it replies to)",
    "mapped": "JSON read with a mapping",
}


class ImportFileError(Exception):
    """The whole file cannot be read (undecodable, empty, not the format claimed, unknown format).

    The message says what, where, and what to do about it, in words that name no door's controls;
    `field` is the ImportOptions field that would fix it ("format", "csv_columns",
    "transcript_labels"), so the CLI can name its flag and the web app its form field."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class UnknownFormat(ImportFileError):
    """No importer recognised the file (field "format"): the message lists what was tried."""


def parse_pairs(items, what: str) -> dict[str, str]:
    """['bot=assistant', 'Kunde=user'] -> {'bot': 'assistant', 'Kunde': 'user'}.

    Both doors' NAME=VALUE options (speaker roles, CSV columns, transcript labels) go through this;
    a malformed item raises ValueError naming `what` and the item."""
    out = {}
    for item in items:
        key, sep, val = str(item).partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"{what}: {item!r} must look like NAME=VALUE, for example bot=assistant")
        out[key.strip()] = val.strip()
    return out


@dataclass(frozen=True)
class ImportOptions:
    """How to read one file. `open_import` checks the values and raises ImportFileError naming the bad one."""

    format: str = "auto"
    """"auto" (detect from the content) or one of FORMATS."""
    role_map: dict[str, str] = field(default_factory=dict)
    """Extra speaker name -> role for sharegpt, csv and transcript ({"bot": "assistant"}); overrides defaults."""
    csv_columns: dict[str, str] = field(default_factory=dict)
    """CSV field -> column name, keys from CSV_COLUMN_KEYS ({"text": "body"}); missing ones are detected."""
    transcript_labels: dict[str, str] = field(default_factory=dict)
    """Transcript label -> role ({"Kunde": "user"}), added to the defaults: Customer/User/Client,
    Agent/Support/Assistant/Bot, System."""
    transcript_separator: str | None = None
    """A marker line between transcript conversations ("---"); without one, blank lines separate them."""
    reply_columns: dict[str, str] = field(default_factory=dict)
    """For replies: field -> column (CSV) or key (JSONL), keys from REPLY_COLUMN_KEYS
    ({"reply_to": "parent"}); missing ones are detected from the header or the first record."""
    agent_accounts: tuple[str, ...] = ()
    """For replies: the author names or ids that are the support side (case and a leading '@' do not
    matter); everyone else is the customer. When given, they decide the side over an inbound column."""
    reply_orphans: str = "reject"
    """For replies: a message replying to an id not in the file is rejected ("reject") or starts its
    conversation ("start"), e.g. when the export begins mid-thread."""
    json_map: dict[str, str] = field(default_factory=dict)
    """For mapped: key from JSON_MAP_KEYS -> JMESPath expression. turns (in the record), speaker and
    text (in each turn), system, id, append_user, append_assistant (in the record); records is the
    key whose list holds the records when the file is one object wrapping them. Example:
    {"turns": "dialogContent", "speaker": "keys(@)[0]", "text": "values(@)[0]"}. See mapped.py."""
    max_messages: int = 200
    """Longer conversations are imported, with an ImportWarning."""
    max_chars: int = 32000
    """Conversations with more characters of content are imported, with an ImportWarning."""

    def problems(self) -> list[str]:
        """What is wrong with these options, in words naming the option; empty when all is well."""
        out = []
        if self.format != "auto" and self.format not in FORMATS:
            out.append(f"unknown format {self.format!r}: choose auto or one of {', '.join(FORMATS)}")
        for option, mapping in (("role map", self.role_map), ("transcript label", self.transcript_labels)):
            for name, role in mapping.items():
                if not str(name).strip():
                    out.append(f"{option} has an empty name (for role {role!r})")
                if role not in ROLES:
                    out.append(f"{option} {name}={role}: {role!r} is not one of {'/'.join(ROLES)}")
        for key, column in self.csv_columns.items():
            if key not in CSV_COLUMN_KEYS:
                out.append(f"CSV column {key}={column}: {key!r} is not one of {', '.join(CSV_COLUMN_KEYS)}")
            elif not str(column).strip():
                out.append(f"CSV column {key!r} names an empty column")
        for key, column in self.reply_columns.items():
            if key not in REPLY_COLUMN_KEYS:
                out.append(f"reply column {key}={column}: {key!r} is not one of {', '.join(REPLY_COLUMN_KEYS)}")
            elif not str(column).strip():
                out.append(f"reply column {key!r} names an empty column")
        if any(not str(a).strip(" @") for a in self.agent_accounts):
            out.append("an agent account is blank")
        if self.reply_orphans not in REPLY_ORPHANS:
            out.append(f"orphan replies {self.reply_orphans!r}: choose {' or '.join(REPLY_ORPHANS)}")
        out += json_map_problems(self.json_map)
        if self.format == "mapped" and not self.json_map.get("turns"):
            out.append("the mapped format needs a JSON mapping saying where the turns are (turns=PATH)")
        if self.transcript_separator is not None and not self.transcript_separator.strip():
            out.append("the transcript separator is blank: leave it unset to separate conversations by blank lines")
        for name in ("max_messages", "max_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                out.append(f"{name} must be a positive whole number, got {value!r}")
        return out


def json_map_problems(json_map: dict[str, str]) -> list[str]:
    """What is wrong with a JSON mapping: unknown keys, blank or unparsable JMESPath expressions."""
    import jmespath  # only when a mapping is given
    from jmespath.exceptions import JMESPathError

    out = []
    for key, expr in json_map.items():
        if key not in JSON_MAP_KEYS:
            out.append(f"JSON mapping {key}={expr}: {key!r} is not one of {', '.join(JSON_MAP_KEYS)}")
        elif not str(expr).strip():
            out.append(f"JSON mapping {key!r} is blank")
        else:
            try:
                jmespath.compile(str(expr))
            except JMESPathError as exc:
                out.append(f"JSON mapping {key}={expr}: not a JMESPath expression ({str(exc).splitlines()[0]})")
    return out


@dataclass(frozen=True)
class Record:
    """One conversation as a parser found it: messages mapped to roles but not yet validated.

    A message may carry "_at" (where it came from, e.g. "line 14" or "field 'output'") so that
    validation reasons can point into the source."""

    messages: list[dict]
    location: str
    external_id: str | None = None
    meta: dict = field(default_factory=dict)


# One encoder for every hash (json.dumps with options builds a new one per call); ensure_ascii keeps
# the bytes stable and never fails on odd code points.
_CANONICAL = json.JSONEncoder(ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def messages_hash(messages: list[dict]) -> str:
    """sha256 (hex) of the canonical JSON of roles, contents and weights; an absent weight counts as 1."""
    return messages_digest(messages).hex()


def messages_digest(messages: list[dict]) -> bytes:
    """messages_hash as 32 raw bytes (what the in-file dedup set keeps)."""
    canonical = [
        {"role": m["role"], "content": m["content"], "weight": m.get("weight", 1)} if m["role"] == "assistant"
        else {"role": m["role"], "content": m["content"]}
        for m in messages
    ]
    return hashlib.sha256(_CANONICAL.encode(canonical).encode("ascii")).digest()


@dataclass(frozen=True)
class Conversation:
    """A validated conversation in canonical form, with where it came from."""

    messages: list[dict]
    location: str
    external_id: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """The dedup key: the same messages (roles, contents, weights) give the same hash."""
        return messages_hash(self.messages)


@dataclass(frozen=True)
class Reject:
    """A record that was not imported; the reason names the message index and field."""

    location: str
    reason: str


@dataclass(frozen=True)
class ImportWarning:  # noqa: A001 - the name is the public API; it shadows the builtin only here
    """Something worth a look in a conversation that was imported anyway."""

    location: str
    message: str

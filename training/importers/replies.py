"""Reply-linked exports -> records: one message per row with its own id and the id it replies to. Pure apart
from private temporary SQLite tables (store.scratch) that hold the rows while chains are followed.

Social-media care exports (Twitter customer support: tweet_id, author_id, inbound, created_at, text,
response_tweet_id, in_response_to_tweet_id) and e-mail threads (message_id, in_reply_to, from, body)
give no conversation id: a conversation is a reply chain. Read from CSV (a header row) or JSON
records (JSONL or an array), the columns or keys found by name or named with reply_columns:
  - id and reply_to: the message's own id and the id it answers (empty on a thread's first message);
    ids are text, "119237.0" (a number a spreadsheet wrote as a float) is "119237";
  - text: the message; leading @mentions ("@AppleSupport @115712 ") are dropped, since every reply on
    social media starts with them; a row with empty text stays in the chain but adds no turn;
  - the side, first that applies: agent_accounts (names or ids in the author column that are the
    support side, everyone else the customer); an inbound column (true = the customer) or an outbound
    one (true = support); a speaker column with role names (agent, customer, ... and the role map).
Every path from a thread's first message to a message nobody answered is one conversation, so a
thread that branches gives several conversations sharing their start (meta "thread_start"; the
external id is the last message's id). Conversations come out grouped by thread, in file order.
Rejected, with line numbers: rows without an id or with an id seen before, an unreadable side; a
reply to an id not in the file (its whole thread, once; or, with reply_orphans="start", the reply
starts its conversation); messages that reply to each other in a loop.
Memory holds the ids (and their parents) only; the rows wait on disk, so the first conversation
comes out once the whole file is read.
Tested in tests/test_importers_replies.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Iterator

from store.scratch import ScratchIndex, ScratchSort
from training.importers.csv_ import _rows as csv_rows, column_key, line_ranges, sniff_delimiter
from training.importers.decode import TextSource, as_stream
from training.importers.fields import id_of
from training.importers.jsonrecords import iter_json_records, json_type
from training.importers.model import ImportFileError, ImportOptions, Record, Reject
from training.importers.speakers import CSV_SPEAKERS, role_of, speaker_table

CANDIDATES = {
    "id": ("tweet_id", "message_id", "msg_id", "post_id", "comment_id", "email_id", "status_id", "id"),
    "reply_to": ("in_response_to_tweet_id", "in_reply_to_status_id", "in_reply_to_tweet_id", "in_reply_to",
                 "in_reply_to_id", "in_reply_to_message_id", "reply_to_id", "reply_to", "replied_to_id",
                 "in_response_to", "in_response_to_id", "parent_id", "parent_message_id", "parent"),
    "text": ("text", "full_text", "body", "message", "content", "message_text", "plain_body", "comment"),
    "inbound": ("inbound", "is_inbound", "incoming", "is_incoming", "from_customer", "is_customer"),
    "outbound": ("outbound", "is_outbound", "from_agent", "is_agent", "is_staff", "from_support", "is_support"),
    "author": ("author_id", "author", "screen_name", "user_screen_name", "username", "user_id", "user", "from",
               "from_address", "sender", "sender_id"),
    "speaker": ("speaker", "role", "author_type", "sender_type", "speaker_role", "party", "who"),
}
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")
_MENTIONS = re.compile(r"^(?:\s*@\w+)+[\s:,]*")
_FLOAT_ID = re.compile(r"^(\d+)\.0+$")
_BATCH = 2000
_BATCH_CHARS = 1_000_000  # a batch of long e-mails is written out early: memory holds ids, not texts


@dataclass(frozen=True)
class ReplyPlan:
    """Which column (CSV: its index) or key (JSON: its name) holds each field, and how the side is read."""

    fields: dict[str, object]
    names: dict[str, str]  # field -> the column or key name, for messages
    side: str  # "accounts", "inbound", "outbound" or "speaker"

    def describe(self) -> str:
        """'id 'tweet_id', replies to 'in_response_to_tweet_id', text 'text', side from 'inbound'', for reasons."""
        side = {"accounts": f"agent accounts in {self.names.get('author')!r}",
                "inbound": f"{self.names.get('inbound')!r} (true = customer)",
                "outbound": f"{self.names.get('outbound')!r} (true = support)",
                "speaker": f"speaker names in {self.names.get('speaker')!r}",
                "": "agent accounts, still to be listed"}[self.side]
        return (f"id {self.names['id']!r}, replies to {self.names['reply_to']!r}, text {self.names['text']!r}, "
                f"side from {side}")


def plan_fields(names: list[str], options: ImportOptions, *, what: str = "column",
                require_side: bool = True) -> ReplyPlan:
    """Find each field among the header's columns (or a record's keys); ImportFileError names what is missing.

    Without `require_side` (detection), a file whose side is not yet known still plans, with side ""."""
    keys = [column_key(n) for n in names]
    shown = ", ".join(repr(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
    found: dict[str, int] = {}
    for field, name in options.reply_columns.items():
        if column_key(name) not in keys:
            raise ImportFileError(f"reply {what} {name!r} (given for {field!r}) is not among the {what}s: {shown}",
                                  field="reply_columns")
        found[field] = keys.index(column_key(name))
    for field, candidates in CANDIDATES.items():
        if field in found:
            continue
        used = set(found.values())
        found_at = next((keys.index(c) for c in candidates if c in keys and keys.index(c) not in used), None)
        if found_at is not None:
            found[field] = found_at
    missing = [f for f in ("id", "reply_to", "text") if f not in found]
    if missing:
        raise ImportFileError(f"no {' or '.join(f.replace('_', '-') for f in missing)} {what} found among {shown}: "
                              "reply-linked messages need each message's id, the id it replies to, and its text; "
                              "name the reply columns", field="reply_columns")
    if options.agent_accounts:
        if "author" not in found:
            raise ImportFileError(f"agent accounts are given but no author {what} was found among {shown}; "
                                  "name the reply column for author", field="reply_columns")
        side = "accounts"
    else:
        side = next((s for s in ("inbound", "outbound", "speaker") if s in found), "")
        if not side and require_side:
            author = f" (the author {what} is {names[found['author']]!r})" if "author" in found else ""
            raise ImportFileError(f"cannot tell the customer's messages from support's: no inbound or speaker "
                                  f"{what} among {shown}; list the agent accounts{author}", field="agent_accounts")
    names_of = {f: names[i] for f, i in found.items()}
    return ReplyPlan({f: i for f, i in found.items()}, names_of, side)


def csv_plan(source: TextSource, options: ImportOptions) -> tuple[ReplyPlan, str]:
    """(plan, delimiter) from the CSV header at the start of the text, without consuming it."""
    sample = as_stream(source).peek(65536).lstrip("\n")
    if not sample.strip():
        raise ImportFileError("the CSV file has no header row")
    delimiter = sniff_delimiter(sample)
    try:
        header = next(csv.reader(io.StringIO(sample), delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        raise ImportFileError(f"cannot read the CSV header: {exc}") from None
    return plan_fields(header, options), delimiter


def norm_id(value: object) -> str | None:
    """An id cell or value -> its text, None when empty; '119237.0' -> '119237'."""
    text = id_of(value)
    if text is None:
        return None
    m = _FLOAT_ID.match(text)
    if m:
        return m.group(1)
    return None if text.lower() in ("nan", "null", "none") else text


def strip_mentions(text: str) -> str:
    """'@AppleSupport @115712 my phone...' -> 'my phone...': the addressing every social reply starts with."""
    return _MENTIONS.sub("", text, count=1)


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    return True if text in _TRUE else False if text in _FALSE else None


def side_of(plan: ReplyPlan, get, options: ImportOptions, speakers: dict[str, str],
            accounts: set[str]) -> tuple[str | None, str]:
    """(role, problem) of one row, `get(field)` reading its cells."""
    if plan.side == "accounts":
        author = str(get("author") or "").strip().lstrip("@").casefold()
        return ("assistant" if author in accounts else "user"), ""
    if plan.side in ("inbound", "outbound"):
        value = get(plan.side)
        flag = _flag(value)
        if flag is None:
            return None, f"the {plan.names[plan.side]!r} value {value!r} is not true or false"
        customer = flag if plan.side == "inbound" else not flag
        return ("user" if customer else "assistant"), ""
    name = get("speaker")
    role = role_of(name, speakers)
    if role is None:
        return None, (f"speaker {name!r} (column {plan.names['speaker']!r}) is not one of system/user/assistant "
                      f"(add it to the role map, e.g. {name}=assistant)")
    return role, ""


def _csv_rows(stream, options: ImportOptions) -> tuple[ReplyPlan, Iterator]:
    plan, delimiter = csv_plan(stream, options)

    def rows():
        for item in csv_rows(stream, _Delim(delimiter)):
            if isinstance(item, Reject):
                yield item
                continue
            first, last, row = item
            yield first, last, (lambda f, row=row: row[plan.fields[f]] if plan.fields[f] < len(row) else "")
    return plan, rows()


@dataclass(frozen=True)
class _Delim:
    """What csv_._rows needs of a plan: the delimiter."""

    delimiter: str


_NUMBER = re.compile(r"(\d+)")


def _json_rows(stream, options: ImportOptions) -> tuple[ReplyPlan | None, Iterator]:
    records = iter_json_records(stream)
    head: list = []
    plan = problem = None
    for rec in records:  # the first object decides the keys; what comes before it is rejected anyway
        head.append(rec)
        if isinstance(rec, tuple) and isinstance(rec[1], dict):
            try:
                plan = plan_fields(list(rec[1]), options, what="key")
            except ImportFileError as exc:
                if exc.field == "agent_accounts":  # the keys fit and only the side is unknown: a file-level fix
                    raise
                problem = (rec[0], str(exc))
            break

    def rows():
        if problem:  # a record of another shape: a JSON format yields items for any shape (the probe words it)
            yield Reject(*problem)
            return
        for rec in [*head, *records]:
            if isinstance(rec, Reject):
                yield rec
                continue
            location, obj = rec
            if not isinstance(obj, dict):
                yield Reject(location, f"expected a message as a JSON object, got {json_type(obj)}")
                continue
            n = int(_NUMBER.search(location).group(1))
            yield n, n, (lambda f, obj=obj: obj.get(plan.names[f]))
    return plan, rows()


def _is_json_text(head: str) -> bool:
    """JSON records rather than a CSV header: the text starts with '{' or '[', or its first line is a JSON value
    (a one-column "header" cannot hold an id, a reply-to and a text anyway)."""
    if head[:1] in ("{", "["):
        return True
    try:
        json.loads(head.split("\n", 1)[0])
        return True
    except ValueError:
        return False


def parse_replies(source: TextSource, options: ImportOptions | None = None) -> Iterator[Record | Reject]:
    """Records (or Rejects) from reply-linked messages in CSV or JSON; ImportFileError when a CSV header does not fit."""
    options = options or ImportOptions()
    stream = as_stream(source)
    head = stream.peek(65536).lstrip()
    if not head:
        return
    start = head[:1]
    plan, rows = _json_rows(stream, options) if _is_json_text(head) else _csv_rows(stream, options)
    unit = "line"
    if start == "[":
        unit = "record"
    speakers = speaker_table(CSV_SPEAKERS, options.role_map)
    accounts = {a.strip().lstrip("@").casefold() for a in options.agent_accounts}
    parent_of: dict[str, str] = {}  # id -> the id it replies to ("" for a thread's start); the only memory kept
    answered: set[str] = set()
    with ScratchIndex(4) as messages:  # id -> (first line, last line, role, text)
        batch, chars = [], 0
        for item in rows:
            if isinstance(item, Reject):
                yield item
                continue
            first, last, get = item
            at = f"{unit} {first}"
            own = norm_id(get("id"))
            if own is None:
                yield Reject(at, f"the message id ({plan.names['id']!r}) is empty")
                continue
            if own in parent_of:
                yield Reject(at, f"message id {own!r} ({plan.names['id']!r}) appears a second time; this row is skipped")
                continue
            role, problem = side_of(plan, get, options, speakers, accounts)
            if role is None:
                yield Reject(at, problem)
                continue
            text = get("text")
            text = strip_mentions(text) if isinstance(text, str) else "" if text is None else str(text)
            parent = norm_id(get("reply_to")) or ""
            parent_of[own] = parent  # its own id makes a loop of one, rejected as a loop
            answered.add(parent)
            batch.append((own, first, last, role, text))
            chars += len(text)
            if len(batch) >= _BATCH or chars >= _BATCH_CHARS:
                messages.add(batch)
                batch, chars = [], 0
        messages.add(batch)
        yield from _threads(parent_of, answered, messages, options, unit)


def _threads(parent_of: dict[str, str], answered: set[str], messages: ScratchIndex, options: ImportOptions,
             unit: str) -> Iterator[Record | Reject]:
    """Every chain from a thread's start to an unanswered message -> a Record; orphans and loops -> Rejects."""
    keep_orphans = options.reply_orphans == "start"
    reached: set[str] = set()
    orphans: dict[str, set[int]] = {}  # an orphan reply -> the lines of its thread (rejected once, at the end)
    loops: list[Reject] = []

    def line(mid: str) -> int:
        return messages.get(mid)[0]

    with ScratchSort(3) as order:  # (first line of the thread's start, line of its last message, last id)
        batch = []
        for leaf in parent_of:
            if leaf in answered:
                continue
            path, stop = _walk(leaf, parent_of, keep_orphans)
            reached.update(path)
            if stop == "loop":
                loop = _loop_from(path[-1], parent_of)
                reached.update(loop)
                loops.append(Reject(_where(path, messages, unit),
                                    f"{unit} {line(leaf)}: its reply chain loops ({_loop_text(loop, messages, unit)}), "
                                    "so it has no start"))
                continue
            if stop == "orphan":
                orphans.setdefault(path[-1], set()).update(line(m) for m in path)
                continue
            batch.append((line(path[-1]), line(leaf), leaf))
        order.add(batch)
        for _root_line, _leaf_line, leaf in order.ordered((0, 1)):
            path, _stop = _walk(leaf, parent_of, keep_orphans)
            yield _record(list(reversed(path)), messages, unit)
    for start, lines in orphans.items():
        shown = line_ranges([(n, n) for n in lines]).replace("line", unit)
        yield Reject(shown, f"{unit} {line(start)} replies to message {parent_of[start]!r}, which is not in the file: "
                            f"its thread ({len(lines)} message{'s' if len(lines) != 1 else ''}) was not imported "
                            "(let orphan replies start a conversation to import it from there)")
    yield from loops
    for mid in parent_of:  # whatever no unanswered message leads to sits on a loop
        if mid not in reached:
            loop = _loop_from(mid, parent_of)
            reached.update(loop)
            yield Reject(_where(loop, messages, unit),
                         f"these messages reply to each other in a loop ({_loop_text(loop, messages, unit)})")


def _walk(leaf: str, parent_of: dict[str, str], keep_orphans: bool) -> tuple[list[str], str]:
    """The ids from `leaf` up to its thread's start, and how the walk ended: "start", "orphan" or "loop"."""
    path, seen = [leaf], {leaf}
    while True:
        parent = parent_of[path[-1]]
        if not parent:
            return path, "start"
        if parent not in parent_of:
            return path, "start" if keep_orphans else "orphan"
        if parent in seen:
            return path, "loop"
        path.append(parent)
        seen.add(parent)


def _loop_from(mid: str, parent_of: dict[str, str]) -> list[str]:
    """The ids of the loop that following replies up from `mid` runs into, in reply order."""
    seen: dict[str, int] = {}
    chain = []
    while mid not in seen:
        seen[mid] = len(chain)
        chain.append(mid)
        mid = parent_of.get(mid, "")
        if not mid or mid not in parent_of:
            return chain
    return chain[seen[mid]:]


def _where(ids: list[str], messages: ScratchIndex, unit: str) -> str:
    return line_ranges([messages.get(m)[:2] for m in ids]).replace("line", unit)


def _loop_text(loop: list[str], messages: ScratchIndex, unit: str) -> str:
    lines = [messages.get(m)[0] for m in loop]
    return f"{unit}s " + " -> ".join(str(n) for n in [*lines, lines[0]])


def _record(path: list[str], messages: ScratchIndex, unit: str) -> Record:
    """A chain of ids, start first -> a Record of its messages (empty texts skipped)."""
    turns, spans = [], []
    for mid in path:
        first, last, role, text = messages.get(mid)
        spans.append((first, last))
        if text.strip():
            turns.append({"role": role, "content": text, "_at": f"{unit} {first}"})
    location = line_ranges(spans).replace("line", unit)
    return Record(turns, location, path[-1], {"thread_start": path[0]})

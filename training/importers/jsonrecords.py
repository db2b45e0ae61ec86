"""JSON records out of a text stream, whatever the layout, streamed: JSONL, a JSON array, or objects wrapping a list.

Layouts: a first line that is a whole JSON value (or a broken first line followed by one that is)
means JSONL: one record per line, located "line N", a bad line rejected and the next read. Otherwise
the file is one or more JSON documents streamed with ijson: the items of a top-level array, or of a
top-level object's wrapper list ({"tickets": [...]}), or the object itself, located "record N". In a
document a syntax error ends the reading (nothing after it can be trusted): the records before it
are kept and one Reject says where it broke and whether the file looks truncated.
Tested in tests/test_importers_robustness.py and the per-format tests.
"""

from __future__ import annotations

import json
from typing import Iterator

import ijson

from training.importers.decode import TextSource, TextStream, as_stream
from training.importers.model import Reject

_STARTS = ("start_map", "start_array")
_ENDS = ("end_map", "end_array")
_PEEK_LIMIT = 8 * 1024 * 1024


class _Utf8Reader:
    """The bytes ijson wants, from our decoded text (whatever the file's encoding was)."""

    def __init__(self, stream: TextStream):
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        return self._stream.read(n).encode("utf-8", errors="replace")


def _first_lines(stream: TextStream, k: int) -> list[str]:
    """Up to k first non-blank complete lines, without consuming them."""
    n = 65536
    while True:
        text = stream.peek(n)
        eof = len(text) < n
        parts = text.split("\n")
        lines = [p for p in (parts if eof else parts[:-1]) if p.strip()]
        if len(lines) >= k or eof or n >= _PEEK_LIMIT:
            return lines[:k]
        n = min(n * 4, _PEEK_LIMIT)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except (ValueError, RecursionError):
        return False


def _incomplete(text: str) -> bool:
    """True when text is the start of valid JSON that was cut off, rather than invalid JSON."""
    try:
        for _ in ijson.parse(text.encode("utf-8", errors="replace")):
            pass
    except ijson.JSONError as exc:
        return "premature EOF" in str(exc)
    return False


def json_type(value: object) -> str:
    """A JSON value's kind in words, for reasons."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return "a number"


def _jsonl(stream: TextStream, wrappers: tuple[str, ...]) -> Iterator[tuple[str, object] | Reject]:
    for line_no, line in enumerate(stream, 1):
        text = line.strip()
        if not text:
            continue
        loc = f"line {line_no}"
        try:
            obj = json.loads(text)
        except RecursionError:
            yield Reject(loc, "the JSON on this line is nested too deeply to read")
            continue
        except ValueError as exc:
            if _incomplete(text):
                last = not line.endswith("\n")
                yield Reject(loc, "the line ends before its JSON record does"
                             + (" (the file looks truncated)" if last else " (the record is cut off)"))
            else:
                msg = getattr(exc, "msg", str(exc))
                col = getattr(exc, "colno", None)
                yield Reject(loc, f"this line is not valid JSON ({msg}" + (f" at column {col})" if col else ")"))
            continue
        if not isinstance(obj, dict):
            yield Reject(loc, f"expected a JSON object on this line, got {json_type(obj)}")
            continue
        wrapper = next((w for w in wrappers if isinstance(obj.get(w), list)), None) if wrappers else None
        if wrapper is None:
            yield loc, obj
        else:
            for k, item in enumerate(obj[wrapper], 1):
                yield f"{loc}, record {k}", item


def _document(stream: TextStream, wrappers: tuple[str, ...]) -> Iterator[tuple[str, object] | Reject]:
    # Nesting is tracked by depth, not by ijson's dotted prefixes: keys may be empty or hold dots.
    n = 0  # records started so far
    depth = 0
    item = None  # the record being built, and the depth it started at
    item_level = 0
    top = None  # the current top-level object, built in case it is itself the record
    top_kind = key = None
    wrapped = in_wrapper = False
    try:
        for event, value in ijson.basic_parse(_Utf8Reader(stream), use_float=True, multiple_values=True):
            opens, closes = event in _STARTS, event in _ENDS
            if item is not None:
                item.event(event, value)
                depth += opens - closes
                if depth == item_level:
                    yield f"record {n}", item.value
                    item = None
                continue
            level = depth - closes  # the nesting level this event sits at; 0 is the top
            if level == 0:
                if event == "start_array":
                    top_kind = "array"
                elif event == "start_map":
                    top, top_kind, wrapped = ijson.ObjectBuilder(), "map", False
                    top.event(event, value)
                elif event == "end_map":
                    if not wrapped:
                        n += 1
                        yield f"record {n}", top.value
                    top = top_kind = None
                elif event == "end_array":
                    top_kind = None
                else:  # a bare scalar at top level
                    n += 1
                    yield f"record {n}", value
            elif (level == 1 and top_kind == "array") or (level == 2 and in_wrapper):
                n += 1  # a record starts
                if opens:
                    item, item_level = ijson.ObjectBuilder(), level
                    item.event(event, value)
                else:
                    yield f"record {n}", value
            elif level == 1 and event == "start_array" and key in wrappers:
                wrapped = in_wrapper = True
            elif level == 1 and event == "end_array" and in_wrapper:
                in_wrapper = False
            else:
                if level == 1 and event == "map_key":
                    key = value
                top.event(event, value)
            depth += opens - closes
    except ijson.JSONError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid JSON"
        if "premature EOF" in msg:
            if item is not None or (top is not None and not wrapped):
                at = n if item is not None else n + 1
                yield Reject(f"record {at}", f"the file ends inside record {at} (truncated?); "
                                             f"the {at - 1} records before it were read")
            else:
                yield Reject("end of file", "the file ends before the JSON document is closed (truncated?); "
                                            f"the {n} records before it were read")
        else:
            where = f"record {n}" if item is not None else (f"after record {n}" if n else "start of file")
            yield Reject(where, f"invalid JSON ({msg}); the rest of the file cannot be read")


def iter_json_records(source: TextSource, wrappers: tuple[str, ...] = ()) -> Iterator[tuple[str, object] | Reject]:
    """(location, value) for every record in the text, or a Reject where the JSON is broken.

    `wrappers` are the keys whose list holds the records when a top-level object has one
    (("tickets",) for Zendesk); without them, each top-level object is a record."""
    stream = as_stream(source)
    lines = _first_lines(stream, 2)
    if not lines:
        return
    first = lines[0].lstrip()
    if first.startswith("[") or not first.startswith("{"):
        is_jsonl = not first.startswith("[")  # not JSON at all: let each line say so
    else:
        is_jsonl = _is_json(first) or (len(lines) > 1 and lines[1].lstrip().startswith("{") and _is_json(lines[1]))
    yield from (_jsonl(stream, wrappers) if is_jsonl else _document(stream, wrappers))


def sample_json(source: TextSource, max_items: int = 3, max_events: int = 100_000) -> object | None:
    """The first top-level JSON value with every list cut to its first `max_items` items (for detection).

    Reads no further than needed; a value cut off by the end of the text is returned as far as it
    got; None when the text does not start with JSON."""
    stream = as_stream(source)
    root = None
    stack: list = []
    keys: list = []
    skip = 0
    try:
        for count, (event, value) in enumerate(
                ijson.basic_parse(_Utf8Reader(stream), use_float=True, multiple_values=True)):
            if count > max_events:
                break
            if skip:
                skip += 1 if event in _STARTS else -1 if event in _ENDS else 0
                continue
            if event == "map_key":
                keys[-1] = value
                continue
            if event in _ENDS:
                stack.pop()
                keys.pop()
                if not stack:
                    return root
                continue
            new = {} if event == "start_map" else [] if event == "start_array" else value
            if not stack:
                root = new
                if event not in _STARTS:
                    return root
            elif isinstance(stack[-1], list):
                if len(stack[-1]) >= max_items:
                    if len(stack) <= 2:  # enough of the top-level list or its wrapper list
                        return root
                    skip = 1 if event in _STARTS else 0
                    continue
                stack[-1].append(new)
            else:
                stack[-1][keys[-1]] = new
            if event in _STARTS:
                stack.append(new)
                keys.append(None)
    except (ijson.JSONError, RecursionError):
        pass
    return root

"""Helpers the format parsers share: reading ids and metadata out of source records, and the guarded
record loop that turns one record's unexpected shape into a Reject instead of a crash. Pure.

Tested through the per-format tests (tests/test_importers_formats.py) and the fuzz tests.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from training.importers.jsonrecords import json_type
from training.importers.model import Record, Reject

_SCALARS = (str, int, float, bool)


def id_of(value: object) -> str | None:
    """An id as text ("123" for 123), or None for anything that is not a usable id."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)) or (isinstance(value, float) and value.is_integer()):
        text = str(int(value)) if isinstance(value, float) else str(value).strip()
        return text or None
    return None


def meta_value(value: object) -> object | None:
    """A JSON-safe metadata value: scalars and lists of scalars (tags) pass, anything else is None."""
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value):
        return value
    return None


def pick_meta(obj: dict, keys: Iterable[str]) -> dict:
    """The given keys of a source record that hold JSON-safe values, under the same names."""
    out = {}
    for key in keys:
        value = meta_value(obj.get(key))
        if value is not None and value != "" and value != []:
            out[key] = value
    return out


def require_object(location: str, value: object, what: str) -> Reject | None:
    if isinstance(value, dict):
        return None
    return Reject(location, f"expected {what} as a JSON object, got {json_type(value)}")


def convert_records(records: Iterable[tuple[str, object] | Reject],
                    convert: Callable[[str, object], Record | Reject]) -> Iterator[Record | Reject]:
    """convert() each (location, value); Rejects pass through; a record of a shape nobody expected
    (convert raising) becomes a Reject naming the problem rather than ending the import."""
    for rec in records:
        if isinstance(rec, Reject):
            yield rec
            continue
        location, value = rec
        try:
            yield convert(location, value)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            yield Reject(location, f"this record has an unexpected shape ({type(exc).__name__}: {exc})")

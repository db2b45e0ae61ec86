"""Import profiles: the ImportOptions fields that describe a file's shape, to JSON and back, and merged with
what a user gives on top. Pure; the store keeps the JSON (store/import_profiles.py).

A profile holds the format, the JSON mapping, the reply, CSV and transcript columns and labels and the
role map; never the size limits, which are the installation's settings.
Tested in tests/test_import_profiles.py.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace

from training.importers.model import ImportOptions

PROFILE_FIELDS = ("format", "role_map", "csv_columns", "transcript_labels", "transcript_separator",
                  "reply_columns", "agent_accounts", "reply_orphans", "json_map")
_NAME = re.compile(r"^[\w][\w .-]{0,63}$")


def validate_profile_name(name: str) -> str:
    """A profile name: 1-64 letters, digits, spaces, dots, dashes or underscores; ValueError otherwise."""
    name = (name or "").strip()
    if not _NAME.match(name):
        raise ValueError(f"profile name {name!r} is not allowed: use 1-64 letters, digits, spaces, '.', '-' or '_'")
    return name


def profile_of(options: ImportOptions) -> dict:
    """The shape-describing options as a JSON object, defaults left out."""
    default = ImportOptions()
    out = {}
    for name in PROFILE_FIELDS:
        value = getattr(options, name)
        if value != getattr(default, name):
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def options_from(profile: dict, base: ImportOptions | None = None) -> ImportOptions:
    """`base` with a saved profile's fields applied (unknown keys, from a newer version, are ignored)."""
    known = {f.name for f in fields(ImportOptions)} & set(PROFILE_FIELDS)
    values = {k: (tuple(v) if k == "agent_accounts" else v) for k, v in profile.items() if k in known}
    return replace(base or ImportOptions(), **values)


def layer(options: ImportOptions, given: ImportOptions) -> ImportOptions:
    """A profile's options with what the user gave now on top: maps merged key by key (the new value
    wins), other fields replaced when given (not at their default)."""
    default = ImportOptions()
    out = {}
    for name in PROFILE_FIELDS:
        mine, theirs = getattr(options, name), getattr(given, name)
        if isinstance(mine, dict):
            out[name] = {**mine, **theirs}
        elif theirs != getattr(default, name):
            out[name] = theirs
    return replace(options, **out)

"""Import profiles: options to JSON and back, layered with what a user gives now, kept in SQLite.

Run: .venv/bin/python -m pytest tests/test_import_profiles.py -q
"""

from __future__ import annotations

import pytest

from store.import_profiles import ProfileNotFound, delete_profile, get_profile, list_profiles, save_profile
from training.importers import ImportOptions
from training.importers.profiles import layer, options_from, profile_of, validate_profile_name

DIALOGS = ImportOptions(format="mapped", json_map={"turns": "dialogContent", "speaker": "keys(@)[0]"},
                        role_map={"client": "user"}, agent_accounts=("AcmeSupport",), max_messages=9)


def test_profile_keeps_the_shape_not_the_limits_and_round_trips():
    profile = profile_of(DIALOGS)
    assert profile == {"format": "mapped", "json_map": {"turns": "dialogContent", "speaker": "keys(@)[0]"},
                       "role_map": {"client": "user"}, "agent_accounts": ["AcmeSupport"]}
    back = options_from(profile, ImportOptions(max_messages=9))
    assert back == DIALOGS
    assert options_from({**profile, "from_a_newer_version": 1}) == options_from(profile)


def test_what_is_given_now_goes_on_top_of_the_profile():
    given = ImportOptions(json_map={"text": "values(@)[0]", "speaker": "keys(@)[1]"}, reply_orphans="start")
    out = layer(options_from(profile_of(DIALOGS)), given)
    assert out.json_map == {"turns": "dialogContent", "speaker": "keys(@)[1]", "text": "values(@)[0]"}
    assert (out.format, out.reply_orphans, out.agent_accounts) == ("mapped", "start", ("AcmeSupport",))


@pytest.mark.parametrize("name", ["", " ", "a/b", "x" * 65, "-lead"])
def test_bad_profile_names_are_refused(name):
    with pytest.raises(ValueError, match="profile name"):
        validate_profile_name(name)


def test_store_saves_replaces_lists_and_deletes(db):
    assert save_profile(db, "dialogs", profile_of(DIALOGS)) is True
    assert save_profile(db, "dialogs", {"format": "mapped", "json_map": {"turns": "turns"}}, note="v2") is False
    assert get_profile(db, "dialogs") == {"format": "mapped", "json_map": {"turns": "turns"}}
    assert [(p["name"], p["note"]) for p in list_profiles(db)] == [("dialogs", "v2")]
    with pytest.raises(ProfileNotFound, match="saved profiles: dialogs"):
        get_profile(db, "tweets")
    assert delete_profile(db, "dialogs") and not delete_profile(db, "dialogs")

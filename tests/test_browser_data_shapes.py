"""The Data tab in headless Chromium: a JSON export of an unknown shape is mapped, previewed, saved as a profile
and the profile reused after a reload; then a conversation is found by text and source file and removed.

    flock /tmp/tuneloop-heavy.lock nice .venv/bin/python -m pytest tests/test_browser_data_shapes.py -q

Served with fakes (no vLLM, no training) as tests/test_browser_ui.py does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from browser_support import Shots, browser, choose, open_app, scripted_app, type_custom, wait_text
from store.db import connect
from store.import_profiles import get_profile

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
MAPPING = "turns=dialogContent\nspeaker=keys(@)[0]\ntext=values(@)[0]\nappend_assistant=lastAgentTurn"


@pytest.fixture
def app(data_dir, tmp_path, monkeypatch):
    with scripted_app(tmp_path, monkeypatch) as running:
        yield running


def test_map_a_json_shape_save_it_as_a_profile_and_reuse_it(app, tmp_path):
    shots = Shots("data-json-mapping")
    export = Path(shutil.copy(FIXTURES / "dialogs_mapped.json", tmp_path / "dialogs_march.json"))
    with browser() as b:
        page = open_app(b, app["url"])
        page.locator("#data-files input[type=file]").set_input_files(str(export))
        wait_text(page, "#data-detected", "cannot be read")
        page.get_by_role("button", name="Import options").click()
        page.locator("#data-json-map textarea").fill(MAPPING)
        page.locator("#data-json-map textarea").blur()
        wait_text(page, "#data-detected", "mapped")
        assert "bridge bundle" in page.locator(".tl-convs").first.inner_text()
        shots(page, "mapping previewed")
        page.locator("#data-profile-name textarea, #data-profile-name input").first.fill("dialog export")
        page.locator("#data-profile-save").click()
        page.wait_for_timeout(1500)
        shots(page, "profile saved")
        with connect(app["settings"].db_path) as db:
            assert get_profile(db, "dialog export")["json_map"]["turns"] == "dialogContent"

        # Next month, a fresh page: the profile fills the mapping and the preview follows.
        page = open_app(b, app["url"])
        page.locator("#data-files input[type=file]").set_input_files(str(export))
        wait_text(page, "#data-detected", "cannot be read")
        page.get_by_role("button", name="Import options").click()
        choose(page, "data-profile", "dialog export")
        wait_text(page, "#data-detected", "mapped")
        assert page.locator("#data-json-map textarea").input_value() == MAPPING
        shots(page, "profile reused")
        type_custom(page, "data-dataset", "telco")
        page.locator("#data-import").click()
        wait_text(page, "#data-report", "telco@1")
        assert "3 imported" in page.locator("#data-report").inner_text()


def test_search_filter_and_remove_a_conversation(app, tmp_path):
    shots = Shots("data-browse-edit")
    files = [str(shutil.copy(FIXTURES / n, tmp_path / n)) for n in ("twitter_care.csv", "openai.jsonl")]
    with browser() as b:
        page = open_app(b, app["url"])
        page.locator("#data-files input[type=file]").set_input_files(files)
        wait_text(page, "#data-detected", "replies")
        shots(page, "reply chains previewed")
        type_custom(page, "data-dataset", "care")
        page.locator("#data-import").click()
        wait_text(page, "#data-report", "care@2")  # one version per file: care@2 holds both
        choose(page, "data-browse-version", "care@2")
        wait_text(page, "#data-browse-info", "care@2")
        choose(page, "data-browse-source", "twitter_care.csv")
        wait_text(page, "#data-browse-info", "of 7 from twitter_care.csv")
        search = page.locator("#data-browse-search textarea, #data-browse-search input").first
        search.fill("replacement ships")
        search.press("Enter")
        wait_text(page, "#data-browse-info", "1–1 of 1 containing")
        shots(page, "searched")
        label = page.locator("#data-browse").inner_text()
        conv_id = label.split("id ", 1)[1].split(" ", 1)[0]
        page.get_by_role("button", name="Remove a conversation").click()
        page.locator("#data-remove-id input").fill(conv_id)
        page.locator("#data-remove-reason textarea, #data-remove-reason input").first.fill("test conversation")
        page.locator("#data-remove").click()
        wait_text(page, "#data-remove-note", "care@3")
        wait_text(page, "#data-datasets", "removed id")
        wait_text(page, "#data-browse-info", "care@3")
        assert "from twitter_care.csv" not in page.locator("#data-browse-info").inner_text()  # the filter was reset
        shots(page, "removed")

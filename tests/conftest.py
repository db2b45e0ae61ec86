"""Shared fixtures: every test gets its own data directory; expensive things are made once per session.

Run the whole suite with `make test` (the README's command); `make test-fast` skips slow tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vllm_session import vllm_stack  # noqa: F401  (one definition, so one server for the whole session)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _shared_model_dir() -> Path:
    """The prepared default model, outside any test's temp dir so it is made once per machine."""
    from store.settings import Settings

    explicit = os.environ.get("TUNELOOP_TEST_MODEL_DIR")
    if explicit:
        return Path(explicit)
    return Settings(_env_file=None).default_model_dir


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from training.default_model import prepare_default_model

    return prepare_default_model(_shared_model_dir())


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch) -> Path:
    """Point every test at its own data directory, so none touches real data."""
    d = tmp_path / "data"
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(d))
    for var in ("TUNELOOP_BASE_MODEL", "TUNELOOP_VLLM_URL", "TUNELOOP_API_KEY", "TUNELOOP_USERS"):
        monkeypatch.delenv(var, raising=False)
    return d


@pytest.fixture
def settings(data_dir, default_model_dir, monkeypatch):
    """Settings for a test: its own data dir, the shared prepared default model as base."""
    from store.settings import Settings

    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(default_model_dir))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", "smollm2-135m-instruct")
    return Settings(_env_file=None)


@pytest.fixture
def db(data_dir):
    from store.db import open_db

    database = open_db(data_dir / "tuneloop.db")
    yield database
    database.close()
